"""PGSeg against PnP-OVSS, same process, same 640x480 frames, random weights at the real shapes:
PGSeg / GroupViT (embed 384, depths 6/3/3, 64/8 group tokens, 4096-wide NPR) in its `realtime` preset (one
pass at the native 224 px), the same at 448 px, and its authors' protocol (`pgseg`: short side 448, 448/224
windows: 2 passes at 640x480), against PnP-OVSS `realtime` at BLIP-base shapes, at 1, 5 and 20 classes.

    .venv/bin/python benchmarks/bench_pgseg.py --out benchmarks/results/pgseg_cpu.json
    .venv/bin/python benchmarks/bench_pgseg.py --device cuda --out benchmarks/results/pgseg_gpu.json

Frames are taken in turn from each engine (A B C A B C ...), so a machine whose speed drifts weighs on all alike;
the figures are medians per engine. The goal (issue: PGSeg as a fast backend): PGSeg realtime >= 4x the frames
per second of PnP-OVSS realtime at 20 classes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ovss_ros.pgseg.tiny_model import build_pgseg  # noqa: E402
from ovss_ros.engine.segmenter import Segmenter  # noqa: E402
from ovss_ros.pnp_ovss.tiny_model import build_blip  # noqa: E402

WORDS = [f"class{chr(97 + i)}" for i in range(20)]


def engines(device: str, tmp: Path) -> dict:
    pg_model, tok = build_pgseg(["a photo of", *WORDS], tmp / "tok", architecture="real")
    blip, processor = build_blip(WORDS, architecture="base", real_vocab=True)
    out = {}
    for preset in ("realtime", "pgseg"):
        out[f"pgseg_{preset}"] = Segmenter.from_pretrained(pg_model, processor=tok, preset=preset, device=device)
    out["pgseg_realtime_448"] = Segmenter.from_pretrained(pg_model, processor=tok, preset="realtime", device=device,
                                                          image_size=448)
    out["pnp_ovss_realtime"] = Segmenter.from_pretrained(blip, processor=processor, preset="realtime",
                                                         device=device)   # as bench_hot_path runs it
    return out


def timed(seg, frame) -> float:
    t = time.perf_counter()
    r = seg.segment(frame)
    if seg.device.type == "cuda":
        torch.cuda.synchronize(seg.device)
    assert r.labels.shape == frame.shape[:2]
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--classes", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--reps", type=int, default=5, help="timed frames per engine and class count")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        segs = engines(a.device, Path(tmp))
    rows = []
    for n in a.classes:
        for seg in segs.values():
            seg.set_vocabulary(WORDS[:n])
            for _ in range(a.warmup):
                timed(seg, frame)
        times = {name: [] for name in segs}
        for _ in range(a.reps):
            for name, seg in segs.items():          # interleaved: drift weighs on every engine alike
                times[name].append(timed(seg, frame))
        row = {"classes": n, **{name: {"median_s": statistics.median(t), "fps": 1 / statistics.median(t),
                                       "times_s": [round(x, 4) for x in t]} for name, t in times.items()}}
        row["speedup_pgseg_realtime_vs_pnp_realtime"] = row["pgseg_realtime"]["fps"] / row["pnp_ovss_realtime"]["fps"]
        row["speedup_pgseg_authors_vs_pnp_realtime"] = row["pgseg_pgseg"]["fps"] / row["pnp_ovss_realtime"]["fps"]
        row["speedup_pgseg_realtime_448_vs_pnp_realtime"] = (row["pgseg_realtime_448"]["fps"]
                                                              / row["pnp_ovss_realtime"]["fps"])
        rows.append(row)
        print(f"{n:2d} classes: " + "  ".join(f"{name} {row[name]['fps']:.2f} fps" for name in segs)
              + f"  -> PGSeg realtime x{row['speedup_pgseg_realtime_vs_pnp_realtime']:.1f}", flush=True)
    res = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": a.device, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "frame": [640, 480], "reps": a.reps,
           "shapes": {"pgseg": "GroupViT/PGSeg embed 384, depths 6/3/3, group tokens 64/8, NPR 4096; realtime 224 px "
                           "(native), realtime_448 448 px, pgseg 2 windows of 448",
                      "pnp_ovss": "BLIP-base ITM (ViT-B/16 384 px, BERT-base text), realtime preset"},
           "rows": rows}
    if a.device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)
    goal = next((r for r in rows if r["classes"] == 20), None)
    if goal:
        x = goal["speedup_pgseg_realtime_vs_pnp_realtime"]
        print(f"goal check: PGSeg realtime is x{x:.1f} PnP-OVSS realtime at 20 classes (goal >= 4): "
              f"{'met' if x >= 4 else 'missed'}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
