"""Calibration of `confidence` for both methods with the embedded toy models (docs/confidence.md).

Reliability tables (10 equal-width bins) and ECE through `segment(img, outputs=["confidence"])`:
- on the held-out test range (heldout scenes 0..n-1) and on the validation range (heldout --val-start...)
  where the pool weight was looked at;
- on the same scenes with Gaussian pixel noise, which makes both models weaker: a calibrated confidence must
  drop with the accuracy;
- the cost: ms per frame with and without confidence (CPU, 96 x 96 scenes and the same upscaled to 480 x 640);
- PnP-OVSS with the pool weight at 0 (evidence share alone), 0.5 (shipped) and 1 (DenseCRF marginal alone);
- PGSeg with the temperatures its config.json ships and untempered (1, 1), and, with --fit, the temperature
  fit itself on the fitting scenes (heldout --fit-start..., never the test range; --write stores the result in
  the model folder's config.json).

    .venv/bin/python benchmarks/calibration.py --n 200
    .venv/bin/python benchmarks/calibration.py --methods pgseg --fit      # keeps the file's PnP-OVSS rows
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from ovss_ros.pnp_ovss import config as engine_config
from ovss_ros.pnp_ovss import frame_batch
from ovss_ros.evaluation.calibration import (ReliabilityTable, fit_confidence_temperatures,
                                            write_confidence_temperatures)
from ovss_ros.evaluation.datasets import ToyWorld
from ovss_ros.toy_world import MODEL_DIR, PGSEG_MODEL_DIR

OUT = Path(__file__).resolve().parent / "results" / "calibration.json"


def load(method: str):
    from ovss_ros.engine.segmenter import Segmenter

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = MODEL_DIR if method == "pnp_ovss" else PGSEG_MODEL_DIR
    return Segmenter.from_pretrained(str(path), preset="tiny", device="cpu")


def noisy(rgb: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    if sigma <= 0:
        return rgb
    rng = np.random.default_rng(seed)
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def measure(seg, scenes: ToyWorld, sigma: float = 0.0) -> dict:
    seg.set_vocabulary(scenes.class_names)
    table = ReliabilityTable(10)
    t0 = time.perf_counter()
    for seed, sample in zip(scenes.items, scenes):
        res = seg.segment(noisy(sample.rgb, sigma, seed), outputs=["confidence"])
        table.add_frame(res.confidence, res.labels, sample.gt)
    out = table.to_dict()
    out["accuracy_rises"] = table.rises(min_fraction=0.01)
    out["scenes"] = len(scenes)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def cost(seg, scenes: ToyWorld, size: tuple[int, int], repeats: int = 5) -> dict:
    """Median ms per frame with labels only and with confidence too; the two are timed alternately on each
    frame, so load from other processes on a shared machine hits both alike."""
    import cv2

    seg.set_vocabulary(scenes.class_names)
    frames = [cv2.resize(s.rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for s in scenes]
    variants = {"labels": ["labels"], "labels+confidence": ["labels", "confidence"]}
    seg.segment(frames[0], outputs=["labels", "confidence"])                      # warm-up
    times: dict = {k: [] for k in variants}
    for _ in range(repeats):
        for f in frames:
            for name, outputs in variants.items():
                t0 = time.perf_counter()
                seg.segment(f, outputs=outputs)
                times[name].append(time.perf_counter() - t0)
    return {k: round(float(np.median(v)) * 1000, 2) for k, v in times.items()}


def pgseg_runs(a, test: ToyWorld, val: ToyWorld) -> dict:
    seg = load("pgseg")
    out: dict = {"preset": "tiny"}
    fit_scenes = ToyWorld(a.fit_n, start=a.fit_start)
    if a.fit:
        seg.set_vocabulary(fit_scenes.class_names)
        fit = fit_confidence_temperatures(seg, ((s.rgb, s.gt) for s in fit_scenes))
        out["fit"] = {"scenes": f"heldout {a.fit_start}..{a.fit_start + a.fit_n - 1}", "criterion": "ece",
                      **{k: (round(v, 4) if k == "ece" else v) for k, v in fit.items()}}
        print("fit", fit["temperatures"], round(fit["ece"], 4), flush=True)
        if a.write:
            write_confidence_temperatures(PGSEG_MODEL_DIR, fit["temperatures"])
            seg = load("pgseg")
    shipped = seg.confidence_temperatures
    out["confidence_temperatures"] = list(shipped)
    out["test"], out["validation"] = measure(seg, test), measure(seg, val)
    out["fitting_scenes"] = measure(seg, fit_scenes)
    out["noise"] = {str(s): measure(seg, test, s) for s in a.noise}
    out["ms_per_frame"] = {f"{h}x{w}": cost(seg, ToyWorld(10), (h, w)) for h, w in ((96, 96), (480, 640))}
    seg.confidence_temperatures = (1.0, 1.0)
    out["untempered"] = {"test": measure(seg, test), "validation_ece": measure(seg, val)["ece"],
                         "fitting_scenes_ece": measure(seg, fit_scenes)["ece"],
                         **{f"noise_{s}": measure(seg, test, s) for s in a.noise}}
    seg.confidence_temperatures = shipped
    print("pgseg", shipped, "test ECE", out["test"]["ece"], "validation ECE", out["validation"]["ece"],
          "fitting ECE", out["fitting_scenes"]["ece"], {s: v["ece"] for s, v in out["noise"].items()},
          "untempered test ECE", out["untempered"]["test"]["ece"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="held-out test scenes (heldout 0..n-1)")
    ap.add_argument("--val-start", type=int, default=5000)
    ap.add_argument("--val-n", type=int, default=40)
    ap.add_argument("--noise", type=float, nargs="*", default=[40.0, 80.0], help="pixel noise sigmas (8-bit levels)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--methods", nargs="+", default=["pnp_ovss", "pgseg"], choices=["pnp_ovss", "pgseg"],
                    help="methods to measure; the others' results are kept from --out")
    ap.add_argument("--fit", action="store_true", help="fit PGSeg's confidence temperatures first")
    ap.add_argument("--fit-start", type=int, default=5000)
    ap.add_argument("--fit-n", type=int, default=200)
    ap.add_argument("--write", action="store_true", help="store the fitted temperatures in the model's config.json")
    a = ap.parse_args()
    if a.fit_start < a.n:
        ap.error("the fitting scenes must lie outside the test range heldout 0..n-1")
    test, val = ToyWorld(a.n), ToyWorld(a.val_n, start=a.val_start)
    runs: dict = json.loads(a.out.read_text())["results"] if a.out.is_file() else {}
    for method in a.methods:
        if method == "pgseg":
            runs[method] = pgseg_runs(a, test, val)
            continue
        seg = load(method)
        r = runs[method] = {"preset": "tiny", "test": measure(seg, test), "validation": measure(seg, val)}
        r["noise"] = {str(s): measure(seg, test, s) for s in a.noise}
        r["ms_per_frame"] = {f"{h}x{w}": cost(seg, ToyWorld(10), (h, w)) for h, w in ((96, 96), (480, 640))}
        print(method, "test ECE", r["test"]["ece"], "validation ECE", r["validation"]["ece"],
              {s: v["ece"] for s, v in r["noise"].items()}, flush=True)
        if method == "pnp_ovss":
            shipped, pool = engine_config.CONFIDENCE_CRF_WEIGHT, {}
            try:
                for w in (0.0, 0.5, 1.0):
                    frame_batch.CONFIDENCE_CRF_WEIGHT = w
                    pool[str(w)] = {"test_ece": measure(seg, test)["ece"], "validation_ece": measure(seg, val)["ece"],
                                    **{f"noise_{s}_ece": measure(seg, test, s)["ece"] for s in a.noise}}
            finally:
                frame_batch.CONFIDENCE_CRF_WEIGHT = shipped
            r["crf_weight"] = {"shipped": shipped, "ece": pool}
            print("pool weights", pool, flush=True)
    out = {
        "settings": {"test_scenes": f"toy world 'pattern', heldout {0}..{a.n - 1}",
                     "validation_scenes": f"heldout {a.val_start}..{a.val_start + a.val_n - 1}",
                     "pgseg_fitting_scenes": f"heldout {a.fit_start}..{a.fit_start + a.fit_n - 1}",
                     "noise": "Gaussian, sigma in 8-bit levels, numpy default_rng(scene seed)",
                     "bins": 10, "outputs": ["confidence"], "device": "cpu",
                     "models": {"pnp_ovss": "ovss_ros/data/toy_blip", "pgseg": "ovss_ros/data/toy_pgseg"},
                     "machine": platform.processor() or platform.machine()},
        "results": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
