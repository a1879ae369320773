"""Time one frame at the real BLIP-base / BLIP-large sizes (random weights: same compute as the
Salesforce checkpoints), paper vs realtime preset, for 1, 5 and 20 classes, plus what each realtime
choice saves on its own. Prints a table and the realtime/paper ratio measured in this run; writes JSON.

    .venv/bin/python benchmarks/bench_frame.py --out benchmarks/results/frame_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.pnp_ovss.model_loading import LoadedModel
from ovss_ros.engine.loading import resolve_device
from ovss_ros.engine.segmenter import Segmenter
from ovss_ros.pnp_ovss.tiny_model import build_blip

CLASSES = ["person", "car", "tree", "road", "sky", "building", "dog", "chair", "table", "floor", "wall",
           "door", "window", "bicycle", "bottle", "cup", "grass", "sign", "pole", "truck"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# One change at a time from the paper preset: what each realtime choice costs on its own.
ABLATIONS = {
    "paper": {},
    "2 rounds": dict(dropout_rounds=2),
    "attention dropout": dict(dropout_mode="attention"),
    "blur only (no CRF)": dict(postprocess="blur"),
    "blur+CRF at 320 px": dict(postprocess_max_side=320),
    "bf16 vision (auto)": dict(vision_dtype="auto"),
    "realtime": None,
}


def frame(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 5: w // 2] = (200, 40, 40)
    img[h // 2:, w // 2:] = (40, 60, 200)
    return img


def load(arch: str, device: torch.device) -> LoadedModel:
    t = time.perf_counter()
    model, processor = build_blip(CLASSES, architecture=arch, seed=0, real_vocab=True)
    model.eval().requires_grad_(False).to(device)
    print(f"[bench] built BLIP-{arch} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M params, "
          f"random weights) in {time.perf_counter() - t:.0f} s", flush=True)
    return LoadedModel(model, processor.tokenizer, CLIP_MEAN, CLIP_STD, model.config.vision_config.image_size,
                       device, f"random BLIP-{arch}")


def time_frames(segs: dict, img: np.ndarray, reps: int) -> dict:
    """Median stage timings per segmenter. Frames alternate between the segmenters so that whatever else
    loads the machine weighs on each alike (the ratio is the figure to trust on a shared machine)."""
    for seg in segs.values():
        seg.segment(img)                               # warm-up: allocator, kernels, prompt cache
    runs = {name: [] for name in segs}
    for _ in range(reps):
        for name, seg in segs.items():
            runs[name].append(seg.segment(img).timings)
    return {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}


def markdown(result: dict) -> str:
    """The README's tables from a result JSON."""
    ms = lambda v: f"{v * 1e3:,.0f}"
    lines = ["| model | classes | paper ms | realtime ms | realtime / paper |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| BLIP-{r['arch']} | {r['classes']} | {ms(r['paper']['total'])} | "
                     f"{ms(r['realtime']['total'])} | {r['realtime_over_paper']:.2f} |")
    if result["ablations"]:
        a0 = result["ablations"][0]
        lines += ["", f"One change at a time from the paper preset (BLIP-{a0['arch']}, {a0['classes']} classes), ms:", "",
                  "| change | total | vision | presence | gradcam | postprocess |", "|---|---|---|---|---|---|"]
        for a in result["ablations"]:
            lines.append(f"| {a['change']} | {ms(a['total'])} | {ms(a['vision'])} | {ms(a['class_presence'])} | "
                         f"{ms(a['gradcam'])} | {ms(a['postprocess'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["base", "large"], choices=["tiny", "base", "large"])
    ap.add_argument("--classes", nargs="+", type=int, default=[1, 5, 20])
    ap.add_argument("--size", default="640x480", help="input frame WxH")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ablate", default="base", help="architecture for the one-change-at-a-time rows ('' to skip)")
    ap.add_argument("--ablate-classes", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/frame.json"))
    ap.add_argument("--table", type=Path, help="print the markdown tables of an existing result JSON and exit")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return

    device = resolve_device(args.device)
    w, h = (int(v) for v in args.size.split("x"))
    img = frame(h, w)
    result = {
        "what": "one frame, median of --reps after one warm-up, presets interleaved frame by frame; presence by ITM with threshold 0 (all classes kept)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "frame": [w, h], "reps": args.reps,
        "rows": [], "ablations": [],
    }
    print(f"[bench] device {result['device']}, torch {torch.__version__}, {torch.get_num_threads()} threads, frame {w}x{h}")
    for arch in args.arch:
        loaded = load(arch, device)
        for n in args.classes:
            vocab = CLASSES[:n]
            segs = {}
            for preset in ("paper", "realtime"):
                segs[preset] = Segmenter(loaded, make_config(preset, presence_threshold=0.0))
                segs[preset].set_vocabulary(vocab)
            row = {"arch": arch, "classes": n, **time_frames(segs, img, args.reps),
                   "load_average_1min": os.getloadavg()[0]}
            row["realtime_over_paper"] = row["realtime"]["total"] / row["paper"]["total"]
            result["rows"].append(row)
            print(f"[bench] BLIP-{arch:5s} {n:2d} classes: paper {row['paper']['total'] * 1e3:8.0f} ms   "
                  f"realtime {row['realtime']['total'] * 1e3:7.0f} ms   realtime/paper {row['realtime_over_paper']:.3f}",
                  flush=True)
        if arch == args.ablate:
            segs = {}
            for name, change in ABLATIONS.items():
                cfg = make_config("realtime", presence_threshold=0.0) if change is None else \
                    make_config("paper", presence_threshold=0.0, **change)
                segs[name] = Segmenter(loaded, cfg)
                segs[name].set_vocabulary(CLASSES[:args.ablate_classes])
            for name, t in time_frames(segs, img, args.reps).items():
                result["ablations"].append({"arch": arch, "classes": args.ablate_classes, "change": name, **t})
                stages = "  ".join(f"{k} {v * 1e3:.0f}" for k, v in t.items() if k != "total")
                print(f"[bench]   ablation {name:20s} {t['total'] * 1e3:8.0f} ms   ({stages})", flush=True)
        del loaded
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
