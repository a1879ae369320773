"""Hand-off from subscription callbacks to the one inference thread: the newest frame per camera, and the
newest pending change of each kind (vocabulary, engine settings), which run before the next frame.

Callbacks only store (O(1)); the worker takes pending changes first, then the newest frame of every camera
that has one, as one batch (one engine pass for all cameras). A frame replaced before the worker took it is
dropped and counted, so a slow model never builds a queue: memory is bounded by one frame per camera
whatever the input rate. A change replaced before the
worker took it is superseded (only the newest matters), so a storm of vocabulary changes costs at most one
text preparation per frame and never starves the cameras."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class Frame:
    camera: str
    msg: Any
    received: float = field(default_factory=time.monotonic)   # wall time of arrival, for latency


@dataclass
class Change:
    """A change for the worker to apply between frames. `done` is set once it was applied or superseded."""
    kind: str                      # "vocabulary" or "engine"
    apply: Callable[[], Any]
    seq: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Any = None            # what apply() returned, or the exception it raised
    superseded: bool = False

    def finish(self, outcome: Any = None, superseded: bool = False) -> None:
        self.outcome, self.superseded = outcome, superseded
        self.done.set()


class LatestFrames:
    """One slot per camera and one per kind of change. put() overwrites (counting the drop); take() blocks
    for the next item: pending changes first, then the newest frame of every camera at once, so a fast
    camera cannot starve a slow one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slots: dict[str, Frame] = {}
        self._changes: dict[str, Change] = {}
        self._order: list[str] = []
        self._seq = 0
        self._closed = False
        self.received: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def put(self, frame: Frame) -> bool:
        """Store the newest frame; True if it replaced one the worker never saw."""
        with self._cond:
            cam = frame.camera
            if cam not in self.received:
                self.received[cam], self.dropped[cam] = 0, 0
                self._order.append(cam)
            self.received[cam] += 1
            replaced = cam in self._slots
            if replaced:
                self.dropped[cam] += 1
            self._slots[cam] = frame
            self._cond.notify()
            return replaced

    def put_change(self, change: Change) -> Change:
        """Queue a change; an older pending one of the same kind is superseded. Numbered in arrival order."""
        with self._cond:
            self._seq += 1
            change.seq = self._seq
            old = self._changes.pop(change.kind, None)
            self._changes[change.kind] = change
            self._cond.notify()
        if old is not None:
            old.finish(superseded=True)
        return change

    def take(self, timeout: Optional[float] = None):
        """The oldest pending change, else a batch: [the newest frame of every camera that has one] in the
        order the cameras first sent; None on timeout or after close()."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._slots or self._changes or self._closed, timeout):
                return None
            if self._closed:
                return None
            if self._changes:
                kind = min(self._changes, key=lambda k: self._changes[k].seq)
                return self._changes.pop(kind)
            batch = [self._slots.pop(cam) for cam in self._order if cam in self._slots]
            return batch

    def clear(self) -> int:
        """Forget pending frames (e.g. on deactivate); they are not counted as dropped."""
        with self._cond:
            n = len(self._slots)
            self._slots.clear()
            return n

    def pending(self) -> int:
        with self._cond:
            return len(self._slots)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            changes, self._changes = list(self._changes.values()), {}
            self._cond.notify_all()
        for change in changes:
            change.finish(superseded=True)


class Worker:
    """The one thread that runs inference and applies changes. `process(batch)` gets a list of frames (one per
    camera) and must not raise for bad input (the node turns that into a logged skip); anything it does
    raise is passed to `on_error(batch, exc)` and the loop goes on."""

    def __init__(self, frames: LatestFrames, process: Callable[[list], None],
                 on_error: Callable[[list, BaseException], None], name: str = "ovss-worker",
                 setup: Optional[Callable[[], None]] = None) -> None:
        self.frames, self._process, self._on_error, self._setup = frames, process, on_error, setup
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.busy = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if self._setup is not None:   # per-thread settings (torch's CPU thread count is one)
            self._setup()
        while True:
            item = self.frames.take()
            if item is None:
                return   # closed
            if isinstance(item, Change):
                try:
                    item.finish(item.apply())
                except Exception as exc:   # noqa: BLE001 - reported to whoever asked for the change
                    item.finish(exc)
                continue
            self.busy.set()
            try:
                self._process(item)
            except Exception as exc:   # noqa: BLE001 - the worker must outlive any single frame
                self._on_error(item, exc)
            finally:
                self.busy.clear()

    def stop(self, timeout: float = 10.0) -> bool:
        """Close the queue and wait up to `timeout` for the frame in flight; True if the thread ended."""
        self.frames.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()
