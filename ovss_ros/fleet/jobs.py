"""Bags as independent jobs: resumable, isolated, interruptible.

Each bag is written under OUT/.partial/<name> and renamed to OUT/<name> only when complete (a rename on
one filesystem is atomic), so a name under OUT is always a finished output: a rerun skips those and redoes
the rest, and an interrupted or failed bag leaves nothing under its final name. Several bags run at once,
each in a driver thread that reads its bag, sends batches of frames to the workers and writes the results
back in the bag's order (ovss_ros.ros.bag_pipeline.run_bag, as ovss-bag-segment does)."""
from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from ..ros.bag_pipeline import Interrupted, run_bag
from .inputs import BagInput

PARTIAL = ".partial"


@dataclass
class Outcome:
    name: str
    input: str
    status: str                 # ok, skipped (already complete), failed, interrupted, not_started
    frames: int = 0             # frames segmented and written
    bad_frames: int = 0         # frames skipped as unusable (as ovss-bag-segment skips them)
    seconds: float = 0.0
    reason: str = ""
    output: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def final_path(out: Path, name: str) -> Path:
    return out / name


def partial_path(out: Path, name: str) -> Path:
    return out / PARTIAL / name


def reason_of(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}" if not isinstance(exc, SystemExit) else str(exc)


def label_bag(bag: BagInput, out: Path, make_sink: Callable, topics, submit: Callable, batch_size: int,
              lookahead: int, stop: threading.Event, on_frames: Optional[Callable[[int], None]] = None,
              log=None) -> Outcome:
    """One bag, start to finish. Never raises: any error (unreadable bag, corrupt message, lost worker)
    is this bag's failure, with its reason."""
    final, partial = final_path(out, bag.name), partial_path(out, bag.name)
    outcome = Outcome(bag.name, str(bag.path), "failed", output=str(final))
    if bag.error:
        outcome.reason = bag.error
        return outcome
    if final.exists():
        outcome.status = "skipped"
        return outcome
    if stop.is_set():
        outcome.status = "not_started"
        return outcome
    shutil.rmtree(partial, ignore_errors=True)          # left by a run that was killed
    partial.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        stats = run_bag(bag.path, make_sink(partial, bag), topics, submit, batch_size, lookahead, stop,
                        on_frames, log)
        partial.rename(final)
        outcome.status, outcome.frames, outcome.bad_frames = "ok", stats.frames, stats.skipped
    except Interrupted:
        outcome.status = "interrupted"
    except (Exception, SystemExit) as exc:   # noqa: BLE001 - isolate the bag, report why
        outcome.status = "interrupted" if stop.is_set() else "failed"
        outcome.reason = reason_of(exc)
    finally:
        outcome.seconds = round(time.perf_counter() - t0, 3)
        if outcome.status != "ok":
            shutil.rmtree(partial, ignore_errors=True)
    return outcome


def label_bags(bags: list[BagInput], concurrency: int, run_one: Callable[[BagInput, threading.Event], Outcome],
               tick: Callable[[list], None], stop: Optional[threading.Event] = None) -> tuple[list[Outcome], bool]:
    """Run `run_one` over the bags, `concurrency` at a time, in driver threads; `tick(outcomes so far)` runs
    on this thread between waits (progress). Ctrl-C (KeyboardInterrupt here) sets `stop`: running bags end
    and clean up, the rest are not started. Returns the outcomes in input order, and whether interrupted."""
    stop = stop or threading.Event()
    interrupted = False
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="bag")
    futures = {pool.submit(run_one, bag, stop): i for i, bag in enumerate(bags)}
    results: dict[int, Outcome] = {}
    try:
        pending = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                results.update({futures[f]: f.result() for f in done})
                tick([results[i] for i in sorted(results)])
            except KeyboardInterrupt:
                interrupted = True
                stop.set()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    for f, i in futures.items():
        if i not in results:
            results[i] = f.result() if f.done() and not f.cancelled() else \
                Outcome(bags[i].name, str(bags[i].path), "not_started")
    return [results[i] for i in range(len(bags))], interrupted
