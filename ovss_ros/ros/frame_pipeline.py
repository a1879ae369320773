"""What the worker does with one frame: age check, decode, segment, publish. Runs on the worker thread only."""
from __future__ import annotations

import threading
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


class PublishGate:
    """Publishing happens only while the gate is open. Closing waits for a publish in progress, so
    publishers are never destroyed under it, and nothing is published once the node is going away."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = True

    def __enter__(self) -> bool:
        self._lock.acquire()
        return self.open

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def reopen(self) -> None:
        with self._lock:
            self.open = True

    def close(self, timeout: float = 1.0) -> None:
        if self._lock.acquire(timeout=timeout):
            self.open = False
            self._lock.release()
        else:   # a publish is stuck: still refuse every later one
            self.open = False


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class FramePipeline:
    """Turns frames into outputs. The node hands in everything through small callables so this file
    knows nothing about lifecycle or parameters."""

    def __init__(self, engine, stats: dict, latency: StageLatency, outputs_of: Callable[[str], CameraOutputs],
                 settings: Callable[[], dict], now: Callable[[], float], warn_once: Callable[[tuple, str], None],
                 gate: PublishGate):
        self.engine = engine                 # the node's EngineState (lock, segmenter, vocabulary, version)
        self.stats = stats                   # camera -> CameraStats
        self.latency = latency
        self.outputs_of = outputs_of
        self.settings = settings             # current values of the runtime parameters
        self.now = now                       # node clock, seconds (sim time aware)
        self.warn_once = warn_once
        self.gate = gate

    def _stale(self, cam: str, st: CameraStats, stamp: float, s: dict) -> bool:
        if s["max_frame_age"] <= 0 or stamp <= 0:
            return False
        age = self.now() - stamp
        if age > s["max_frame_age"]:
            reason = f"older than max_frame_age={s['max_frame_age']} s"
        elif -age > s["future_stamp_tolerance"]:
            reason = f"stamped more than future_stamp_tolerance={s['future_stamp_tolerance']} s in the future"
        else:
            return False
        st.stale.add(reason)
        self.warn_once((cam, "stale", reason), f"camera '{cam}': skipping frames {reason} (this one: "
                       f"{age:+.3f} s old by the node clock); counted as stale")
        return True

    def __call__(self, frame: Frame) -> None:
        cam = frame.camera
        st: CameraStats = self.stats.setdefault(cam, CameraStats())
        s = self.settings()
        stamp = stamp_seconds(frame.msg.header.stamp)
        if self._stale(cam, st, stamp, s):
            return
        t0 = time.perf_counter()
        try:
            decode = compressed_to_rgb if hasattr(frame.msg, "format") else image_to_rgb
            rgb = decode(frame.msg, s["max_image_pixels"])
        except BadFrame as exc:
            st.bad.add(str(exc))
            self.warn_once((cam, "bad", str(exc)), f"camera '{cam}': skipping bad frame: {exc}")
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
                result = seg.segment(rgb, outputs=("labels", "confidence", "class_maps"))
            except (ImageError, VocabularyError) as exc:
                st.bad.add(str(exc))
                self.warn_once((cam, "bad", str(exc)), f"camera '{cam}': skipping frame the engine refused: {exc}")
                return
            except Exception as exc:   # noqa: BLE001 - a well-formed frame failed: count it, keep serving
                reason = f"{type(exc).__name__}: {exc}"
                st.failed.add(reason)
                self.warn_once((cam, "failed", reason), f"camera '{cam}': segmentation failed, frame skipped: "
                               f"{reason}")
                return
            if s["debug_extra_latency"] > 0:   # test aid: a slow model, holding the engine like real work
                time.sleep(s["debug_extra_latency"])

        t1 = time.perf_counter()
        with self.gate as open_:
            if not open_:
                return   # the node is going away: abandon the frame
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
        if pubs is None:
            return
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
