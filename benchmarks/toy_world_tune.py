"""Choose the "tiny" preset's values on a validation range of held-out scenes of toy world --toy-version 1
or 2 (seeds start at --start, disjoint from the scenes the figures and the quality test use), one knob at a
time from the current preset.

    .venv/bin/python benchmarks/toy_world_tune.py --n 200 --start 5000
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovss_ros.pnp_ovss.config import make_config  # noqa: E402
from ovss_ros.evaluation.datasets import ToyWorld  # noqa: E402
from ovss_ros.evaluation.runner import evaluate  # noqa: E402
from ovss_ros.pnp_ovss.model_loading import load_blip  # noqa: E402
from ovss_ros.engine.segmenter import Segmenter  # noqa: E402
from ovss_ros.toy_world import MODEL_DIR  # noqa: E402

GRID = {
    "presence_threshold": [0.3, 0.5, 0.7, 0.85, 0.95],
    "threshold": [0.02, 0.05, 0.1, 0.15, 0.3],
    "postprocess": ["none", "blur", "crf", "blur+crf"],
    "blur_sigma": [0.02, 0.035, 0.05, 0.08],
    "gradcam_layer": [0, 1, 2, "all"],
    "crf_bilateral_sxy": [15, 25, 50, 80],
    "crf_bilateral_srgb": [3, 5, 10, 20],
    "crf_bilateral_compat": [5, 10, 20],
    "crf_gaussian_compat": [3, 7, 15],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--start", type=int, default=5000)
    ap.add_argument("--model", default=str(MODEL_DIR))
    ap.add_argument("--world", default="pattern")
    ap.add_argument("--toy-version", type=int, default=1, choices=(1, 2))
    ap.add_argument("--knobs", default=",".join(GRID))
    ap.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="base overrides")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/toy_world_tune.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = ToyWorld(a.n, a.world, start=a.start, version=a.toy_version)
    from ovss_ros.engine.config import parse_overrides
    over = parse_overrides(a.set)
    seg = Segmenter(load_blip(a.model, device="cpu"), make_config("tiny", **over))
    base = make_config("tiny", **over)
    out = {"validation_seeds": f"heldout {a.start}..{a.start + a.n - 1}", "model": a.model,
           "world": a.world, "toy_version": a.toy_version,
           "base": {k: getattr(base, k) for k in GRID},
           "sweeps": {}}
    for knob in a.knobs.split(","):
        out["sweeps"][knob] = {}
        for v in GRID[knob]:
            seg.update_config(**make_config("tiny", **{**over, knob: v}).to_dict())
            res = {}
            for presence in ("gt", "itm"):
                if knob == "presence_threshold" and presence == "gt":
                    continue
                r = evaluate(seg, ds, presence=presence, progress=False, protocols=("standard",))
                res[presence] = round(r["standard"]["mIoU"], 4)
            out["sweeps"][knob][str(v)] = res
            print(f"{knob}={v}: {res}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
