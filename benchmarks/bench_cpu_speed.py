"""PnP-OVSS frames per second on the CPU: this checkout against an older main (default c01bd36), one
interleaved run.

Preset `realtime`, BLIP-base shapes with random weights (linear and patch weights redrawn at fan-in scale, so
class maps differ and labels are no float near-ties), 640x480 frames, 20 classes, class presence by ITM keeping
every class (presence_threshold=0). Each version runs in its own process on the same frames; frames alternate
between the two in ABBA order so that whatever else loads the machine weighs on both alike. Reported: median
frames/s of each, the speed-up (median of the per-pair time ratios), the share of pixels whose labels agree,
and the machine's load average while it ran.

    .venv/bin/python benchmarks/bench_cpu_speed.py                   # writes benchmarks/results/cpu_speed.json
    .venv/bin/python benchmarks/bench_cpu_speed.py --reps 3 --out /tmp/x.json   # a quick look
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from side_by_side import Worker, old_checkout

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OLD_REF = "c01bd36"        # main before the CPU-speed work (issue 18)
CLASSES = ["person", "car", "tree", "road", "sky", "building", "dog", "chair", "table", "floor", "wall",
           "door", "window", "bicycle", "bottle", "cup", "grass", "sign", "pole", "truck"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def camera_frame(h: int, w: int, camera: int) -> np.ndarray:
    """A frame with texture and a few flat regions (each camera index its own)."""
    rng = np.random.default_rng(camera)
    img = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 5: w // 2] = (200, 40, 40)
    img[h // 2:, max(0, w // 2 - 40 * camera):] = (40, 60, 200)
    img[: h // 5, w // 3: 2 * w // 3] = (30, 160, 60)
    return img


# -- worker: one version of the code in its own process ------------------------------------------------
def worker(root: str, arch: str, sharpness: float, size: str, frames: int) -> None:
    sys.path.insert(0, str(Path(root).resolve()))
    import torch

    try:                                   # the layout after the engine/method split
        from ovss_ros.engine.segmenter import Segmenter
        from ovss_ros.pnp_ovss.config import make_config
        from ovss_ros.pnp_ovss.model_loading import LoadedModel
        from ovss_ros.pnp_ovss.tiny_model import build_blip
    except ImportError:                    # c01bd36: one flat package
        from ovss_ros.config import make_config
        from ovss_ros.model_loading import LoadedModel
        from ovss_ros.segmenter import Segmenter
        from ovss_ros.tiny_model import build_blip

    model, processor = build_blip(CLASSES, architecture=arch, seed=0, real_vocab=True,
                                  sharpness=sharpness if sharpness > 0 else None)
    model.eval().requires_grad_(False)
    tokenizer = getattr(processor, "tokenizer", processor)
    loaded = LoadedModel(model, tokenizer, CLIP_MEAN, CLIP_STD, model.config.vision_config.image_size,
                         torch.device("cpu"), f"random BLIP-{arch}")
    seg = Segmenter(loaded, make_config("realtime", presence_threshold=0.0))
    seg.set_vocabulary(CLASSES)
    w, h = (int(v) for v in size.split("x"))
    images = [camera_frame(h, w, c) for c in range(frames)]
    seg.segment(images[0])                  # warm-up: caches, allocator, first-call work
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            return
        t = time.perf_counter()
        res = seg.segment(images[cmd["frame"]])
        took = time.perf_counter() - t
        np.save(cmd["labels_to"], np.asarray(res.labels))
        print(json.dumps({"seconds": took, "timings": res.timings}), flush=True)


def start_worker(root: Path, args) -> Worker:
    return Worker([__file__, "--worker", str(root), "--arch", args.arch, "--sharpness", str(args.sharpness),
                   "--size", args.size, "--frames", str(args.frames)])


def measure(args) -> dict:
    old_root = args.old or old_checkout(args.old_ref, "main")
    workers = {"old": start_worker(old_root, args), "new": start_worker(args.new or ROOT, args)}
    seconds = {k: [] for k in workers}
    stages = {k: [] for k in workers}
    agree, load = [], [os.getloadavg()[0]]
    tmp = Path(tempfile.mkdtemp())
    for rep in range(args.reps):
        frame = rep % args.frames
        for k in (("old", "new") if rep % 2 == 0 else ("new", "old")):     # ABBA: neither always first
            got = workers[k](cmd="frame", frame=frame, labels_to=str(tmp / f"{k}.npy"))
            seconds[k].append(got["seconds"])
            stages[k].append(got["timings"])
        old, new = np.load(tmp / "old.npy"), np.load(tmp / "new.npy")
        agree.append(float(np.mean(old == new)))
        load.append(os.getloadavg()[0])
        print(f"[bench] rep {rep}: old {seconds['old'][-1]:.3f} s, new {seconds['new'][-1]:.3f} s, "
              f"labels agree {100 * agree[-1]:.4f} %, load {load[-1]:.2f}", flush=True)
    for w in workers.values():
        w(cmd="quit")
        w.p.wait(timeout=60)
    return {
        "old_fps": 1.0 / statistics.median(seconds["old"]),
        "new_fps": 1.0 / statistics.median(seconds["new"]),
        # per pair of neighbouring frames: robust to the machine's speed drifting during the run
        "speedup": statistics.median(o / n for o, n in zip(seconds["old"], seconds["new"])),
        "label_agreement_mean": statistics.fmean(agree),
        "label_agreement_min": min(agree),
        "old_seconds": seconds["old"], "new_seconds": seconds["new"],
        "old_stages": {s: statistics.median(t[s] for t in stages["old"]) for s in stages["old"][0]},
        "new_stages": {s: statistics.median(t[s] for t in stages["new"]) for s in stages["new"][0]},
        "load_average_1min": {"min": min(load), "median": statistics.median(load), "max": max(load),
                              "samples": load},
        "torch_threads": workers["new"].ready["threads"],
        "old": str(args.old or args.old_ref),
        "new": str(args.new or "this checkout"),
    }


def components(reps: int) -> dict:
    """The two changed pieces alone, old and new way alternating in this one process (median seconds):
    BLIP-base's ViT (random weights, 336 px, one frame) with transformers' eager attention and with SDPA, and
    the realtime blur of 21 channels at 320x240 as two conv1d passes and as two matrix products."""
    import torch
    import torch.nn.functional as F
    from transformers import BlipVisionConfig, BlipVisionModel

    sys.path.insert(0, str(ROOT))
    from ovss_ros.pnp_ovss import postprocess, vision_attention

    torch.manual_seed(0)
    vit = BlipVisionModel(BlipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, image_size=384, patch_size=16))
    vit.eval().requires_grad_(False)
    pixels = torch.randn(1, 3, 336, 336)
    maps, sigma = torch.rand(21, 240, 320), 16.0
    radius = int(4.0 * sigma + 0.5)

    def vit_with(install):
        install(vit)
        with torch.no_grad():
            return vit(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state

    def conv_blur():
        k = postprocess.gaussian_kernel(sigma, radius, maps.dtype, maps.device).view(1, 1, -1)
        c, h, w = maps.shape
        out = maps[:, postprocess._reflect_index(h, radius, "cpu")]
        out = F.conv1d(out.permute(0, 2, 1).reshape(c * w, 1, -1), k).view(c, w, h).permute(0, 2, 1)
        out = out[:, :, postprocess._reflect_index(w, radius, "cpu")]
        return F.conv1d(out.reshape(c * h, 1, -1), k).view(c, h, w)

    pieces = {"vit_base_336": (lambda: vit_with(vision_attention.use_eager), lambda: vit_with(vision_attention.use_sdpa)),
              "blur_21x240x320": (conv_blur, lambda: postprocess.gaussian_blur(maps, sigma))}
    out = {}
    for name, (old, new) in pieces.items():
        times = {"old": [], "new": []}
        diff = float((old() - new()).abs().max())        # also the warm-up
        for rep in range(reps):
            for k in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                t = time.perf_counter()
                (old if k == "old" else new)()
                times[k].append(time.perf_counter() - t)
        out[name] = {"old_s": statistics.median(times["old"]), "new_s": statistics.median(times["new"]),
                     "speedup": statistics.median(o / n for o, n in zip(times["old"], times["new"])),
                     "max_abs_diff": diff, "load_average_1min": os.getloadavg()[0]}
        print(f"[bench] {name}: old {out[name]['old_s']:.3f} s, new {out[name]['new_s']:.3f} s, "
              f"x{out[name]['speedup']:.2f}, max |diff| {diff:.1e}", flush=True)
    return out


def table(r: dict) -> str:
    return "\n".join([
        "| | main c01bd36 | this checkout |",
        "|---|---|---|",
        f"| frames/s (median) | {r['old_fps']:.3f} | {r['new_fps']:.3f} |",
        *(f"| {s} (s, median) | {r['old_stages'].get(s, 0):.3f} | {r['new_stages'].get(s, 0):.3f} |"
          for s in ("vision", "class_presence", "gradcam", "postprocess")),
        f"| speed-up (median per pair) | | x{r['speedup']:.2f} |",
        f"| labels agree (mean / worst frame) | | {100 * r['label_agreement_mean']:.4f} % / "
        f"{100 * r['label_agreement_min']:.4f} % |",
        f"| 1-min load average (min / median / max) | | {r['load_average_1min']['min']:.2f} / "
        f"{r['load_average_1min']['median']:.2f} / {r['load_average_1min']['max']:.2f} |",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--arch", default="base", choices=["tiny", "base", "large"])
    ap.add_argument("--sharpness", type=float, default=1.0,
                    help="weights at this times fan-in scale (0: transformers' init, near-tie labels)")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--frames", type=int, default=4, help="distinct frames, cycled")
    ap.add_argument("--reps", type=int, default=12, help="frames per version")
    ap.add_argument("--old", type=Path, help="checkout to compare against (default: a worktree of --old-ref)")
    ap.add_argument("--old-ref", default=OLD_REF)
    ap.add_argument("--new", type=Path, help="checkout to measure (default: this one, uncommitted edits included)")
    ap.add_argument("--component-reps", type=int, default=10, help="reps of the per-piece timing (0: skip)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cpu_speed.json")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.arch, args.sharpness, args.size, args.frames)
        return
    import torch

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    r = measure(args)
    if args.component_reps:
        r["components"] = components(args.component_reps)
    result = {
        "what": f"PnP-OVSS preset realtime, BLIP-{args.arch} shapes (random weights, {args.sharpness} x fan-in "
                f"scale), {args.size} frames ({args.frames} distinct, cycled), {len(CLASSES)} classes, presence by "
                f"ITM with threshold 0 (every class kept), numpy face, labels only; {args.reps} frames per version "
                "after a warm-up, the two versions in separate processes, interleaved frame by frame (ABBA)",
        "load_note": f"{os.cpu_count()} cores shared with other jobs: the 1-min load average was sampled after "
                     "every pair; interleaving and medians keep the comparison fair, absolute frames/s depend on it",
        "date": started,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "torch": torch.__version__,
        **r,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(r))
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
