"""Camera subscriptions, one or two per camera, raw or compressed.

`auto` reliability (the default) gives each camera a best-effort reader, which hears every publisher (REP
2003's sensor-data profile), and a reliable reader beside it unless every publisher known at activation is
best effort; a second copy of a frame that both readers receive is dropped. Why both: Fast DDS cannot carry a
best-effort sample larger than its shared-memory segment (512 KB; a VGA rgb8 frame is 900 KB) without UDP
fragments, which a best-effort reader loses, so frames from a reliable camera driver must reach a reliable
reader. Both are open before the first frame, so a reliable publisher's frames arrive from the first one,
and neither is ever closed while active, so nothing is lost when publishers come and go. A best-effort
camera that is already running gets the best-effort reader alone: no incompatible-QoS warning on its side.
One that joins later while the reliable reader is open is incompatible with that reader (expected, logged
at debug level here; the best-effort reader serves it). A reliable reader is added when a reliable
publisher appears."""
from __future__ import annotations

import threading
import zlib
from collections import deque
from typing import Callable

from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from . import qos

try:   # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:   # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

RELIABILITY_MODES = ("auto", "best_effort", "reliable")


def _reliable(info) -> bool:
    return info.qos_profile.reliability == ReliabilityPolicy.RELIABLE


def topic(camera: str, name: str) -> str:
    return f"{camera.strip('/')}/{name}" if camera.strip("/") else name


def frame_key(msg) -> tuple:
    """What identifies one frame across the two readers: header and a checksum of the pixels."""
    st = msg.header.stamp
    return st.sec, st.nanosec, msg.header.frame_id, len(msg.data), zlib.crc32(msg.data)


class _Dedup:
    """Remembers the last few frames of one camera; a frame seen already is a duplicate."""

    def __init__(self, keep: int = 8) -> None:
        self._seen: deque = deque(maxlen=keep)
        self._lock = threading.Lock()

    def first_time(self, msg) -> bool:
        key = frame_key(msg)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.append(key)
            return True


class CameraInputs:
    def __init__(self, node, on_frame: Callable[[str, object], None], group) -> None:
        self.node, self.on_frame, self.group = node, on_frame, group
        self._lock = threading.Lock()
        self._subs: dict = {}          # camera -> {reliability: subscription}
        self._dedups: dict = {}        # camera -> _Dedup (auto mode)
        self._mode = ""
        self._kind, self._suffix = Image, "image"
        self.duplicates = 0            # second copies dropped (auto mode)

    def open(self, cameras, transport: str, reliability: str) -> None:
        if transport not in ("raw", "compressed"):
            raise ValueError(f"input_transport={transport!r}: expected raw or compressed")
        if reliability not in RELIABILITY_MODES:
            raise ValueError(f"qos.input_reliability={reliability!r}: expected one of {RELIABILITY_MODES}")
        self._kind, self._suffix = ((CompressedImage, "image/compressed") if transport == "compressed"
                                    else (Image, "image"))
        with self._lock:
            self._mode = reliability
            for cam in cameras:
                name = topic(cam, self._suffix)
                if reliability != "auto":
                    self._subs[cam] = {reliability: self._reader(cam, name, reliability,
                                                                 lambda m, c=cam: self.on_frame(c, m))}
                    continue
                dedup = _Dedup()
                self._dedups[cam] = dedup
                first = self._reader(cam, name, "best_effort", self._auto(cam, dedup))
                self._subs[cam] = {"best_effort": first}
                infos = self.node.get_publishers_info_by_topic(first.topic_name)
                if not infos or any(_reliable(i) for i in infos):
                    self._subs[cam]["reliable"] = self._reader(cam, name, "reliable", self._auto(cam, dedup))

    def check_publishers(self) -> None:
        """auto mode: add the reliable reader of a camera once a reliable publisher appears."""
        with self._lock:
            if self._mode != "auto":
                return
            for cam, readers in self._subs.items():
                if "reliable" in readers:
                    continue
                name = readers["best_effort"].topic_name
                if any(_reliable(i) for i in self.node.get_publishers_info_by_topic(name)):
                    readers["reliable"] = self._reader(cam, name, "reliable", self._auto(cam, self._dedups[cam]))
                    self.node.get_logger().info(f"camera '{cam}': a reliable publisher appeared on {name}: "
                                                "added a reliable reader (qos.input_reliability auto)")

    def _reader(self, cam: str, name: str, reliability: str, callback):
        events = self._events(name) if (self._mode == "auto" and reliability == "reliable") else None
        return self.node.create_subscription(self._kind, name, callback, qos.inputs(reliability),
                                             callback_group=self.group, event_callbacks=events)

    def _auto(self, cam: str, dedup: "_Dedup"):
        return lambda m: self._deliver(cam, m, dedup)

    def _deliver(self, cam: str, msg, dedup: _Dedup) -> None:
        if dedup.first_time(msg):
            self.on_frame(cam, msg)
        else:
            self.duplicates += 1

    def _events(self, name: str) -> SubscriptionEventCallbacks:
        logged = []

        def incompatible(_info) -> None:
            if not logged:
                logged.append(True)
                self.node.get_logger().debug(f"{name}: a best-effort publisher is heard by the best-effort "
                                             "reader only (qos.input_reliability auto)")

        return SubscriptionEventCallbacks(incompatible_qos=incompatible)

    def reliability(self) -> dict:
        """camera -> the readers it has, e.g. "best_effort+reliable"."""
        with self._lock:
            return {cam: "+".join(readers) for cam, readers in self._subs.items()}

    def topics(self) -> dict:
        with self._lock:
            return {cam: next(iter(readers.values())).topic_name for cam, readers in self._subs.items() if readers}

    def close(self) -> None:
        with self._lock:
            for readers in self._subs.values():
                for sub in readers.values():
                    self.node.destroy_subscription(sub)
            self._subs, self._dedups = {}, {}
            self._mode = ""
