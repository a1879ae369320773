"""PGSeg's frames per second on a device (benchmarks/gpu_check.sh's PGSeg step), random weights at the released
shapes: PGSeg / GroupViT (embed 384, depths 6/3/3, 64/8 group tokens, 4096-wide NPR) in its `realtime` preset
(one pass at the native 224 px), the same at 448 px and the authors' protocol (`pgseg`: 2 windows of 448 at
640x480), against PnP-OVSS `realtime` at BLIP-base shapes, same 640x480 frame, frames taken from each engine
in turn (A B C D A B C D ...) so that drift weighs on all alike; medians per engine.

    python benchmarks/gpu_pgseg.py --device cuda --out benchmarks/results/pgseg_gpu.json

--arch tiny: the toy shapes (gpu_check.sh's SMOKE run). Needs torch, transformers and OpenCV only.
(benchmarks/bench_pgseg.py is the CPU comparison against an earlier commit.)
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ovss_ros.engine.segmenter import Segmenter  # noqa: E402
from ovss_ros.pgseg.tiny_model import build_pgseg  # noqa: E402
from ovss_ros.pnp_ovss.tiny_model import build_blip  # noqa: E402

WORDS = [f"class{chr(97 + i)}" for i in range(20)]
BLIP_ARCH = {"real": "base", "tiny": "tiny"}
TINY_BLIP = {"gradcam_layer": 1, "gradcam_head": 2, "image_size": None}    # 3 text layers, 4 heads, 96 px


def engines(device: str, arch: str, tmp: Path) -> dict:
    pg_model, tok = build_pgseg(["a photo of", *WORDS], tmp / "tok", architecture=arch)
    blip, processor = build_blip(WORDS, architecture=BLIP_ARCH[arch], real_vocab=True)
    pg = lambda **kw: Segmenter.from_pretrained(pg_model, processor=tok, device=device, **kw)  # noqa: E731
    return {"pgseg_realtime": pg(preset="realtime"), "pgseg_pgseg": pg(preset="pgseg"),
            "pgseg_realtime_448": pg(preset="realtime", image_size=448),
            "pnp_ovss_realtime": Segmenter.from_pretrained(blip, processor=processor, preset="realtime",
                                                           device=device, **(TINY_BLIP if arch == "tiny" else {}))}


def timed(seg, frame) -> float:
    if seg.device.type == "cuda":
        torch.cuda.synchronize(seg.device)
    t = time.perf_counter()
    r = seg.segment(frame)                        # numpy labels: on the host, the work is done
    assert r.labels.shape == frame.shape[:2]
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--arch", default="real", choices=sorted(BLIP_ARCH))
    ap.add_argument("--classes", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--reps", type=int, default=10, help="timed frames per engine and class count")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        segs = engines(a.device, a.arch, Path(tmp))
    res = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else a.device,
           "torch": torch.__version__, "arch": a.arch, "frame": [640, 480], "reps": a.reps, "rows": []}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for n in a.classes:
        for seg in segs.values():
            seg.set_vocabulary(WORDS[:n])
            for _ in range(a.warmup):
                timed(seg, frame)
        times = {name: [] for name in segs}
        for _ in range(a.reps):
            for name, seg in segs.items():
                times[name].append(timed(seg, frame))
        row = {"classes": n, **{name: {"median_s": statistics.median(t), "fps": 1 / statistics.median(t),
                                       "times_s": [round(x, 5) for x in t]} for name, t in times.items()}}
        row["speedup_pgseg_realtime_vs_pnp_realtime"] = row["pgseg_realtime"]["fps"] / row["pnp_ovss_realtime"]["fps"]
        res["rows"].append(row)
        a.out.write_text(json.dumps(res, indent=1) + "\n")     # a run stopped by a time limit keeps its rows
        print(f"[pgseg] {n:2d} classes: " + "  ".join(f"{k} {row[k]['fps']:.2f} fps" for k in segs), flush=True)
    print(f"[pgseg] wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
