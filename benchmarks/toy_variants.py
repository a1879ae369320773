"""Engine choices on the toy world, each with a bootstrap 95 % interval over scenes, and the calibration of the
baseline's confidence.

One row per variant of the "tiny" preset (one knob changed): mIoU end to end (ITM presence, standard
protocol) with its percentile bootstrap interval, and the paired bootstrap difference against the preset as
shipped (and, for dropout mode, against pixel dropout at the same rounds), computed from per-scene confusion
matrices (ovss_ros/evaluation/bootstrap.py). `dropout_rounds` is the engine's count (1 = plain GradCAM).

    .venv/bin/python benchmarks/toy_variants.py --n 200
    .venv/bin/python benchmarks/toy_variants.py --markdown      # the tables of an existing --out
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovss_ros.evaluation.bootstrap import bootstrap_miou, paired_difference  # noqa: E402
from ovss_ros.evaluation.calibration import ReliabilityTable  # noqa: E402
from ovss_ros.evaluation.datasets import ToyWorld, scored_names, to_protocol  # noqa: E402
from ovss_ros.evaluation.metrics import ConfusionMatrix, PresenceCounter, iou_of  # noqa: E402
from ovss_ros.evaluation.report import write_json  # noqa: E402
from ovss_ros.pnp_ovss.config import POSTPROCESS_MODES, make_config  # noqa: E402
from ovss_ros.toy_world import MODEL_DIR  # noqa: E402

PRESET = "tiny"
BASELINE = "baseline"


def variants() -> list[tuple[str, dict, str | None]]:
    """(name, overrides of the preset, name of a second row to compare with or None); values around the
    preset's own."""
    base = make_config(PRESET)
    out: list = [(BASELINE, {}, None)]
    for n in (1, 2, 4):
        if n != base.dropout_rounds:
            out.append((f"dropout_rounds={n}", {"dropout_rounds": n}, None))
    # the mode only acts from 2 rounds on: compare both modes at 2 rounds
    other = "attention" if base.dropout_mode == "pixel" else "pixel"
    ref = "dropout_rounds=2" if base.dropout_rounds != 2 else BASELINE
    out.append((f"dropout_rounds=2, dropout_mode={other}", {"dropout_rounds": 2, "dropout_mode": other}, ref))
    for t in (base.presence_threshold - 0.2, base.presence_threshold + 0.2):
        t = round(min(max(t, 0.05), 0.95), 2)
        out.append((f"presence_threshold={t:g}", {"presence_threshold": t}, None))
    out.append(("presence=all", {"presence": "all"}, None))
    out.append(("vision_dtype=bfloat16" if base.vision_dtype != "bfloat16" else "vision_dtype=float32",
                {"vision_dtype": "bfloat16" if base.vision_dtype != "bfloat16" else "float32"}, None))
    for mode in POSTPROCESS_MODES:
        if mode != base.postprocess:
            out.append((f"postprocess={mode}", {"postprocess": mode}, None))
    return out


def toy_scenes(n: int, world: str, version: int, start: int = 0) -> ToyWorld:
    return ToyWorld(n, world, start=start, version=version)


def run(seg, ds: ToyWorld, samples: list, calibration: ReliabilityTable | None = None) -> dict:
    """Per-scene confusion matrices [S, K, K + 1] (standard protocol), presence counts and time per image."""
    n_fg = len(ds.class_names)
    outputs = ["labels", "confidence"] if calibration is not None else ["labels"]
    cms, presence, times = [], PresenceCounter(), []
    for s in samples:
        t = time.perf_counter()
        res = seg.segment(s.rgb, outputs=outputs)
        times.append(time.perf_counter() - t)
        g, q, k, _ = to_protocol(s.gt, res.labels, n_fg, "standard", ds.background_is_class)
        cm = ConfusionMatrix(k, ignore_index=255)
        cm.update(g, q)
        cms.append(cm.hist)
        presence.update([int(c) - 1 for c in np.unique(s.gt) if 0 < c <= n_fg], np.flatnonzero(res.present))
        if calibration is not None:
            calibration.add_frame(res.confidence, res.labels, s.gt)
    return {"cms": np.stack(cms), "presence": presence.metrics(), "seconds_per_image": float(np.mean(times))}


def families(names: list[str], iou: np.ndarray) -> dict:
    """Mean IoU of the classes sharing a word at the same place of their name ("red", "triangle", ...):
    which attribute the model gets wrong. Background is left out."""
    out: dict = {}
    for name, v in zip(names, iou):
        if name == "background" or np.isnan(v):
            continue
        for word in name.split():
            out.setdefault(word, []).append(float(v))
    return {w: float(np.mean(v)) for w, v in out.items()}


def markdown(path: Path) -> str:
    d = json.loads(Path(path).read_text())
    f = lambda v: "–" if v is None else f"{v:.3f}"
    sign = lambda v: "–" if v is None else f"{v:+.4f}"
    lines = ["| variant | mIoU [95 % CI] | vs baseline [95 % CI] | CI excludes 0 | s / image |",
             "|---|---|---|---|---|"]
    ci = lambda i, g: f"{g(i['estimate'])} [{g(i['low'])}, {g(i['high'])}]"
    for r in d["rows"]:
        b = r["vs_baseline"]
        name = r["name"] + (f"; vs {r['compare_to']}: {ci(r['vs_compare'], sign)}" if r.get("compare_to") else "")
        lines.append(f"| {name} | {ci(r['mIoU'], f)} | {ci(b, sign)} | {'yes' if b['excludes_zero'] else 'no'} | "
                     f"{f(r['seconds_per_image'])} |")
    c = d["calibration"]
    table = ReliabilityTable(len(c["bins"]))
    table.count = np.array([b["pixels"] for b in c["bins"]])
    table.conf_sum = np.array([(b["mean_confidence"] or 0.0) * b["pixels"] for b in c["bins"]])
    table.right = np.array([round((b["accuracy"] or 0.0) * b["pixels"]) for b in c["bins"]])
    lines += ["", table.markdown(), "", f"ECE {c['ece']:.4f}, pixel accuracy {c['accuracy']:.4f}, "
              f"mean confidence {c['mean_confidence']:.4f} ({c['pixels']} pixels)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="held-out scenes")
    ap.add_argument("--start", type=int, default=0, help="first held-out scene")
    ap.add_argument("--world", default="pattern")
    ap.add_argument("--toy-version", type=int, default=1, choices=(1, 2))
    ap.add_argument("--model", default=str(MODEL_DIR))
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON (default benchmarks/results/toy_variants_v<version>.json)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=None, help="comma-separated row names (the baseline always runs)")
    ap.add_argument("--markdown", action="store_true", help="print the tables of an existing --out and exit")
    a = ap.parse_args(argv)
    out_path = a.out or ROOT / f"benchmarks/results/toy_variants_v{a.toy_version}.json"
    if a.markdown:
        print(markdown(out_path))
        return 0
    rows = variants()
    if a.variants:
        wanted = {v.strip() for v in a.variants.split(",")}
        unknown = wanted - {name for name, _, _ in rows}
        if unknown:
            ap.error(f"unknown variants {sorted(unknown)}; known: {[name for name, _, _ in rows]}")
        rows = [r for r in rows if r[0] == BASELINE or r[0] in wanted or any(r[0] == x[2] for x in rows
                                                                             if x[0] in wanted)]
    torch.set_num_threads(a.threads)
    ds = toy_scenes(a.n, a.world, a.toy_version, a.start)
    samples = list(ds)                                   # rendered once for every variant
    from ovss_ros.engine.segmenter import Segmenter
    seg = Segmenter.from_pretrained(a.model, preset=PRESET, device="cpu")
    seg.set_vocabulary(ds.class_names)
    names = scored_names(ds.class_names, ds.background_is_class)
    model = Path(a.model).resolve()
    out = {"what": "toy-world mIoU end to end (ITM presence, standard protocol), one row per engine choice; "
                   "percentile bootstrap over scenes, paired for the differences",
           "world": a.world, "toy_version": a.toy_version, "scenes": f"heldout {a.start}..{a.start + a.n - 1}",
           "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else a.model,
           "preset": PRESET, "baseline_config": make_config(PRESET).to_dict(), "resamples": a.resamples,
           "seed": a.seed, "threads": a.threads, "machine": platform.machine(), "rows": []}
    results, calibration, t0 = {}, ReliabilityTable(10), time.perf_counter()
    for name, over, compare in rows:
        seg.update_config(**make_config(PRESET, **over).to_dict())
        r = results[name] = run(seg, ds, samples, calibration if name == BASELINE else None)
        boot = lambda f, *cms: f(*cms, resamples=a.resamples, seed=a.seed).to_dict()
        row = {"name": name, "overrides": over, "compare_to": compare, "mIoU": boot(bootstrap_miou, r["cms"]),
               "vs_baseline": boot(paired_difference, results[BASELINE]["cms"], r["cms"]),
               "per_class_iou": dict(zip(names, iou_of(r["cms"].sum(axis=0)))),
               "families": families(names, iou_of(r["cms"].sum(axis=0))),
               "presence_precision": r["presence"]["precision"], "presence_recall": r["presence"]["recall"],
               "seconds_per_image": r["seconds_per_image"]}
        if compare:
            row["vs_compare"] = boot(paired_difference, results[compare]["cms"], r["cms"])
        out["rows"].append(row)
        m, b = row["mIoU"], row["vs_baseline"]
        print(f"{name:45s} mIoU {m['estimate']:.3f} [{m['low']:.3f}, {m['high']:.3f}]   vs baseline "
              f"{b['estimate']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}]{' *' if b['excludes_zero'] else ''}",
              flush=True)
    out["calibration"] = {"variant": BASELINE, "outputs": ["confidence"], **calibration.to_dict()}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(out, out_path)
    print(f"calibration of the baseline's confidence: ECE {out['calibration']['ece']:.4f}")
    print(f"wrote {out_path} ({out['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
