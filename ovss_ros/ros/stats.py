"""Counters the node reports on /diagnostics: rates over a sliding window and mean stage latencies."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Optional


class RateMeter:
    """Events per second over the last `window` seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._t: deque = deque()
        self._lock = threading.Lock()

    def tick(self, now: Optional[float] = None) -> None:
        with self._lock:
            self._t.append(time.monotonic() if now is None else now)
            self._trim(self._t[-1])

    def _trim(self, now: float) -> None:
        while self._t and now - self._t[0] > self.window:
            self._t.popleft()

    def rate(self, now: Optional[float] = None) -> float:
        with self._lock:
            now = time.monotonic() if now is None else now
            self._trim(now)
            if len(self._t) < 2:
                return 0.0
            return (len(self._t) - 1) / max(1e-9, self._t[-1] - self._t[0])


class StageLatency:
    """Seconds per stage over its last `n` values (engine timings plus the node's own stages; the overlay
    thread's stages come at their own pace, so each stage keeps its own window): mean, median and 90th
    percentile, so a benchmark or an operator sees the spread, not only the average."""

    def __init__(self, n: int = 100) -> None:
        self.n = n
        self._stages: dict = {}
        self._lock = threading.Lock()

    def add(self, timings: dict) -> None:
        with self._lock:
            for k, v in timings.items():
                window = self._stages.get(k)
                if window is None:
                    window = self._stages[k] = deque(maxlen=self.n)
                window.append(v)

    def _per_stage(self) -> dict:
        with self._lock:
            return {k: list(v) for k, v in self._stages.items()}

    def means(self) -> dict:
        return {k: sum(v) / len(v) for k, v in self._per_stage().items()}

    def summary(self) -> dict:
        """stage -> {"mean", "p50", "p90", "n"} in seconds."""
        out = {}
        for k, v in self._per_stage().items():
            v = sorted(v)
            out[k] = {"mean": sum(v) / len(v), "p50": quantile(v, 0.5), "p90": quantile(v, 0.9), "n": len(v)}
        return out


def quantile(sorted_values: list, q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default), on an already sorted list."""
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class RecentEvents:
    """A total count, plus the events of the last `window` seconds with the last reason: what a status
    should report now (a bad frame an hour ago is not a warning now)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.total = 0
        self.last_reason = ""
        self._t: deque = deque()
        self._lock = threading.Lock()

    def add(self, reason: str = "", now: Optional[float] = None) -> None:
        with self._lock:
            now = time.monotonic() if now is None else now
            self.total += 1
            self.last_reason = reason or self.last_reason
            self._t.append(now)
            while self._t and now - self._t[0] > self.window:
                self._t.popleft()

    def recent(self, now: Optional[float] = None) -> int:
        with self._lock:
            now = time.monotonic() if now is None else now
            while self._t and now - self._t[0] > self.window:
                self._t.popleft()
            return len(self._t)


class CameraStats:
    """What happened to one camera's frames, beyond received/dropped (counted by LatestFrames)."""

    def __init__(self, window: float = 10.0) -> None:
        self.input_rate = RateMeter()
        self.output_rate = RateMeter()
        self.processed = 0
        self.stale = RecentEvents(window)      # older than max_frame_age, or stamped in the future
        self.bad = RecentEvents(window)        # malformed input, refused before the engine
        self.failed = RecentEvents(window)     # the engine raised on a well-formed frame
        self.no_vocabulary = 0
        self.published: dict = {}              # output kind -> messages published (labels, confidence, masks)
        self.last_age: float = float("nan")   # seconds from stamp to publication, last frame
        self.last_received: Optional[float] = None   # monotonic time of the last frame received
