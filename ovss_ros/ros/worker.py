"""Newest-frame-per-camera hand-off from subscription callbacks to one inference thread.

Callbacks only store the message (O(1)); the worker takes the newest frame of each camera in turn. A frame
replaced before the worker took it is dropped and counted, so a slow model never builds a queue: memory is
bounded by one frame per camera whatever the input rate."""
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


class LatestFrames:
    """One slot per camera. put() overwrites (counting the drop); take() blocks for the next frame,
    serving cameras round-robin so a fast camera cannot starve a slow one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slots: dict[str, Frame] = {}
        self._order: list[str] = []
        self._next = 0
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

    def take(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next camera's newest frame, or None on timeout or after close()."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._slots or self._closed, timeout):
                return None
            if self._closed:
                return None
            n = len(self._order)
            for k in range(n):
                cam = self._order[(self._next + k) % n]
                if cam in self._slots:
                    self._next = (self._next + k + 1) % n
                    return self._slots.pop(cam)
            return None   # unreachable: _slots is non-empty

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
            self._cond.notify_all()


class Worker:
    """The one thread that runs inference. `process(frame)` must not raise for bad input (the node turns
    that into a logged skip); anything it does raise is passed to `on_error` and the loop goes on."""

    def __init__(self, frames: LatestFrames, process: Callable[[Frame], None],
                 on_error: Callable[[Frame, BaseException], None], name: str = "ovss-worker") -> None:
        self.frames, self._process, self._on_error = frames, process, on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.busy = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self.frames.take()
            if frame is None:
                return   # closed
            self.busy.set()
            try:
                self._process(frame)
            except Exception as exc:   # noqa: BLE001 - the worker must outlive any single frame
                self._on_error(frame, exc)
            finally:
                self.busy.clear()

    def stop(self, timeout: float = 10.0) -> None:
        self.frames.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
