#!/usr/bin/env bash
# The GPU figures in one command, under 8 minutes on one H100-class GPU:
#
#     bash benchmarks/gpu_check.sh
#
# Needs this repo and a Python with a CUDA build of torch, transformers, numpy, pillow and opencv; the paper
# preset's DenseCRF also needs pydensecrf (pydensecrf2) and the node run rclpy — each part that cannot run
# says so and is skipped. Writes benchmarks/results/hot_path_gpu_{float32,bfloat16}.json (realtime and paper
# presets at BLIP-base/large shapes with random weights, 1/5/20 classes, 640x480, 4 cameras batched, peak
# GPU memory), pgseg_gpu.json (PGSeg realtime / authors' protocol at the released PGSeg shapes against PnP-OVSS
# realtime at BLIP-base, 1/5/20 classes, same frames, interleaved), node_gpu.json when rclpy imports, and
# prints the figures against the goals.
#
# SMOKE=1 runs the same steps on the CPU at the tiny shape (a check of this script, not a measurement).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=benchmarks/results
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if [[ "${SMOKE:-0}" == 1 ]]; then
    DEVICE=cpu ARCHS="tiny" REPS=2 SUFFIX=smoke RESULTS=$(mktemp -d)
else
    DEVICE=cuda ARCHS="base large" REPS=${REPS:-10} SUFFIX=gpu
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_check: torch sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1))"; exit 1; }
    "$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
fi
PRESETS="realtime"
if "$PY" -c "import pydensecrf.densecrf" 2>/dev/null; then PRESETS="realtime paper"
else echo "gpu_check: pydensecrf not importable: the paper preset (DenseCRF) is skipped"; fi
OLD="--no-old"
[[ -n "${OLD_REF:-}" ]] && OLD="--old-ref $OLD_REF"    # e.g. OLD_REF=13b3194 where git history is there

status=0
for dtype in float32 bfloat16; do
    # shellcheck disable=SC2086
    timeout 190 "$PY" benchmarks/bench_hot_path.py --device "$DEVICE" --dtype "$dtype" --arch $ARCHS \
        --presets $PRESETS --classes 1 5 20 --reps "$REPS" --reps-paper 2 --batch 4 --batch-classes 20 $OLD \
        --out "$RESULTS/hot_path_${SUFFIX}_${dtype}.json" || { echo "gpu_check: engine run ($dtype) failed"; status=1; }
done

# PGSeg against PnP-OVSS in one process (goal: PGSeg realtime >= 4x PnP-OVSS realtime at 20 classes)
PG_CLASSES="1 5 20"; [[ "${SMOKE:-0}" == 1 ]] && PG_CLASSES="1"
# shellcheck disable=SC2086
timeout 150 "$PY" benchmarks/bench_pgseg.py --device "$DEVICE" --classes $PG_CLASSES --reps "$REPS" \
    --out "$RESULTS/pgseg_${SUFFIX}.json" || { echo "gpu_check: PGSeg run failed"; status=1; }

if "$PY" -c "import rclpy" 2>/dev/null; then
    timeout 90 "$PY" benchmarks/bench_node.py --device "$DEVICE" --frames 50 --warmup 5 \
        --out "$RESULTS/node_${SUFFIX}.json" \
        || { echo "gpu_check: node run failed"; status=1; }
else
    echo "gpu_check: rclpy not importable: the node end-to-end run is skipped"
fi

"$PY" - "$RESULTS" "$SUFFIX" <<'EOF'
import json, sys
from pathlib import Path
results, suffix = Path(sys.argv[1]), sys.argv[2]
for dtype in ("float32", "bfloat16"):
    path = results / f"hot_path_{suffix}_{dtype}.json"
    if not path.exists():
        continue
    for r in json.loads(path.read_text())["rows"]:
        if r["preset"] != "realtime" or r["classes"] != 20:
            continue
        peak = r.get("peak_gpu_bytes")
        print(f"goal check BLIP-{r['arch']} {dtype}: realtime 20 classes {r['new_fps']:.1f} fps (goal >= 60 at "
              f"BLIP-large), peak {peak / 2**30 if peak else float('nan'):.2f} GiB (goal <= 6)", end="")
        if "batch" in r:
            b = r["batch"]
            print(f", 4 cameras {b['batched_fps'] / b['cameras']:.1f} fps each (goal >= 15)", end="")
        print()
EOF
echo "gpu_check: results in $RESULTS"
exit $status
