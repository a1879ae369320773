"""Outputs at another resolution than the camera's: an explicit size (`output_size`) or the size of another
topic of the camera (`output_size_from`: a CameraInfo or Image topic, e.g. a registered depth stream), so the
label image is pixel-aligned with a depth image or organised cloud of another resolution.

Labels are resized nearest-neighbour (no new ids), confidence and per-class score maps with one interpolation
(area when shrinking, bilinear otherwise). It is a scale of the whole image, not a reprojection: the target
must cover the same field of view (a depth image registered to this camera does). Headers are untouched."""
from __future__ import annotations

import dataclasses
import re
import threading
from typing import Optional, Sequence

import cv2
import numpy as np

MAX_SIDE = 8192            # px per side; anything larger is a typo, not a camera
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
# centre-aligned like INTER_LINEAR/INTER_AREA (plain INTER_NEAREST samples floor(x * scale), shifting labels by
# up to half a source pixel against the confidence); OpenCV >= 4.5
_NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)


# -- parameters ------------------------------------------------------------------------------------------
def size_problem(value) -> Optional[str]:
    """Why an `output_size` value is refused, or None. [0, 0] = the camera's size."""
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        shown = list(value) if hasattr(value, "__len__") and not isinstance(value, str) else value
        return f"output_size={shown!r}: expected [width, height] (two integers)"
    if (w, h) == (0, 0):
        return None
    if w <= 0 or h <= 0:
        return (f"output_size=[{w}, {h}]: width and height must both be positive, or both 0 for the camera's "
                "size")
    if w > MAX_SIDE or h > MAX_SIDE:
        return f"output_size=[{w}, {h}]: at most {MAX_SIDE} pixels per side"
    return None


def source_problem(name: str) -> Optional[str]:
    """Why an `output_size_from` topic name is refused, or None ("" = not following)."""
    if not name:
        return None
    if name.startswith(("/", "~")):
        return (f"output_size_from={name!r}: give the topic relative to the camera's prefix (e.g. "
                "'aligned_depth_to_color/camera_info'); remap it to reach another place")
    if not _NAME.match(name):
        return (f"output_size_from={name!r} is not a valid relative topic name: tokens of letters, digits and '_' "
                "(not starting with a digit) joined by single '/'")
    return None


def conflict(size, source: str) -> Optional[str]:
    """Explicit size and follow mode exclude each other."""
    size = [int(v) for v in size]
    if source and size != [0, 0]:
        return (f"output_size={size} and output_size_from={source!r} both set: choose one (output_size [0, 0] "
                "to follow the topic, or output_size_from \"\" for the explicit size)")
    return None


def follows_camera_info(name: str) -> bool:
    """The topic's type from its name: `.../camera_info` is sensor_msgs/CameraInfo, anything else an Image."""
    return name.rsplit("/", 1)[-1] == "camera_info"


def message_size(msg) -> tuple:
    """(width, height) of the images a CameraInfo describes, or of an Image. CameraInfo's width and height are
    the calibration's; a region of interest and binning (REP 104) make the published images smaller."""
    if not hasattr(msg, "binning_x"):
        return int(msg.width), int(msg.height)
    w, h = int(msg.width), int(msg.height)
    if msg.roi.width and msg.roi.height:
        w, h = int(msg.roi.width), int(msg.roi.height)
    return w // max(1, int(msg.binning_x)), h // max(1, int(msg.binning_y))


def target_size(explicit: Sequence[int], followed: Optional[tuple]) -> Optional[tuple]:
    """(width, height) the outputs should have, or None for the camera's size."""
    w, h = (int(v) for v in explicit)
    if w > 0 and h > 0:
        return w, h
    return followed


# -- resizing --------------------------------------------------------------------------------------------
def _score_interpolation(src_hw: tuple, size: tuple) -> int:
    shrink = size[0] <= src_hw[1] and size[1] <= src_hw[0]
    return cv2.INTER_AREA if shrink else cv2.INTER_LINEAR


def resize_labels(labels: np.ndarray, size: tuple) -> np.ndarray:
    """H x W class ids (uint8 or uint16) -> size (width, height), nearest-neighbour: only ids of the input."""
    if labels.shape[1] == size[0] and labels.shape[0] == size[1]:
        return labels
    return cv2.resize(labels, size, interpolation=_NEAREST)


def resize_scores(scores: np.ndarray, size: tuple) -> np.ndarray:
    """H x W or K x H x W float scores -> size (width, height); area when shrinking, bilinear otherwise."""
    hw = scores.shape[-2:]
    if hw[1] == size[0] and hw[0] == size[1]:
        return scores
    how = _score_interpolation(hw, size)
    if scores.ndim == 2:
        return cv2.resize(scores, size, interpolation=how)
    # one map at a time: OpenCV's area path takes at most 4 channels
    out = np.empty((scores.shape[0], size[1], size[0]), scores.dtype)
    for k in range(scores.shape[0]):
        out[k] = cv2.resize(scores[k], size, interpolation=how)
    return out


def resize_result(result, size: Optional[tuple]):
    """A copy of a SegmentationResult with labels, confidence and class maps at size (width, height); the
    result itself when size is None or already the result's."""
    if size is None:
        return result
    h, w = result.labels.shape
    if (w, h) == tuple(size):
        return result
    return dataclasses.replace(
        result, labels=resize_labels(result.labels, size),
        confidence=None if result.confidence is None else resize_scores(result.confidence, size),
        class_maps=None if result.class_maps is None else resize_scores(result.class_maps, size))


def aspect_changes(src_hw: tuple, size: tuple, tolerance: float = 0.01) -> bool:
    """The resize stretches the image (width/height ratios differ by more than `tolerance`)."""
    src = src_hw[1] / src_hw[0]
    return abs(size[0] / size[1] - src) > tolerance * src


# -- following a topic's size ----------------------------------------------------------------------------
class SizeFollower:
    """Per camera, the latest size seen on `<camera>/<output_size_from>`. Subscribed at activate, dropped at
    deactivate; until a camera's first message its outputs keep the camera's size."""

    def __init__(self, node, group) -> None:
        self.node, self.group = node, group
        self._lock = threading.Lock()
        self._sizes: dict = {}      # camera -> (width, height)
        self._subs: list = []

    def open(self, cameras, source: str) -> None:
        if not source:
            return
        from rclpy.qos import ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from . import qos
        from .camera_inputs import SubscriptionEventCallbacks, topic   # the distribution-dependent import, once

        kind = CameraInfo if follows_camera_info(source) else Image
        for cam in cameras:
            name = topic(cam, source)
            shown = self.node.resolve_topic_name(name)   # with namespace and remapping, as `ros2 topic list` has it
            readers = ["best_effort"]   # matches every publisher; CameraInfo is small enough for it
            if kind is Image:   # depth frames over 512 KB from a reliable driver need a reliable reader (Fast DDS)
                infos = self.node.get_publishers_info_by_topic(shown)
                if not infos or any(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos):
                    readers.append("reliable")
            for reliability in readers:   # a best-effort publisher meeting the reliable reader is expected: no warning
                events = SubscriptionEventCallbacks(incompatible_qos=lambda _info: None)
                self._subs.append(self.node.create_subscription(
                    kind, name, lambda m, c=cam, n=shown: self._on_message(c, n, m), qos.inputs(reliability),
                    callback_group=self.group, event_callbacks=events if reliability == "reliable" else None))
            what = "sensor_msgs/CameraInfo" if kind is CameraInfo else "sensor_msgs/Image"
            self.node.get_logger().info(f"camera '{cam}': outputs follow the size of {shown} ({what}); at the "
                                        "camera's size until its first message")

    def _on_message(self, cam: str, name: str, msg) -> None:
        size = message_size(msg)
        problem = size_problem(list(size))
        if problem or size == (0, 0):
            reason = problem.split(": ", 1)[-1] if problem else "zero size"
            self.node.warn_once((cam, "output_size_from", size), f"camera '{cam}': {name} gives a size of "
                                f"{size[0]} x {size[1]} ({reason}); ignored, outputs keep the last usable size")
            return
        with self._lock:
            old, self._sizes[cam] = self._sizes.get(cam), size
        if old != size:
            self.node.get_logger().info(f"camera '{cam}': outputs now {size[0]} x {size[1]} (from {name})")

    def size(self, cam: str) -> Optional[tuple]:
        with self._lock:
            return self._sizes.get(cam)

    def close(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []
        with self._lock:
            self._sizes.clear()

    def check_parameters(self, params):
        """On-set check of the pair (each value alone is checked with the other node parameters)."""
        from rcl_interfaces.msg import SetParametersResult

        new = {p.name: p.value for p in params if p.name in ("output_size", "output_size_from")}
        if not new:
            return SetParametersResult(successful=True)
        size = new.get("output_size", self.node.get_parameter("output_size").value)
        source = new.get("output_size_from", self.node.get_parameter("output_size_from").value)
        reason = size_problem(size) or conflict(size, source)
        return SetParametersResult(successful=reason is None, reason=reason or "")
