"""Progress while labelling (bags and frames done, frames per second, ETA) and the final summary, printed
and written as JSON."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from .jobs import Outcome


class Progress:
    """A tqdm bar over frames (its rate and ETA) with bags done / ok / failed after it. Frames are counted by
    the bag threads; the bar is redrawn by the main thread only."""

    def __init__(self, total_frames: int, total_bags: int, enabled: bool = True):
        self.lock = threading.Lock()
        self.frames = 0
        self.total_bags = total_bags
        self.bar = tqdm(total=total_frames, unit="frame", disable=not enabled, file=sys.stderr,
                        dynamic_ncols=True, smoothing=0.1, mininterval=0.5)

    def add_frames(self, n: int) -> None:
        with self.lock:
            self.frames += n

    def tick(self, outcomes: list[Outcome]) -> None:
        with self.lock:
            frames = self.frames
        counts = Counter(o.status for o in outcomes)
        self.bar.set_postfix_str(f"bags {len(outcomes)}/{self.total_bags} ok {counts['ok'] + counts['skipped']} "
                                 f"failed {counts['failed']}", refresh=False)
        self.bar.update(frames - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def summary(outcomes: list[Outcome], seconds: float, startup_s: float, workers: list[dict], run: dict) -> dict:
    """The run's numbers; frames per second over the labelling time (runtime start-up and model loading
    excluded, reported apart)."""
    counts = Counter(o.status for o in outcomes)
    frames = sum(o.frames for o in outcomes)
    return {
        "bags": {"total": len(outcomes), "ok": counts["ok"], "skipped_complete": counts["skipped"],
                 "failed": counts["failed"], "interrupted": counts["interrupted"],
                 "not_started": counts["not_started"]},
        "frames": frames,
        "bad_frames": sum(o.bad_frames for o in outcomes),
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 3) if seconds > 0 else 0.0,
        "startup_seconds": round(startup_s, 3),
        "workers": workers,
        "failures": [{"bag": o.name, "input": o.input, "reason": o.reason} for o in outcomes if o.status == "failed"],
        "per_bag": [o.as_dict() for o in outcomes],
        **run,
    }


def print_summary(s: dict, file=sys.stdout) -> None:
    b = s["bags"]
    print(f"ovss-label-bags: {b['ok']} bag(s) labelled, {b['skipped_complete']} already complete, {b['failed']} "
          f"failed" + (f", {b['interrupted'] + b['not_started']} not finished (interrupted)" if s.get("interrupted")
                       else "") + f"; {s['frames']} frames in {s['seconds']:.1f} s ({s['fps']:.2f} frames/s), "
          f"runtime start-up {s['startup_seconds']:.1f} s", file=file)
    for w in s["workers"]:
        if "frames" in w:
            print(f"  worker {w['index']} on {w['host']} ({w['device']}): {w['frames']} frames, "
                  f"{w['fps']:.2f} frames/s while busy", file=file)
    for f in s["failures"]:
        print(f"  FAILED {f['bag']} ({f['input']}): {f['reason']}", file=file)


def write_json(path: Path, data: dict) -> None:
    """Written whole under a temporary name, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{int(time.time())}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
