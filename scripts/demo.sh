#!/usr/bin/env bash
# The main job on a fresh machine: set-up first (idempotent), then the real ROS 2 node (ovss-node) segments a
# short toy-world rosbag with the embedded toy BLIP (--method pgseg: the embedded toy PGSeg). Writes out/demo/:
# the segmented output bag, overlay PNGs and a GIF (left: node output, right: ground truth), summary.json; prints
# frames, mIoU vs ground truth, FPS and latency. Extra arguments go to the demo driver (--method, --frames,
# --seed, --out, --model, --preset).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1
METHOD=pnp_ovss
ARGS=("$@")
for i in "${!ARGS[@]}"; do
  case "${ARGS[$i]}" in
    --method) METHOD="${ARGS[$((i + 1))]:-}" ;;
    --method=*) METHOD="${ARGS[$i]#--method=}" ;;
  esac
done
if [ "$METHOD" = pgseg ]; then
  echo "[demo] model: ovss_ros/data/toy_pgseg, a tiny PGSeg (GroupViT + NPR) trained in this repo (toy-world mIoU"
  echo "[demo] 0.67 end to end on held-out scenes, the toy BLIP 0.88; docs/pgseg.md). It was trained on a synthetic"
else
  echo "[demo] model: ovss_ros/data/toy_blip, a tiny BLIP trained in this repo on a synthetic toy world"
fi
echo "[demo] toy world (docs/toy_world.md); it knows 12 coloured patterns, not real scenes."
exec .venv/bin/python -m ovss_ros.demo.toy_demo --out out/demo "$@"
