"""One engine in its own process, driven over stdin/stdout by bench_hot_path.py, so that two versions of the
code (this checkout and an older one, e.g. a git worktree) run side by side, frame for frame.

    python benchmarks/hot_path_worker.py --root PATH --arch base --device cpu --dtype float32

Commands (one JSON object per line in, one per line out):
    {"cmd": "setup", "preset": "realtime", "classes": 20, "overrides": {...}}
    {"cmd": "frame", "labels_to": "/tmp/x.npy"}     -> {"total": s, "timings": {...}}
    {"cmd": "batch", "frames": 4}                   -> {"batched": s, "one_by_one": s, "label_agreement": f}
    {"cmd": "syncs"}                                -> {"counts": {...}}   host syncs of one frame
    {"cmd": "memory"}                               -> {"peak_bytes": n}   (CUDA only)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLASSES = ["person", "car", "tree", "road", "sky", "building", "dog", "chair", "table", "floor", "wall",
           "door", "window", "bicycle", "bottle", "cup", "grass", "sign", "pole", "truck"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def camera_frame(h: int, w: int, camera: int = 0) -> np.ndarray:
    rng = np.random.default_rng(camera)
    img = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 5: w // 2] = (200, 40, 40)
    img[h // 2:, w // 2 - 40 * camera:] = (40, 60, 200)
    return img


def counter():
    """This checkout's host-sync counter, whatever version of ovss_ros is being measured."""
    spec = importlib.util.spec_from_file_location("ovss_profiling",
                                                  HERE.parent / "ovss_ros" / "engine" / "profiling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.count_host_syncs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="checkout whose ovss_ros is measured")
    ap.add_argument("--arch", default="base")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--size", default="640x480")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.root).resolve()))
    import torch

    from ovss_ros.pnp_ovss.config import make_config
    from ovss_ros.pnp_ovss.model_loading import LoadedModel
    from ovss_ros.engine.segmenter import Segmenter
    from ovss_ros.pnp_ovss.tiny_model import build_blip

    device = torch.device(args.device)
    model, processor = build_blip(CLASSES, architecture=args.arch, seed=0, real_vocab=True)
    model.eval().requires_grad_(False).to(device, getattr(torch, args.dtype))
    tokenizer = getattr(processor, "tokenizer", processor)     # the tokenizer alone without pillow/torchvision
    loaded = LoadedModel(model, tokenizer, CLIP_MEAN, CLIP_STD, model.config.vision_config.image_size,
                         device, f"random BLIP-{args.arch}")
    w, h = (int(v) for v in args.size.split("x"))
    frame = camera_frame(h, w)
    seg = None

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def reply(obj) -> None:
        print(json.dumps(obj), flush=True)

    reply({"ready": True, "params_m": sum(p.numel() for p in model.parameters()) / 1e6})
    for line in sys.stdin:
        cmd = json.loads(line)
        kind = cmd["cmd"]
        if kind == "setup":
            seg = Segmenter(loaded, make_config(cmd["preset"], **cmd.get("overrides", {})))
            seg.set_vocabulary(CLASSES[:cmd["classes"]])
            seg.segment(frame)                                    # warm-up
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            reply({"ok": True})
        elif kind == "frame":
            sync()
            t = time.perf_counter()
            res = seg.segment(frame)
            total = time.perf_counter() - t                       # the labels are on the host: work done
            if cmd.get("labels_to"):
                np.save(cmd["labels_to"], res.labels)
            reply({"total": total, "timings": res.timings})
        elif kind == "batch":
            frames = [camera_frame(h, w, c) for c in range(cmd["frames"])]
            runs = {"batched": lambda: seg.segment_batch(frames), "single": lambda: [seg.segment(f) for f in frames]}
            took, out = {}, {}
            for name in (("single", "batched") if cmd.get("single_first") else ("batched", "single")):
                sync()
                t = time.perf_counter()
                out[name] = runs[name]()
                took[name] = time.perf_counter() - t
            batched, single, t_batch, t_single = out["batched"], out["single"], took["batched"], took["single"]
            # float32 sums in another order (batched matrix shapes) may flip a pixel at an exact tie
            agree = float(np.mean([np.mean(a.labels == b.labels) for a, b in zip(batched, single)]))
            reply({"batched": t_batch, "one_by_one": t_single, "label_agreement": agree})
        elif kind == "syncs":
            with counter()() as counts:
                seg.segment(frame)
            reply({"counts": dict(counts)})
        elif kind == "memory":
            reply({"peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None})
        elif kind == "quit":
            return


if __name__ == "__main__":
    main()
