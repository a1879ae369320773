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
publisher appears.

A best-effort publisher that is matched but delivers nothing for BEST_EFFORT_SILENCE seconds is reported (logged
once per camera while active, and in the camera's /diagnostics status while the silence lasts): the usual
cause is frames larger than Fast DDS's default shared-memory segment, sent best effort, lost as UDP fragments;
the fix is the large-frames profile on the camera driver's side (docs/ros_node.md, "Large frames and
best-effort cameras")."""
from __future__ import annotations

import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Callable, Optional

from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from . import qos

try:   # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:   # Humble (test_distro_branches runs it with a stand-in module)
    from rclpy.qos_event import SubscriptionEventCallbacks

RELIABILITY_MODES = ("auto", "best_effort", "reliable")
BEST_EFFORT_SILENCE = 3.0   # s a matched best-effort publisher may stay silent before it is reported


def _best_effort(info) -> bool:
    return info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT


def _matched(reader) -> bool:
    """The reader has a matched publisher (Humble's rclpy cannot say: the best-effort reader matches any)."""
    count = getattr(reader, "get_publisher_count", None)
    return count is None or count() > 0


def large_frames_profile() -> str:
    """Where config/fastdds_large_frames.xml is: the installed share directory, else this source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return str(Path(get_package_share_directory("ovss_ros")) / "config" / "fastdds_large_frames.xml")
    except Exception:   # noqa: BLE001 - not installed in an ament prefix (development tree, PyPI wheels)
        return str(Path(__file__).resolve().parents[2] / "config" / "fastdds_large_frames.xml")


def silence_hint(topic: str, seconds: float, profile: str) -> str:
    return (f"a best-effort publisher is matched on {topic} but no frame arrived in {seconds:.0f} s. Likely "
            "cause: frames larger than Fast DDS's shared-memory segment (512 KB by default; VGA rgb8 is 900 KB) "
            "sent best effort travel as UDP fragments and are lost. Fix: start the camera driver with "
            f"FASTDDS_DEFAULT_PROFILES_FILE={profile} (the publisher's side decides), or publish reliable or "
            "compressed")


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
        self._last_frame: dict = {}    # camera -> monotonic time of its last frame
        self._be_since: dict = {}      # camera -> since when a best-effort publisher is matched (None: none)
        self._hinted: set = set()      # cameras whose silence was logged since activation
        self._hint_lock = threading.Lock()
        self._profile = large_frames_profile()

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
                                                                 lambda m, c=cam: self._frame(c, m))}
                    continue
                dedup = _Dedup()
                self._dedups[cam] = dedup
                first = self._reader(cam, name, "best_effort", self._auto(cam, dedup))
                self._subs[cam] = {"best_effort": first}
                infos = self.node.get_publishers_info_by_topic(first.topic_name)
                if not infos or any(_reliable(i) for i in infos):
                    self._subs[cam]["reliable"] = self._reader(cam, name, "reliable", self._auto(cam, dedup))

    def check_publishers(self) -> None:
        """auto mode: add the reliable reader of a camera once a reliable publisher appears. Every mode: note
        matched best-effort publishers that stay silent (timer, every 0.5 s)."""
        self._check_silence(time.monotonic())
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
            self._frame(cam, msg)
        else:
            self.duplicates += 1

    def _frame(self, cam: str, msg) -> None:
        self._last_frame[cam] = time.monotonic()
        self.on_frame(cam, msg)

    def _check_silence(self, now: float) -> None:
        with self._lock:   # close() destroys the readers under the same lock
            for cam, readers in self._subs.items():
                reader = readers.get("best_effort")
                name = reader.topic_name if reader is not None else ""
                if not (reader is not None and _matched(reader)
                        and any(_best_effort(i) for i in self.node.get_publishers_info_by_topic(name))):
                    self._be_since[cam] = None
                    continue
                if self._be_since.get(cam) is None:
                    self._be_since[cam] = now
                self._report(cam, name, self.best_effort_silence(cam, now))

    def best_effort_silence(self, cam: str, now: Optional[float] = None) -> Optional[float]:
        """Seconds a matched best-effort publisher has delivered no frame on this camera (since it matched or
        since the last frame), when that is BEST_EFFORT_SILENCE or more; else None."""
        since = self._be_since.get(cam)
        if since is None:
            return None
        now = time.monotonic() if now is None else now
        silent = now - max(since, self._last_frame.get(cam, since))
        return silent if silent >= BEST_EFFORT_SILENCE else None

    def silence_message(self, cam: str, now: Optional[float] = None) -> str:
        """The camera's /diagnostics message while a matched best-effort publisher is silent, else ""."""
        seconds = self.best_effort_silence(cam, now)
        return self._report(cam, self.topics().get(cam, ""), seconds)

    def _report(self, cam: str, name: str, seconds: Optional[float]) -> str:
        """The message while the camera is silent, or "" (frames arrive). Logged once per camera while
        active (by the timer or /diagnostics, whichever comes first): lossy large frames make silent spells
        come and go, and each would otherwise log again."""
        if seconds is None:
            return ""
        text = silence_hint(name, seconds, self._profile)
        with self._hint_lock:
            first = cam not in self._hinted
            self._hinted.add(cam)
        if first:
            self.node.get_logger().warning(f"camera '{cam}': {text}")
        return text

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
            self._be_since, self._last_frame = {}, {}
        with self._hint_lock:
            self._hinted.clear()
