"""Frames per second of this checkout against an older one (default: the commit before the GPU-shaped hot
path), same random-weight BLIP shapes, same 640x480 frame, frames interleaved between the two so that
whatever else loads the machine weighs on both alike. Also: whether the labels are identical, host syncs
per frame (ovss_ros.engine.profiling) before and after, and 4 cameras batched against 4 frames one by one.

    .venv/bin/python benchmarks/bench_hot_path.py --out benchmarks/results/hot_path_cpu.json
    .venv/bin/python benchmarks/bench_hot_path.py --table benchmarks/results/hot_path_cpu.json

Each version runs in its own process (benchmarks/hot_path_worker.py); the old one from a git worktree made
on demand (--old-ref) or any checkout (--old PATH). --no-old measures this checkout alone (GPU machines
without git history).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np

from side_by_side import Worker, old_checkout

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEFORE = "13b3194"     # main before the hot path was reshaped (issue: GPU-shaped hot path)


def start_worker(root: Path, arch: str, device: str, dtype: str, size: str) -> Worker:
    return Worker([HERE / "hot_path_worker.py", "--root", root, "--arch", arch, "--device", device,
                   "--dtype", dtype, "--size", size])


def median_stages(runs: list) -> dict:
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}


def fps(seconds: list) -> float:
    return 1.0 / statistics.median(seconds)


def measure(args, arch: str, old_root, save) -> list:
    workers = {"new": start_worker(ROOT, arch, args.device, args.dtype, args.size)}
    if old_root is not None:
        workers["old"] = start_worker(old_root, arch, args.device, args.dtype, args.size)
    print(f"[bench] BLIP-{arch}: {workers['new'].ready['params_m']:.0f} M params (random weights)", flush=True)
    rows, tmp = [], Path(tempfile.mkdtemp())
    for preset in args.presets:
        for n in args.classes:
            overrides = {"presence_threshold": 0.0}
            if arch == "tiny":      # 3 text layers, 4 heads, 96 px: the smoke-test shape
                overrides.update(gradcam_layer=1, gradcam_head=2, image_size=None)
            for w in workers.values():
                w(cmd="setup", preset=preset, classes=n, overrides=overrides)
            times = {k: [] for k in workers}
            stages = {k: [] for k in workers}
            order = list(workers)
            for rep in range(args.reps_paper if preset == "paper" else args.reps):
                for k in (order if rep % 2 == 0 else order[::-1]):      # ABBA: no version always goes first
                    got = workers[k](cmd="frame")
                    times[k].append(got["total"])
                    stages[k].append(got["timings"])
            row = {"arch": arch, "preset": preset, "classes": n, "dtype": args.dtype,
                   "new_fps": fps(times["new"]), "new_seconds": times["new"], "new_stages": median_stages(stages["new"]),
                   "host_syncs_new": workers["new"](cmd="syncs")["counts"],
                   "load_average_1min": os.getloadavg()[0]}
            if args.device.startswith("cuda"):
                row["peak_gpu_bytes"] = workers["new"](cmd="memory")["peak_bytes"]
            if "old" in workers:
                labels = {k: tmp / f"{k}.npy" for k in workers}
                for k, w in workers.items():
                    w(cmd="frame", labels_to=str(labels[k]))
                old_labels, new_labels = np.load(labels["old"]), np.load(labels["new"])
                row.update(old_fps=fps(times["old"]), old_seconds=times["old"],
                           old_stages=median_stages(stages["old"]),
                           # per pair of neighbouring frames: robust to the machine's speed drifting
                           speedup=statistics.median(o / n for o, n in zip(times["old"], times["new"])),
                           identical_labels=bool(np.array_equal(old_labels, new_labels)),
                           label_agreement=float(np.mean(old_labels == new_labels)),
                           host_syncs_old=workers["old"](cmd="syncs")["counts"])
            if preset == args.batch_preset and n in args.batch_classes and args.batch:
                b = [workers["new"](cmd="batch", frames=args.batch, single_first=rep % 2 == 1)
                     for rep in range(args.reps)]
                row.setdefault("batch", {}).update(
                    cameras=args.batch, batched_fps=args.batch / statistics.median(x["batched"] for x in b),
                    one_by_one_fps=args.batch / statistics.median(x["one_by_one"] for x in b),
                    ratio=statistics.median(x["one_by_one"] / x["batched"] for x in b),     # per pair
                    label_agreement=min(x["label_agreement"] for x in b))
            rows.append(row)
            save(rows)                 # a run stopped by a time limit keeps what it measured
            print("[bench] " + line(row), flush=True)
    for w in workers.values():
        w.close()
    return rows


def line(r: dict) -> str:
    s = f"BLIP-{r['arch']:5s} {r['preset']:8s} {r['dtype']:8s} {r['classes']:2d} classes: {r['new_fps']:7.2f} fps"
    if "old_fps" in r:
        s += (f" (before {r['old_fps']:6.2f}, x{r['speedup']:.2f}, labels agree on "
              f"{100 * r['label_agreement']:.4f} % of pixels)")
    s += f"  host syncs {sum(r['host_syncs_new'].values())}"
    if "host_syncs_old" in r:
        s += f" (before {sum(r['host_syncs_old'].values())})"
    if "peak_gpu_bytes" in r:
        s += f"  peak {r['peak_gpu_bytes'] / 2**30:.2f} GiB"
    if "batch" in r:
        b = r["batch"]
        s += (f"  | {b['cameras']} cameras batched {b['batched_fps']:.2f} fps vs one by one "
              f"{b['one_by_one_fps']:.2f} (x{b['ratio']:.2f}, labels agree on {100 * b['label_agreement']:.3f} % of pixels)")
    return s


def markdown(result: dict) -> str:
    lines = ["| model | preset | classes | before fps | now fps | speed-up | labels agree | host syncs before → now |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        before = f"{r['old_fps']:.2f}" if "old_fps" in r else "–"
        lines.append(f"| BLIP-{r['arch']} | {r['preset']} | {r['classes']} | {before} | {r['new_fps']:.2f} | "
                     f"{'x%.2f' % r['speedup'] if 'speedup' in r else '–'} | "
                     f"{'%.4f %%' % (100 * r['label_agreement']) if 'label_agreement' in r else '–'} | "
                     f"{sum(r.get('host_syncs_old', {}).values()) if 'host_syncs_old' in r else '–'} → "
                     f"{sum(r['host_syncs_new'].values())} |")
    batches = [r for r in result["rows"] if "batch" in r]
    if batches:
        lines += ["", "| model | cameras | batched frames/s | one by one frames/s | ratio | labels agree |",
                  "|---|---|---|---|---|---|"]
        for r in batches:
            b = r["batch"]
            lines.append(f"| BLIP-{r['arch']} ({r['preset']}, {r['classes']} classes) | {b['cameras']} | "
                         f"{b['batched_fps']:.2f} | {b['one_by_one_fps']:.2f} | x{b['ratio']:.2f} | "
                         f"{100 * b['label_agreement']:.3f} % |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["base", "large"], choices=["tiny", "base", "large"])
    ap.add_argument("--classes", nargs="+", type=int, default=[1, 5, 20])
    ap.add_argument("--presets", nargs="+", default=["realtime"])
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--reps-paper", type=int, default=3, help="frames per figure for the paper preset (CPU CRF)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=4, help="cameras in the batching figure (0: skip)")
    ap.add_argument("--batch-preset", default="realtime")
    ap.add_argument("--batch-classes", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--old", type=Path, help="checkout of the code to compare against")
    ap.add_argument("--old-ref", default=BEFORE, help="git revision for a worktree to compare against")
    ap.add_argument("--no-old", action="store_true", help="measure this checkout alone")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hot_path.json"))
    ap.add_argument("--table", type=Path, help="print the markdown tables of an existing result JSON and exit")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return
    old_root = None if args.no_old else (args.old or old_checkout(args.old_ref))
    import torch

    result = {
        "what": "one 640x480 frame per call, median of --reps after a warm-up, versions interleaved frame by "
                "frame in two processes (ABBA order); speed-up = median of the per-pair time ratios; presence by "
                "ITM with threshold 0 (all classes kept); numpy face, labels only (the default)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                   else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"),
        "torch": torch.__version__, "old": str(args.old or (None if args.no_old else args.old_ref)),
        "rows": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done: list = []

    def save(rows: list) -> None:
        args.out.write_text(json.dumps({**result, "rows": done + rows}, indent=2))

    for arch in args.arch:
        done += measure(args, arch, old_root, save)
    result["rows"] = done
    save([])
    print(markdown(result))
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
