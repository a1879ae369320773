"""Camera subscriptions, one per camera, raw or compressed, with the reliability chosen per topic.

"auto" reliability (the default) subscribes best effort (sensor data: hears every publisher) unless every
publisher of the topic is reliable, then reliable. Why: Fast DDS cannot carry a best-effort sample larger
than its shared-memory segment (512 KB: a VGA rgb8 frame is 900 KB) without UDP fragments that get lost,
so VGA frames from a reliable camera driver never arrive on a best-effort reader. Depth stays 1 either
way, so the reader still keeps only the newest frame. Publishers are re-checked periodically, so a camera
started after the node is matched too."""
from __future__ import annotations

import threading
from typing import Callable

from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from . import qos

RELIABILITY_MODES = ("auto", "best_effort", "reliable")


def topic(camera: str, name: str) -> str:
    return f"{camera.strip('/')}/{name}" if camera.strip("/") else name


class CameraInputs:
    def __init__(self, node, on_frame: Callable[[str, object], None], group) -> None:
        self.node, self.on_frame, self.group = node, on_frame, group
        self._lock = threading.Lock()
        self._subs: dict = {}          # camera -> (subscription, reliability in use)
        self._spec = None

    def open(self, cameras, transport: str, reliability: str, depth: int) -> None:
        if transport not in ("raw", "compressed"):
            raise ValueError(f"input_transport={transport!r}: expected raw or compressed")
        if reliability not in RELIABILITY_MODES:
            raise ValueError(f"qos.input_reliability={reliability!r}: expected one of {RELIABILITY_MODES}")
        self._spec = (transport, reliability, depth)
        with self._lock:
            for cam in cameras:
                self._subscribe(cam, "best_effort" if reliability == "auto" else reliability)
        self.check_publishers()

    def _subscribe(self, cam: str, reliability: str) -> None:
        transport, _, depth = self._spec
        name, kind = ((topic(cam, "image/compressed"), CompressedImage) if transport == "compressed"
                      else (topic(cam, "image"), Image))
        old = self._subs.pop(cam, None)
        if old is not None:
            self.node.destroy_subscription(old[0])
        sub = self.node.create_subscription(kind, name, lambda m, c=cam: self.on_frame(c, m),
                                            qos.inputs(reliability, depth), callback_group=self.group)
        self._subs[cam] = (sub, reliability)

    def check_publishers(self) -> None:
        """auto mode: switch a camera's reader to reliable when all its publishers are reliable, back to
        best effort when one is not."""
        if self._spec is None or self._spec[1] != "auto":
            return
        with self._lock:
            for cam, (sub, current) in list(self._subs.items()):
                name = sub.topic_name
                infos = self.node.get_publishers_info_by_topic(name)
                if not infos:
                    continue
                reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
                wanted = "reliable" if reliable else "best_effort"
                if wanted != current:
                    self._subscribe(cam, wanted)
                    self.node.get_logger().info(f"camera '{cam}': publishers of {name} are "
                                                f"{'all reliable' if reliable else 'not all reliable'}: "
                                                f"subscribing {wanted} (qos.input_reliability auto)")

    def reliability(self) -> dict:
        with self._lock:
            return {cam: rel for cam, (_, rel) in self._subs.items()}

    def close(self) -> None:
        with self._lock:
            for sub, _ in self._subs.values():
                self.node.destroy_subscription(sub)
            self._subs = {}
            self._spec = None
