"""Toy-world figures for PGSeg: the models trained with and without NPR (`ovss-train-toy --method pgseg
[--no-npr]`) beside the embedded PnP-OVSS tiny BLIP and the trivial baselines, on the same held-out scenes with
the same protocol as docs/toy_world.md: mIoU with ground-truth presence (localization alone) and end to end.

The "tiny" preset's background threshold and top-k are chosen per model on validation scenes (seeds from
--val-start, disjoint from the figure scenes 0..n-1), end to end, then the figures are taken on held-out scenes.
Each model's end-to-end mIoU carries a percentile bootstrap 95 % interval over scenes, and every pair of models a
paired bootstrap interval of their difference (the same resampled scenes for both: the NPR ablation's figure).

    .venv/bin/python benchmarks/pgseg_toy_figures.py --pgseg npr=ovss_ros/data/toy_pgseg no_npr=out/toy_pgseg_no_npr \
        --out benchmarks/results/pgseg_toy_figures.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
from pathlib import Path

import torch
from toy_variants import run as per_scene  # benchmarks/ is the script's own folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovss_ros.evaluation.bootstrap import bootstrap_miou, paired_difference  # noqa: E402
from ovss_ros.evaluation.datasets import ToyWorld  # noqa: E402
from ovss_ros.evaluation.runner import baselines, evaluate  # noqa: E402
from ovss_ros.engine.segmenter import Segmenter  # noqa: E402
from ovss_ros.toy_world import MODEL_DIR  # noqa: E402

GRID = {"background_threshold": [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95], "top_k": [1, 2, 3, 4, 5, 6, 8, None]}


def score(seg, dataset, presence: str) -> dict:
    r = evaluate(seg, dataset, presence=presence, progress=False, protocols=("standard",))
    return {"mIoU": round(r["standard"]["mIoU"], 4), "pixel_accuracy": round(r["standard"]["pixel_accuracy"], 4),
            "presence": r.get("presence"), "seconds_per_image": round(r["seconds_per_image"], 4)}


def tune(seg, val) -> tuple[dict, list]:
    trials = []
    for values in itertools.product(*GRID.values()):
        change = dict(zip(GRID, values))
        seg.update_config(**change)
        trials.append({**change, "mIoU": score(seg, val, "itm")["mIoU"]})
    best = max(trials, key=lambda t: t["mIoU"])
    return {k: best[k] for k in GRID}, trials


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pgseg", nargs="+", required=True, metavar="NAME=DIR")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--val-start", type=int, default=5000)
    ap.add_argument("--val-n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-pnp", action="store_true", help="skip the PnP-OVSS tiny BLIP row")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    test, val = ToyWorld(a.n), ToyWorld(a.val_n, start=a.val_start)
    res = {"what": "toy-world mIoU (standard protocol), held-out scenes 0..n-1; tuning on validation scenes",
           "heldout_scenes": a.n, "validation": [a.val_start, a.val_start + a.val_n], "threads": a.threads,
           "machine": platform.machine(), "rows": {}, "paired": {}, "baselines": {}}
    matrices = {}
    for name, directory in (x.split("=", 1) for x in a.pgseg):
        seg = Segmenter.from_pretrained(directory, preset="tiny", device="cpu")
        seg.set_vocabulary(test.class_names)
        chosen, trials = tune(seg, val)
        seg.update_config(**chosen)
        row = {"model": directory, "method": "pgseg", "chosen_on_validation": chosen, "trials": trials,
               "gt": score(seg, test, "gt"), "end_to_end": score(seg, test, "itm")}
        matrices[name] = per_scene(seg, test, list(test))["cms"]
        row["end_to_end_interval"] = bootstrap_miou(matrices[name]).to_dict()
        training = Path(directory) / "training.json"
        if training.exists():
            t = json.loads(training.read_text())
            row["training"] = {k: t.get(k) for k in ("npr", "steps", "steps_done", "train_seconds", "seed")}
        res["rows"][name] = row
        print(f"{name}: chosen {chosen}; GT presence mIoU {row['gt']['mIoU']:.4f}, end to end "
              f"{row['end_to_end']['mIoU']:.4f}", flush=True)
    for first, second in itertools.combinations(matrices, 2):
        d = paired_difference(matrices[second], matrices[first])      # mIoU(first) - mIoU(second)
        res["paired"][f"{first} - {second}"] = d.to_dict()
        print(f"{first} - {second}: {d.estimate:+.4f} [{d.low:+.4f}, {d.high:+.4f}] (paired bootstrap, 95 %)")
    if not a.no_pnp:
        seg = Segmenter.from_pretrained(str(MODEL_DIR), preset="tiny", device="cpu")
        row = {"model": "ovss_ros/data/toy_blip", "method": "pnp_ovss", "gt": score(seg, test, "gt"),
               "end_to_end": score(seg, test, "itm")}
        res["rows"]["pnp_ovss_tiny"] = row
        print(f"pnp_ovss tiny: GT presence mIoU {row['gt']['mIoU']:.4f}, end to end {row['end_to_end']['mIoU']:.4f}")
    for name, b in baselines(test, protocols=("standard",)).items():
        res["baselines"][name] = round(b["standard"]["mIoU"], 4)
        print(f"baseline {name}: mIoU {b['standard']['mIoU']:.4f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
