"""Helpers imported by the ROS tests (fixtures live in conftest.py)."""
from __future__ import annotations

import array
import time

import numpy as np


def wait_until(predicate, timeout: float, interval: float = 0.02):
    """Poll a condition; returns its last value (truthy on success)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def stamp(sec: int, nanosec: int = 0):
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


def scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """An RGB test frame: a red disc and a blue square on grey, plus a little noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h // 3) ** 2 + (xx - w // 3) ** 2 < (min(h, w) // 5) ** 2] = (220, 30, 30)
    img[h // 2: h // 2 + h // 4, w // 2: w // 2 + w // 4] = (30, 30, 220)
    return np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)


def raw_image(data: bytes, encoding: str, h: int, w: int, step: int, sec: int, frame_id: str = "cam",
              bigendian: bool = False):
    """An Image built field by field, so tests can make it wrong on purpose."""
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp = stamp(sec)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.step = h, w, encoding, step
    msg.is_bigendian = int(bigendian)
    msg.data = array.array("B", data)
    return msg


def image_msg(pixels: np.ndarray, encoding: str, sec: int, frame_id: str = "cam"):
    """A correct Image of any encoding from an array already in that layout."""
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    return raw_image(pixels.tobytes(), encoding, h, w, pixels.strides[0], sec, frame_id)


def to_array(msg) -> np.ndarray:
    """mono8/mono16/rgb8 output Image -> array (outputs are never padded: step checked by the tests)."""
    dtype = np.uint16 if msg.encoding == "mono16" else np.uint8
    ch = 3 if msg.encoding == "rgb8" else 1
    arr = np.frombuffer(bytes(msg.data), dtype=dtype).reshape(msg.height, msg.width, ch)
    return arr[:, :, 0] if ch == 1 else arr


def diagnostic_values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}
