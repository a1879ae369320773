#!/usr/bin/env bash
# Idempotent set-up of a fresh machine of this kind (Debian 12, Python 3.11, no GPU): a .venv with the
# ROS 2 Kilted wheels, torch 2.13.0 (CPU), transformers, OpenCV headless and the rest, this package in
# development mode, and the generated ovss_ros messages. Prints each step; skips what is already done.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
V="$ROOT/.venv"
PY=${PYTHON:-python3}
say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$V/bin/python" ]; then
  say "creating virtual environment $V"
  "$PY" -m venv "$V"
fi

stamp="$V/.ovss-requirements.sha"
want=$(cat "$ROOT/requirements.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing requirements.txt (ROS 2 wheels, torch==2.13.0, transformers, opencv, ...); a few minutes the first time"
  # pip warns once per package about unreachable local mirrors on these machines; keep the log readable
  "$V/bin/pip" install --disable-pip-version-check -q -r "$ROOT/requirements.txt" 2>&1 | grep -v "is ignored: it is neither" || true
  "$V/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT" \
    --config-settings editable_mode=compat 2>&1 | grep -v "is ignored: it is neither" || true
  "$V/bin/python" -c "import torch, transformers, rclpy, cv2, pydensecrf, rosbags" \
    || { say "ERROR: the install above failed"; exit 1; }
  echo "$want" > "$stamp"
else
  say "requirements already installed"
fi

# Messages: rosidl through CMake into the venv (libraries in $V/lib, which the ROS wheels' bootstrapper puts on
# LD_LIBRARY_PATH). The generated Python goes to its own folder, found through ovss_ros.__path__ (extend_path),
# so the editable source tree stays the ovss_ros that Python imports.
msg_stamp="$V/.ovss-msgs.sha"
msg_want=$(cat "$ROOT"/CMakeLists.txt "$ROOT"/package.xml "$ROOT"/msg/*.msg $(ls "$ROOT"/srv/*.srv 2>/dev/null) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$msg_stamp" 2>/dev/null)" != "$msg_want" ]; then
  say "generating ovss_ros messages with rosidl (cmake configure + build + install, ~20 s)"
  B="$ROOT/build/ovss_ros"
  rm -rf "$B" && mkdir -p "$B"
  AMENT_PREFIX_PATH="$V" cmake -S "$ROOT" -B "$B" -DCMAKE_PREFIX_PATH="$V" -DCMAKE_INSTALL_PREFIX="$V" \
    -DPython3_EXECUTABLE="$V/bin/python" -DPYTHON_INSTALL_DIR="$V/ovss_ros_msgs" -DBUILD_TESTING=OFF \
    -DOVSS_INSTALL_PYTHON=OFF > "$ROOT/build/cmake-configure.log" 2>&1 \
    || { tail -30 "$ROOT/build/cmake-configure.log"; exit 1; }
  AMENT_PREFIX_PATH="$V" cmake --build "$B" -j2 > "$ROOT/build/cmake-build.log" 2>&1 \
    || { tail -30 "$ROOT/build/cmake-build.log"; exit 1; }
  cmake --install "$B" > "$ROOT/build/cmake-install.log" 2>&1 || { tail -30 "$ROOT/build/cmake-install.log"; exit 1; }
  site=$("$V/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$V/ovss_ros_msgs" > "$site/zz_ovss_ros_msgs.pth"   # after the editable source tree
  "$V/bin/python" -c "from ovss_ros.msg import ClassInfo; ClassInfo()" \
    || { say "ERROR: generated messages do not import"; exit 1; }
  echo "$msg_want" > "$msg_stamp"
else
  say "messages already generated"
fi
say "ready: $V"
