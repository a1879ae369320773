"""What the worker does with a batch of frames (the newest of each camera): age check and decode per frame, one
engine pass for all, then per frame encode and publish; the overlay goes to its own thread. Runs on the
worker thread only.

Confidence, masks and overlay cost real time (full-resolution maps from the engine, encoding, blending), so
each is computed only while its topic has a subscriber and its publish_* parameter is on; the engine is
asked only for the maps someone will receive (the union over the cameras of a batch)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

from ovss_ros.engine.image_io import ImageError
from ovss_ros.engine.vocabulary import VocabularyError

from . import outputs
from .batching import segment_each
from .image_codec import BadFrame, compressed_to_rgb, image_to_rgb
from .output_size import aspect_changes, resize_result, target_size
from .overlay_thread import OverlayJob, OverlayPublisher
from .parts import CameraOutputs, Counters, FrameEngine, OutputSizes, Publishers, Runtime
from .stats import CameraStats
from .worker import Frame

# output topic -> the engine output it needs (labels are always computed)
ENGINE_OUTPUT = {"confidence": "confidence", "masks": "class_maps"}


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def listened(publisher) -> bool:
    """Someone subscribes to this topic now (a lifecycle publisher reports its matched readers)."""
    return publisher is not None and publisher.get_subscription_count() > 0


def wanted_outputs(pubs: CameraOutputs, s: dict) -> dict:
    """Which optional outputs of one camera someone will receive: on by parameter and subscribed."""
    return {name: bool(s[f"publish_{name}"]) and listened(getattr(pubs, name))
            for name in ("confidence", "masks", "overlay")}


@dataclass
class _Ready:
    frame: Frame
    stats: CameraStats
    stamp: float
    rgb: Any
    decode: float


class FramePipeline:
    """Turns frames into outputs. It knows nothing about lifecycle or parameters: the node hands in the
    engine of this configuration, the publishers, the runtime settings, log and clock, the counters, and
    optionally the overlay thread (None: overlays drawn here) and output_size_from's sizes."""

    def __init__(self, engine: FrameEngine, publishers: Publishers, runtime: Runtime, counters: Counters,
                 overlays: Optional[OverlayPublisher] = None, sizes: Optional[OutputSizes] = None) -> None:
        self.engine = engine
        self.publishers = publishers
        self.runtime = runtime
        self.counters = counters
        self.overlays = overlays
        self.sizes = sizes
        self.engine_outputs: tuple = ()      # what the engine was asked for last (diagnostics, tests)
        self.batches = 0
        self.last_batch = 0
        self.max_batch = 0

    def _warn_once(self, key: tuple, text: str) -> None:
        self.runtime.log.warn_once(key, text)

    def _stale(self, cam: str, st: CameraStats, stamp: float, s: dict) -> bool:
        if s["max_frame_age"] <= 0 or stamp <= 0:
            return False
        age = self.runtime.now() - stamp
        if age > s["max_frame_age"]:
            reason = f"older than max_frame_age={s['max_frame_age']} s"
        elif -age > s["future_stamp_tolerance"]:
            reason = f"stamped more than future_stamp_tolerance={s['future_stamp_tolerance']} s in the future"
        else:
            return False
        st.stale.add(reason)
        self._warn_once((cam, "stale", reason), f"camera '{cam}': skipping frames {reason} (this one: "
                       f"{age:+.3f} s old by the node clock); counted as stale")
        return True

    def _bad(self, cam: str, st: CameraStats, exc: BaseException, what: str) -> None:
        st.bad.add(str(exc))
        self._warn_once((cam, "bad", str(exc)), f"camera '{cam}': skipping {what}: {exc}")

    def _prepare(self, frame: Frame, s: dict) -> Optional[_Ready]:
        """Age check and decode of one frame; None if it is skipped (counted and logged once)."""
        cam = frame.camera
        st: CameraStats = self.counters.camera(cam)
        stamp = stamp_seconds(frame.msg.header.stamp)
        if self._stale(cam, st, stamp, s):
            return None
        t0 = time.perf_counter()
        try:
            decode = compressed_to_rgb if hasattr(frame.msg, "format") else image_to_rgb
            rgb = decode(frame.msg, s["max_image_pixels"])
        except BadFrame as exc:
            self._bad(cam, st, exc, "bad frame")
            return None
        return _Ready(frame, st, stamp, rgb, time.perf_counter() - t0)

    def __call__(self, frames) -> None:
        if isinstance(frames, Frame):
            frames = [frames]
        s = self.runtime.settings.values
        taken = time.monotonic()
        ready = [r for r in (self._prepare(f, s) for f in frames) if r is not None]
        if not ready:
            return
        wanted = {r.frame.camera: self._wanted(r.frame.camera, s) for r in ready}
        with self.engine.lock:
            seg = self.engine.segmenter
            if seg is None:
                return   # deactivated while these frames waited
            if not self.engine.version:
                for r in ready:
                    r.stats.no_vocabulary += 1
                self._warn_once(("no_vocabulary",), "no vocabulary yet: frames are skipped until one arrives on "
                               "the `vocabulary` topic, parameter or `set_vocabulary` service")
                return
            version = self.engine.version
            self.engine_outputs = ("labels", *sorted({ENGINE_OUTPUT[k] for w in wanted.values()
                                                      for k, on in w.items() if on and k in ENGINE_OUTPUT}))
            t0 = time.perf_counter()
            # any failure of the batch is redone frame by frame, so it is pinned on the frame that caused it
            # scores come back as the mono8 levels published, quantised on the engine's device
            results = segment_each(outputs.mono8_engine(seg), [r.rgb for r in ready], self.engine_outputs,
                                   batch_errors=(Exception,))
            if s["debug_extra_latency"] > 0:   # test aid: a slow model, holding the engine like real work
                time.sleep(s["debug_extra_latency"])
            t_engine = time.perf_counter() - t0
        self.batches += 1
        self.last_batch = len(ready)
        self.max_batch = max(self.max_batch, len(ready))
        for r, res in zip(ready, results):
            cam = r.frame.camera
            if isinstance(res, (ImageError, VocabularyError)):
                self._bad(cam, r.stats, res, "frame the engine refused")
            elif isinstance(res, Exception):   # a well-formed frame failed: count it, keep serving
                reason = f"{type(res).__name__}: {res}"
                r.stats.failed.add(reason)
                self._warn_once((cam, "failed", reason), f"camera '{cam}': segmentation failed, frame skipped: "
                               f"{reason}")
            elif not self._publish(r, res, version, wanted[cam], s, {"engine": t_engine,
                                                                      "wait": taken - r.frame.received}):
                return   # the node is going away: abandon the batch

    def _wanted(self, cam: str, s: dict) -> dict:
        pubs = self.publishers.of(cam)
        return wanted_outputs(pubs, s) if pubs is not None else {}

    def _resized(self, cam: str, result, s: dict):
        """The result at the output size (output_size, else output_size_from's latest), or as it is."""
        size = target_size(s.get("output_size", (0, 0)), self.sizes.size(cam) if self.sizes is not None else None)
        hw = result.labels.shape
        if size is not None and aspect_changes(hw, size):
            self._warn_once((cam, "aspect", size), f"camera '{cam}': outputs resized from {hw[1]} x {hw[0]} to "
                           f"{size[0]} x {size[1]} are stretched (another aspect ratio): the target should "
                           "cover the camera's field of view, as a depth image registered to it does")
        return resize_result(result, size)

    def _publish(self, r: _Ready, result, version: int, want: dict, s: dict, times: dict) -> bool:
        """Encode and publish one frame's outputs (the overlay is handed to its thread); False if the gate
        is closed."""
        cam, header = r.frame.camera, r.frame.msg.header
        pubs = self.publishers.of(cam)
        t0 = time.perf_counter()
        msgs = []   # (kind, publisher, message)
        if pubs is None:
            s = {**s, "publish_labels": False, "publish_class_map_per_frame": False}
        sized = self._resized(cam, result, s)   # the overlay below stays at the camera's size
        if s["publish_labels"]:
            msgs.append(("labels", pubs.labels, outputs.labels_image(sized.labels, header)))
        if want.get("confidence"):
            msgs.append(("confidence", pubs.confidence, outputs.confidence_image(sized.confidence, header)))
        if want.get("masks"):
            msgs.append(("masks", pubs.masks, outputs.masks_message(sized, header, version)))
        if s["publish_class_map_per_frame"]:
            msgs.append(("class_map", pubs.class_map, outputs.class_map_message(
                result.class_names, version, header, s["presence_threshold"], s["model"])))
            if pubs.label_info is not None:
                msgs.append(("label_info", pubs.label_info, outputs.label_info_message(
                    result.class_names, header, s["presence_threshold"])))
        overlay = (OverlayJob(cam, r.rgb, result.labels, tuple(result.class_names), header, s["overlay_alpha"],
                              r.frame.received) if want.get("overlay") else None)
        if overlay is not None and self.overlays is None:   # no overlay thread (tests, tools): draw here
            msgs.append(("overlay", pubs.overlay, outputs.overlay_image(
                r.rgb, result.labels, result.class_names, header, s["overlay_alpha"])))
            overlay = None
        t1 = time.perf_counter()
        with self.publishers.gate as open_:
            if not open_:
                return False
            for kind, pub, msg in msgs:
                pub.publish(msg)
                r.stats.published[kind] = r.stats.published.get(kind, 0) + 1
        if overlay is not None:
            self.overlays.submit(overlay)
        t2 = time.perf_counter()
        st = r.stats
        st.processed += 1
        st.output_rate.tick()
        if r.stamp > 0:
            st.last_age = self.runtime.now() - r.stamp
        total = time.monotonic() - r.frame.received
        # node_overhead: what the node adds to the engine pass between receiving a frame and publishing it
        self.counters.latency.add({**result.timings, **times, "decode": r.decode, "encode": t1 - t0, "publish": t2 - t1,
                          "receive_to_publish": total, "node_overhead": total - times["engine"]})
        return True

    def on_error(self, batch: list, exc: BaseException) -> None:
        """What the worker calls when a batch raised past the per-frame handling: counted and logged once."""
        for frame in batch:
            st = self.counters.cameras.get(frame.camera)
            if st is not None:
                st.failed.add(f"{type(exc).__name__}: {exc}")
            self._warn_once((frame.camera, "error", type(exc).__name__),
                            f"camera '{frame.camera}': frame failed and was skipped: {type(exc).__name__}: {exc}")
