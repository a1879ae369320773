#!/usr/bin/env bash
# The main job on a fresh machine: set-up first (idempotent), then the engine CLI on the bundled sample image.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1
MODEL=build/demo_tiny_blip
if [ ! -f "$MODEL/model.safetensors" ]; then
  .venv/bin/python -m ovss_ros.tiny_model "$MODEL" > /dev/null
fi
echo "[demo] NOTE: no real BLIP weights can be downloaded here; this runs the full PnP-OVSS pipeline on a"
echo "[demo] tiny BLIP with RANDOM weights. The output proves the pipeline runs end to end, not that it sees."
.venv/bin/ovss-segment ovss_ros/data/sample_shapes.png --classes "red circle,blue square,yellow triangle" \
  --model "$MODEL" --preset tiny --set presence=all --device cpu --out out/demo
echo "[demo] outputs in out/demo/ (overlay PNG with legend, label PNG, JSON summary)"
