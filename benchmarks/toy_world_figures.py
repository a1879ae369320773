"""Toy-world figures: mIoU of the shipped toy BLIP under the engine's presets and knobs, each with class
presence from ground truth (localization alone) and from ITM (end to end), against trivial baselines and
the patch-grid ceiling.

    .venv/bin/python benchmarks/toy_world_figures.py --n 150 --out benchmarks/results/toy_world_figures.json

"N dropout rounds" below means N Salience-Dropout passes after the first GradCAM pass, i.e. engine
dropout_rounds = N + 1 (0 rounds = no dropout). The reference's layer 7 / head 9 and 336 px input do not
exist in a 3-layer, 4-head, 96 px model, so the "paper" and "realtime" presets run with image_size=None
and the layer/head given in the row (see docs/toy_world.md).
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

from ovss_ros.pnp_ovss.config import make_config  # noqa: E402
from ovss_ros.evaluation.datasets import ToyWorld  # noqa: E402
from ovss_ros.evaluation.report import write_json  # noqa: E402
from ovss_ros.evaluation.runner import Accumulator, baselines, evaluate  # noqa: E402
from ovss_ros.pnp_ovss.model_loading import load_blip  # noqa: E402
from ovss_ros.engine.segmenter import Segmenter  # noqa: E402
from ovss_ros.toy_world import MODEL_DIR  # noqa: E402

# What the reference's knobs become on the tiny model (3 text layers: the last one gives class rows no
# gradient, so layer 1 is the deepest usable single layer; 4 heads, so "mean" stands in for head 9).
TINY_FIT = dict(image_size=None, gradcam_layer=1, gradcam_head="mean")


def rows() -> list[tuple[str, str, dict]]:
    out = []
    for preset in ("tiny", "paper", "realtime"):
        fit = {} if preset == "tiny" else TINY_FIT
        base = make_config(preset, **fit)
        for n in (0, 1, 2, 4):
            out.append((f"{preset}: {n} dropout rounds", preset, {**fit, "dropout_rounds": n + 1}))
        other = "attention" if base.dropout_mode == "pixel" else "pixel"
        out.append((f"{preset}: 2 rounds, {other} dropout", preset,
                    {**fit, "dropout_rounds": 3, "dropout_mode": other}))
        crf = "blur" if "crf" in base.postprocess else "blur+crf"
        out.append((f"{preset}: postprocess {crf}", preset, {**fit, "postprocess": crf}))
        if preset == "tiny":
            out.append((f"{preset}: postprocess none", preset, {**fit, "postprocess": "none"}))
    # the layer/head/row choices that fit the tiny model (per-class prompts, no dropout, blur)
    for layer in (0, 1, 2, "all"):
        out.append((f"tiny: first-token rows, layer {layer}, mean head", "tiny", {"gradcam_layer": layer}))
    for head in range(4):
        out.append((f"tiny: first-token rows, all layers, head {head}", "tiny", {"gradcam_head": head}))
    for layer in (0, 1, "all"):
        out.append((f"tiny: class-token rows, layer {layer}, mean head", "tiny",
                    {"gradcam_rows": "class_tokens", "gradcam_layer": layer}))
    return out


def patch_ceiling(ds: ToyWorld, grid: int) -> dict:
    """Ground truth averaged onto the model's patch grid and upsampled back: the best a patch-level map
    can do without boundary refinement."""
    import torch.nn.functional as F

    acc = Accumulator(ds.class_names, True)
    n = len(ds.class_names) + 1
    for s in ds:
        onehot = torch.nn.functional.one_hot(torch.from_numpy(s.gt.astype(np.int64)), n).permute(2, 0, 1).float()
        coarse = F.adaptive_avg_pool2d(onehot[None], grid)
        up = F.interpolate(coarse, size=s.gt.shape, mode="bilinear", align_corners=False)[0]
        acc.update(s.gt, up.argmax(0).numpy())
    return acc.results()


def brief(res: dict) -> dict:
    m = res["standard"]
    return {"mIoU": m["mIoU"], "pixel_accuracy": m["pixel_accuracy"],
            "presence_precision": res["presence"]["precision"], "presence_recall": res["presence"]["recall"],
            "per_class_iou": m["per_class_iou"], "seconds_per_image": res.get("seconds_per_image")}


def markdown(path: Path) -> str:
    """The figures JSON as the table in docs/toy_world.md."""
    d = json.loads(Path(path).read_text())
    f = lambda v: "–" if v is None else f"{v:.3f}"
    lines = ["| configuration | mIoU, GT presence | mIoU, ITM presence | presence P / R (ITM) | s / image (ITM) |",
             "|---|---|---|---|---|"]
    for r in d["rows"]:
        i = r["itm"]
        lines.append(f"| {r['name']} | {f(r['gt']['mIoU'])} | {f(i['mIoU'])} | "
                     f"{f(i['presence_precision'])} / {f(i['presence_recall'])} | {f(i['seconds_per_image'])} |")
    for k, v in d["baselines"].items():
        lines.append(f"| baseline: {k.replace('_', ' ')} | {f(v['mIoU'])} | {f(v['mIoU'])} | – | – |")
    lines.append(f"| patch-grid ceiling (GT averaged on the 12 x 12 grid) | {f(d['patch_grid_ceiling']['mIoU'])} | – | – | – |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=150, help="held-out scenes")
    ap.add_argument("--model", default=str(MODEL_DIR))
    ap.add_argument("--world", default="pattern")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="substring filter on row names")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/toy_world_figures.json")
    ap.add_argument("--markdown", action="store_true", help="print the table of an existing --out and exit")
    a = ap.parse_args(argv)
    if a.markdown:
        print(markdown(a.out))
        return 0
    torch.set_num_threads(a.threads)
    ds = ToyWorld(a.n, a.world)
    loaded = load_blip(a.model, device="cpu")
    grid = loaded.native_image_size // loaded.model.config.vision_config.patch_size
    training = json.loads((Path(a.model) / "training.json").read_text()) if (Path(a.model) / "training.json").is_file() else {}
    out = {"what": "toy-world mIoU (standard protocol; on the toy world it equals the reference protocol: "
                   "background is a class and there is no void)",
           "world": a.world, "heldout_scenes": a.n, "model": str(Path(a.model).relative_to(ROOT)) if
           Path(a.model).resolve().is_relative_to(ROOT) else a.model,
           "model_heldout_itm": training.get("heldout"), "threads": a.threads, "machine": platform.machine(),
           "baselines": {k: brief(v) for k, v in baselines(ds).items()},
           "patch_grid_ceiling": brief(patch_ceiling(ds, grid)), "rows": []}
    seg = Segmenter(loaded, make_config("tiny"))
    for name, preset, over in rows():
        if a.only and a.only not in name:
            continue
        seg.update_config(**make_config(preset, **over).to_dict())
        row = {"name": name, "preset": preset, "overrides": over}
        for presence in ("gt", "itm"):
            t = time.perf_counter()
            row[presence] = brief(evaluate(seg, ds, presence=presence, progress=False, protocols=("standard",)))
            row[presence]["wall_s"] = round(time.perf_counter() - t, 1)
        print(f"{name:55s} GT presence {row['gt']['mIoU']:.3f}   ITM presence {row['itm']['mIoU']:.3f}", flush=True)
        out["rows"].append(row)
        write_json(out, a.out)            # after every row: a partial run still leaves figures
    print("baselines: " + ", ".join(f"{k} {v['mIoU']:.3f}" for k, v in out["baselines"].items())
          + f"; patch-grid ceiling {out['patch_grid_ceiling']['mIoU']:.3f}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
