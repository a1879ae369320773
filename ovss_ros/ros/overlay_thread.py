"""The overlay is drawn and published on its own thread, so the worker goes on to the next frame instead of
blending and encoding a picture for rviz.

Bounded like the frame hand-off: one pending overlay per camera; a newer one replaces it and the older is
counted as dropped. Publishing goes through the gate of the Publishers it is given, and each job carries the
generation it was submitted in: clear() (deactivate) moves to a new generation, so an overlay drawn from a
frame taken before a deactivate is never published after the next activate. A failing overlay is logged once
per camera and exception type."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from . import outputs
from .parts import Log, Publishers
from .stats import StageLatency


@dataclass
class OverlayJob:
    camera: str
    rgb: Any
    labels: Any
    class_names: tuple
    header: Any
    alpha: float
    received: float          # monotonic arrival of the frame, for receive_to_overlay
    generation: int = 0


class OverlayPublisher:
    def __init__(self, publishers: Publishers, latency: Optional[StageLatency] = None, log: Optional[Log] = None,
                 name: str = "ovss-overlay") -> None:
        self.publishers, self.latency, self.log = publishers, latency, log
        self._cond = threading.Condition()
        self._pending: dict = {}
        self._generation = 0
        self._closed = False
        self.busy = False
        self.dropped: dict = {}       # camera -> overlays replaced before they were drawn
        self.published: dict = {}     # camera -> overlays published
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: OverlayJob) -> bool:
        """Hand over an overlay to draw; True if it replaced one still pending (counted as dropped)."""
        with self._cond:
            if self._closed:
                return False
            job.generation = self._generation
            replaced = self._pending.pop(job.camera, None) is not None
            if replaced:
                self.dropped[job.camera] = self.dropped.get(job.camera, 0) + 1
            self._pending[job.camera] = job
            self._cond.notify()
            return replaced

    def clear(self) -> None:
        """Forget pending overlays (not counted as dropped) and any being drawn now."""
        with self._cond:
            self._pending.clear()
            self._generation += 1

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self.busy

    def _take(self):
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._closed)
            if self._closed:
                return None
            cam = next(iter(self._pending))   # oldest camera first
            self.busy = True
            return self._pending.pop(cam)

    def _run(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            try:
                self._draw_and_publish(job)
            except Exception as exc:   # noqa: BLE001 - one overlay failing must not end the thread
                if self.log is not None:
                    self.log.warn_once((job.camera, "overlay", type(exc).__name__),
                                       f"camera '{job.camera}': overlay not published: {type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self.busy = False

    def _draw_and_publish(self, job: OverlayJob) -> None:
        t0 = time.perf_counter()
        msg = outputs.overlay_image(job.rgb, job.labels, job.class_names, job.header, job.alpha)
        t1 = time.perf_counter()
        with self.publishers.gate as open_:
            pubs = self.publishers.of(job.camera)
            if not open_ or pubs is None or job.generation != self._generation:
                return
            pubs.overlay.publish(msg)
        with self._cond:
            self.published[job.camera] = self.published.get(job.camera, 0) + 1
        if self.latency is not None:
            self.latency.add({"overlay_draw": t1 - t0, "overlay_publish": time.perf_counter() - t1,
                              "receive_to_overlay": time.monotonic() - job.received})

    def stop(self, timeout: float = 1.0) -> bool:
        """End the thread; an overlay being drawn is abandoned (the gate is closed first by the node)."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()
