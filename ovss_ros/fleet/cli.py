"""ovss-label-bags: segment many rosbag2 bags (sqlite3, mcap) with Ray workers, into output bags or a label dataset.

    ovss-label-bags bags/*.mcap recordings/ --out labelled/ --vocabulary "person, chair, floor" --model M
    ovss-label-bags bags/ --out ds/ --kind dataset --vocabulary "road, car" --model M --address auto

Without --address a local Ray runtime starts on this machine; --address auto|HOST:PORT joins a running cluster
(`ray start --head` on one machine, `ray start --address HOST:6379` on the others). Each worker loads the
model once; batches of consecutive frames (time ranges) of every bag spread over all workers, several bags
at once; this process reads the bags and writes each output in the bag's order, identical to
ovss-bag-segment's. OUT/<bag> appears only when that bag is complete: a rerun skips complete bags and redoes
the rest; a bag that cannot be read fails alone, with its reason in the report (OUT/fleet_report.json)."""
from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
import time
from pathlib import Path

from ..ros.bag_io import detect_storage
from ..ros.bag_pipeline import OutputBagSink, frame_count
from ..ros.bag_segment import add_segmentation_args
from ..ros.vocabulary import VocabularyTextError, parse_vocabulary_text
from .actors import KINDS, JobSpec
from .dataset import DatasetSink, write_manifest
from .inputs import duplicate_names, find_bags
from .jobs import PARTIAL, label_bag, label_bags, reason_of
from .report import Progress, print_summary, summary, write_json

JOB_FILE = "fleet_job.json"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="ovss-label-bags", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="bag directories, .mcap/.db3 files, globs, or folders holding bags")
    ap.add_argument("--out", required=True, help="output folder: OUT/<bag name> per bag, and the report")
    add_segmentation_args(ap)   # --method among them (default: what the checkpoint is)
    ap.add_argument("--kind", default="bag", choices=KINDS,
                    help="bag: what ovss-bag-segment writes (original topics + segmentation/*); dataset: label "
                         "PNGs + manifest.jsonl")
    ap.add_argument("--address", help="existing Ray cluster: auto or HOST:PORT (default: a local runtime)")
    ap.add_argument("--workers", type=int, help="worker count (default: fill the cluster's GPUs, else CPUs)")
    ap.add_argument("--workers-per-gpu", type=int, default=1, help="workers sharing one GPU (default 1)")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0,
                    help="CPUs reserved per worker, also its torch threads (default 1)")
    ap.add_argument("--frames-per-batch", type=int, default=4,
                    help="consecutive frames one worker call segments (default 4)")
    ap.add_argument("--num-cpus", type=int, help="local runtime only: CPUs Ray may use (default: all)")
    ap.add_argument("--report", help="summary JSON (default OUT/fleet_report.json)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for the workers to load")
    ap.add_argument("--debug-extra-latency", type=float, default=0.0, help=argparse.SUPPRESS)   # test aid
    args = ap.parse_args(argv)
    for name in ("workers", "workers_per_gpu", "frames_per_batch", "num_cpus"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cpus_per_worker <= 0:
        ap.error("--cpus-per-worker must be positive")
    return args


def _method(args) -> str:
    """The method the job runs: given, or read from the checkpoint's config (so a rerun without --method
    matches outputs written with it); "auto" when the config cannot be read here (the workers will say why)."""
    if args.method:
        return args.method
    from ovss_ros.engine.loading import ModelLoadError
    from ovss_ros.engine.methods import detect_method

    try:
        return detect_method(args.model)
    except (ModelLoadError, OSError, ValueError):
        return "auto"


def job_record(args, vocabulary: list[str]) -> dict:
    """What makes outputs comparable: a rerun into the same OUT must use the same."""
    return {"kind": args.kind, "method": _method(args), "model": args.model, "preset": args.preset,
            "dtype": args.dtype, "overrides": list(args.overrides), "vocabulary": vocabulary,
            "topics": sorted(args.topics or []), "storage": args.storage, "bag_version": args.bag_version,
            "overlay": not args.no_overlay, "overlay_alpha": args.overlay_alpha}


def check_job(out: Path, record: dict) -> str:
    """'' when OUT is new or holds this job's outputs; otherwise what differs."""
    path = out / JOB_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        if diff:
            return f"{out} holds outputs made with other settings ({', '.join(diff)}); use another --out"
    else:
        write_json(path, record)
    return ""


def _sigterm(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _sigterm)   # SIGTERM ends a run like Ctrl-C: cleaned up
    try:
        return run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args) -> int:
    prog = "ovss-label-bags"
    from . import runtime

    try:   # before anything is read or written
        runtime.require_ray()
    except runtime.WorkerStartError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        vocabulary = parse_vocabulary_text(args.vocabulary)
    except VocabularyTextError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    bags = find_bags(args.inputs, exclude=out)
    dups = duplicate_names(bags)
    if dups:
        print(f"{prog}: bags with the same name would share an output: {dups}; pass them in separate runs",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    problem = check_job(out, job_record(args, vocabulary))
    if problem:
        print(f"{prog}: {problem}", file=sys.stderr)
        return 2
    todo_frames = 0
    for bag in bags:                       # an unreadable bag is found here and fails alone later
        if not bag.error and not (out / bag.name).exists():
            try:
                todo_frames += frame_count(bag.path, args.topics)
            except (Exception, SystemExit) as exc:   # noqa: BLE001 - reported as this bag's failure
                bag.error = reason_of(exc)

    spec = JobSpec(model=args.model, vocabulary=tuple(vocabulary), method=args.method, preset=args.preset,
                   device=args.device, dtype=args.dtype, overrides=tuple(args.overrides), kind=args.kind,
                   with_overlay=not args.no_overlay, overlay_alpha=args.overlay_alpha,
                   torch_threads=max(1, int(args.cpus_per_worker)), debug_extra_latency=args.debug_extra_latency)
    pool = None
    try:
        t0 = time.perf_counter()
        runtime_s = runtime.start_runtime(args.address, args.num_cpus)
        resources = runtime.cluster_resources()
        n, cpus_each, gpus_each = runtime.plan_workers(resources, args.device, args.workers, args.workers_per_gpu,
                                                       args.cpus_per_worker)
        pool = runtime.WorkerPool(spec, n, cpus_each, gpus_each)
        pool.wait_ready(args.start_timeout)
        startup_s = time.perf_counter() - t0
    except runtime.WorkerStartError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        _stop(pool)
        return 2
    except KeyboardInterrupt:
        _stop(pool)
        print(f"{prog}: interrupted while starting", file=sys.stderr)
        return 130

    # several bags at once, so one slow bag does not hold the rest; each keeps about two batches per worker out
    concurrency = min(max(1, len(bags)), n + 1)
    lookahead = max(1, -(-2 * n // concurrency))

    def make_sink(partial, bag):
        if args.kind == "dataset":
            return DatasetSink(partial, bag.name)
        return OutputBagSink(partial, args.storage or detect_storage(bag.path), args.bag_version, not args.no_overlay)

    progress = Progress(todo_frames, len(bags), enabled=not args.no_progress)
    log = functools.partial(print, file=sys.stderr)
    run_one = functools.partial(_run_one, out=out, make_sink=make_sink, topics=args.topics, submit=pool.submit,
                                batch_size=args.frames_per_batch, lookahead=lookahead,
                                on_frames=progress.add_frames, log=log)
    t1 = time.perf_counter()
    outcomes, interrupted = label_bags(bags, concurrency, run_one, progress.tick)
    seconds = time.perf_counter() - t1
    progress.tick(outcomes)
    progress.close()
    workers = pool.stats()
    pool.close()
    runtime.stop_runtime()
    try:
        (out / PARTIAL).rmdir()            # empty once every bag is complete or cleaned up
    except OSError:
        pass
    if args.kind == "dataset":
        write_manifest(out, [o.name for o in outcomes if o.status in ("ok", "skipped")], vocabulary)
    report = summary(outcomes, seconds, startup_s, workers, {
        "interrupted": interrupted, "runtime_start_seconds": round(runtime_s, 3), "cluster": resources,
        "address": args.address or "local", "worker_count": n, "cpus_per_worker": cpus_each,
        "gpus_per_worker": gpus_each, "frames_per_batch": args.frames_per_batch, "kind": args.kind})
    write_json(Path(args.report) if args.report else out / "fleet_report.json", report)
    print_summary(report)
    if interrupted:
        print(f"{prog}: interrupted; complete bags are kept, rerun the same command to finish", file=sys.stderr)
        return 130
    return 1 if report["failures"] else 0


def _stop(pool) -> None:
    from . import runtime

    if pool is not None:
        pool.close()
    runtime.stop_runtime()


def _run_one(bag, stop: threading.Event, **kw):
    return label_bag(bag, stop=stop, **kw)


if __name__ == "__main__":
    sys.exit(main())
