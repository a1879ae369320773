"""A test-side consumer that reads the node's outputs the way Nav2's semantic_segmentation_layer does:
class-id mask and confidence with sensor-data QoS (best effort, depth 5), joined by identical header.stamp
(message_filters' exact-time policy), and vision_msgs/LabelInfo reliable + transient local, depth 5, which
names the ids and must be there before a mask is used. Every message is kept with the time its publisher
sent it (DDS source timestamp), so a test can check what the node published before what, across topics,
whatever order the probe's executor ran the callbacks in."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image

# rmw_qos_profile_sensor_data, as the layer subscribes mask and confidence
SENSOR_DATA = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
LABEL_INFO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
# rclpy hands a two-argument callback the message's info (source timestamp) where it can (Iron and later)
WITH_INFO = hasattr(Subscription, "CallbackType")


def stamp_key(msg) -> tuple:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


@dataclass
class Received:
    msg: Any
    published: Optional[int]   # the publisher's send time, ns (None where rclpy does not report it)


def _subscribe(node, msg_type, topic: str, qos: QoSProfile, sink) -> None:
    if WITH_INFO:
        node.create_subscription(msg_type, topic, lambda msg, info: sink(Received(msg, info["source_timestamp"])),
                                 qos)
    else:   # pragma: no cover - Humble's rclpy
        node.create_subscription(msg_type, topic, lambda msg: sink(Received(msg, None)), qos)


class ExactTimePairs:
    """Masks and confidence images joined by identical header.stamp, as message_filters' ExactTime
    synchroniser joins them; what has no partner stays pending, so a test can name what never paired."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.masks: dict = {}         # stamp -> Received
        self.confidence: dict = {}
        self.pairs: dict = {}         # stamp -> (mask Received, confidence Received)

    def _add(self, side: dict, other: dict, item: Received, mask_first: bool) -> None:
        key = stamp_key(item.msg)
        with self.cond:
            if key in other:
                partner = other.pop(key)
                self.pairs[key] = (item, partner) if mask_first else (partner, item)
            else:
                side[key] = item
            self.cond.notify_all()

    def on_mask(self, item: Received) -> None:
        self._add(self.masks, self.confidence, item, True)

    def on_confidence(self, item: Received) -> None:
        self._add(self.confidence, self.masks, item, False)

    def wait_mask(self, key: tuple, timeout: float) -> bool:
        """A mask with this stamp arrived (paired or not)."""
        with self.cond:
            return self.cond.wait_for(lambda: key in self.masks or key in self.pairs, timeout)

    def wait_pair(self, key: tuple, timeout: float):
        with self.cond:
            self.cond.wait_for(lambda: key in self.pairs, timeout)
            return self.pairs.get(key)


class Nav2Layer:
    """The layer's subscriptions for one camera namespace. LabelInfo is subscribed only when asked, so a
    test can join after the node published it, as a costmap started later does."""

    def __init__(self, probe, prefix: str) -> None:
        self.node, self.prefix = probe.node, prefix
        self.sync = ExactTimePairs()
        _subscribe(self.node, Image, f"{prefix}/segmentation/labels", SENSOR_DATA, self.sync.on_mask)
        _subscribe(self.node, Image, f"{prefix}/segmentation/confidence", SENSOR_DATA, self.sync.on_confidence)
        self.infos: list = []   # Received LabelInfo, in arrival order
        self._cond = threading.Condition()

    def subscribe_label_info(self) -> None:
        from vision_msgs.msg import LabelInfo

        _subscribe(self.node, LabelInfo, f"{self.prefix}/segmentation/label_info", LABEL_INFO_QOS, self._on_info)

    def _on_info(self, item: Received) -> None:
        with self._cond:
            self.infos.append(item)
            self._cond.notify_all()

    def wait_label_info(self, names, timeout: float = 30.0, since: int = 0):
        """The first LabelInfo received (the `since`-th or later) that names exactly `names` after
        "background", or None."""
        want = ["background", *names]

        def found():
            return next((i for i in self.infos[since:] if class_names(i.msg) == want), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout)
            return found()

    def info_in_force(self, mask: Received) -> Optional[Received]:
        """The LabelInfo the node published last before this mask (by the publisher's send times)."""
        with self._cond:
            before = [i for i in self.infos if i.published is not None and i.published < mask.published]
        return max(before, key=lambda i: i.published) if before else None


def class_names(info) -> list:
    return [c.class_name for c in sorted(info.class_map, key=lambda c: c.class_id)]


def mask_ids(mask) -> set:
    """The layer's read of a mono8 mask: data[v * width + u], one byte per pixel, no row padding."""
    data = np.frombuffer(bytes(mask.data), np.uint8)
    return {int(v) for v in np.unique(data[: mask.height * mask.width])}


def check_pair(mask, confidence, info) -> None:
    """What the layer relies on for one joined pair under the LabelInfo in force."""
    for img in (mask, confidence):
        assert img.encoding == "mono8", img.encoding
        assert img.step == img.width and len(img.data) == img.height * img.width, (img.step, img.width)
    assert (mask.height, mask.width) == (confidence.height, confidence.width)
    assert mask.header.frame_id == confidence.header.frame_id
    ids = {c.class_id for c in info.class_map}
    assert mask_ids(mask) <= ids, f"mask ids {sorted(mask_ids(mask))} not all named by LabelInfo {sorted(ids)}"
