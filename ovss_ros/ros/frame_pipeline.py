"""What the worker does with one frame: age check, decode, segment, publish. Runs on the worker thread only."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ovss_ros.image_io import ImageError
from ovss_ros.prompts import VocabularyError

from . import outputs
from .image_codec import BadFrame, compressed_to_rgb, image_to_rgb
from .stats import CameraStats, StageLatency
from .worker import Frame


@dataclass
class CameraOutputs:
    """The publishers of one camera (None where that output does not exist on this machine)."""
    labels: Any
    confidence: Any
    overlay: Any
    masks: Any
    class_map: Any
    label_info: Optional[Any] = None


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class FramePipeline:
    """Turns frames into outputs. The node hands in everything through small callables so this file
    knows nothing about lifecycle or parameters."""

    def __init__(self, engine, stats: dict, latency: StageLatency, outputs_of: Callable[[str], CameraOutputs],
                 settings: Callable[[], dict], now: Callable[[], float], warn_once: Callable[[tuple, str], None]):
        self.engine = engine                 # the node's EngineState (lock, segmenter, vocabulary, version)
        self.stats = stats                   # camera -> CameraStats
        self.latency = latency
        self.outputs_of = outputs_of
        self.settings = settings             # current values of the runtime parameters
        self.now = now                       # node clock, seconds (sim time aware)
        self.warn_once = warn_once

    def __call__(self, frame: Frame) -> None:
        cam = frame.camera
        st: CameraStats = self.stats.setdefault(cam, CameraStats())
        s = self.settings()
        stamp = stamp_seconds(frame.msg.header.stamp)
        if s["max_frame_age"] > 0 and stamp > 0:
            age = self.now() - stamp
            if age > s["max_frame_age"]:
                st.stale += 1
                self.warn_once((cam, "stale"), f"camera '{cam}': skipping frames older than max_frame_age="
                               f"{s['max_frame_age']} s (this one is {age:.3f} s old); counted as stale")
                return
        t0 = time.perf_counter()
        try:
            decode = compressed_to_rgb if hasattr(frame.msg, "format") else image_to_rgb
            rgb = decode(frame.msg, s["max_image_pixels"])
        except BadFrame as exc:
            st.bad += 1
            self.warn_once((cam, exc.kind), f"camera '{cam}': skipping bad frame: {exc}")
            return
        t_decode = time.perf_counter() - t0

        with self.engine.lock:
            seg = self.engine.segmenter
            if seg is None:
                return   # deactivated while this frame waited
            if not self.engine.version:
                st.no_vocabulary += 1
                self.warn_once((cam, "no_vocabulary"), "no vocabulary yet: frames are skipped until one arrives "
                               "on the `vocabulary` topic, parameter or `set_vocabulary` service")
                return
            version = self.engine.version
            try:
                result = seg.segment(rgb)
            except (ImageError, VocabularyError) as exc:
                st.bad += 1
                self.warn_once((cam, "engine_input"), f"camera '{cam}': skipping frame the engine refused: {exc}")
                return
            if s["debug_extra_latency"] > 0:   # test aid: a slow model, holding the engine like real work
                time.sleep(s["debug_extra_latency"])

        t1 = time.perf_counter()
        self._publish(cam, frame.msg.header, rgb, result, version, s)
        t_publish = time.perf_counter() - t1
        st.processed += 1
        st.output_rate.tick()
        if stamp > 0:
            st.last_age = self.now() - stamp
        self.latency.add({**result.timings, "decode": t_decode, "publish": t_publish,
                          "receive_to_publish": time.monotonic() - frame.received})

    def _publish(self, cam: str, header, rgb, result, version: int, s: dict) -> None:
        pubs = self.outputs_of(cam)
        if s["publish_labels"]:
            pubs.labels.publish(outputs.labels_image(result.labels, header))
        if s["publish_confidence"]:
            pubs.confidence.publish(outputs.confidence_image(result.confidence, header))
        if s["publish_overlay"]:
            pubs.overlay.publish(outputs.overlay_image(rgb, result.labels, result.class_names, header,
                                                       s["overlay_alpha"]))
        if s["publish_masks"]:
            pubs.masks.publish(outputs.masks_message(result, header, version))
        if s["publish_class_map_per_frame"]:
            pubs.class_map.publish(outputs.class_map_message(result.class_names, version, header,
                                                             s["presence_threshold"], s["model"]))
            if pubs.label_info is not None:
                pubs.label_info.publish(outputs.label_info_message(result.class_names, header,
                                                                   s["presence_threshold"]))
