"""sensor_msgs Image / CompressedImage <-> numpy. Every malformed input becomes a BadFrame whose message says
what is wrong, and nothing is decoded before its size is known to be within the limit.

Raw images are converted with cv_bridge where it imports (robots with apt ROS), after this module's own
checks; elsewhere (the PyPI wheels have no cv_bridge, and binary cv_bridge breaks on NumPy 2) with the small
converter below. Compressed frames are read with Pillow: its header parse gives the size before any pixel
is decoded, and its errors are exceptions, not lines on stderr."""
from __future__ import annotations

import array
import io
import warnings

import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import Image

try:
    from cv_bridge import CvBridge
    BRIDGE = CvBridge()
except Exception:   # noqa: BLE001 - absent, or a binary build that does not load with this NumPy
    BRIDGE = None

# encoding -> (numpy dtype, channels, channel order)
ENCODINGS = {
    "rgb8": (np.uint8, 3, "rgb"), "bgr8": (np.uint8, 3, "bgr"), "8UC3": (np.uint8, 3, "bgr"),
    "rgba8": (np.uint8, 4, "rgba"), "bgra8": (np.uint8, 4, "bgra"), "8UC4": (np.uint8, 4, "bgra"),
    "mono8": (np.uint8, 1, "gray"), "8UC1": (np.uint8, 1, "gray"),
    "rgb16": (np.uint16, 3, "rgb"), "bgr16": (np.uint16, 3, "bgr"),
    "rgba16": (np.uint16, 4, "rgba"), "bgra16": (np.uint16, 4, "bgra"),
    "mono16": (np.uint16, 1, "gray"), "16UC1": (np.uint16, 1, "gray"),
}


class BadFrame(ValueError):
    """An input frame that cannot be used. `kind` groups reasons so each kind is logged once."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _to_uint8_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    if pixels.dtype == np.uint16:   # same rounding as the engine's uint16 conversion
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if order == "gray":
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    rgb = pixels[:, :, :3]
    if order.startswith("bgr"):
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def image_to_rgb(msg: Image, max_pixels: int = 4096 * 4096, bridge=BRIDGE) -> np.ndarray:
    """H x W x 3 uint8 RGB from a raw Image; checks encoding, size, step and data length first."""
    pixels = image_to_array(msg, max_pixels)          # validates the encoding first
    if bridge is not None:
        return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    return _to_uint8_rgb(pixels, ENCODINGS[msg.encoding][2])


def image_to_array(msg: Image, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """H x W x channels pixels as the message stores them (uint8 or uint16, its channel order), row padding
    dropped; raises BadFrame for an unsupported encoding, size, step or data length."""
    spec = ENCODINGS.get(msg.encoding)
    if spec is None:
        raise BadFrame("encoding", f"unsupported encoding {msg.encoding!r} (supported: {', '.join(ENCODINGS)})")
    dtype, ch, _order = spec
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise BadFrame("size", f"image has zero size ({w} x {h})")
    if h * w > max_pixels:
        raise BadFrame("size", f"image of {w} x {h} pixels exceeds the limit of {max_pixels} pixels "
                               "(max_image_pixels)")
    row = w * ch * np.dtype(dtype).itemsize
    if step < row:
        raise BadFrame("step", f"step {step} is smaller than width x bytes per pixel = {row} ({msg.encoding})")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * h:
        kind = "truncated" if data.size < step * h else "size"
        raise BadFrame(kind, f"data has {data.size} bytes, expected step x height = {step} x {h} = {step * h}")
    rows = data.reshape(h, step)[:, :row]   # drops row padding (rosbags-image would silently misread it)
    if dtype == np.uint16:
        pixels = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2").astype(np.uint16)
    else:
        pixels = rows
    return pixels.reshape(h, w, ch)


def compressed_to_rgb(msg, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """H x W x 3 uint8 RGB from a CompressedImage (jpeg, png, anything Pillow reads). The size comes from
    the header and is checked before decoding: a 100 kB PNG can claim 30000 x 30000 pixels."""
    data = bytes(msg.data)
    if not data:
        raise BadFrame("compressed", "compressed frame has no data")
    what = f"compressed frame (format {msg.format!r}, {len(data)} bytes)"
    try:
        with warnings.catch_warnings():   # Pillow's own bomb warning: the limit below is the node's
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            img = PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as exc:
        raise BadFrame("size", f"{what} claims more pixels than any camera: {exc}; not decoded") from None
    except Exception as exc:   # noqa: BLE001 - Pillow raises several types for unreadable headers
        raise BadFrame("compressed", f"cannot decode {what}: not an image format Pillow knows "
                                     f"({type(exc).__name__})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise BadFrame("size", f"{what} is {w} x {h} pixels, over the limit of {max_pixels} pixels "
                               "(max_image_pixels); not decoded")
    try:
        img.load()
        if img.mode.startswith("I;16"):   # 16-bit grey: to 8 bits like the raw path's mono16
            grey = np.asarray(img).astype(np.uint32)
            return np.repeat((((grey + 128) // 257).astype(np.uint8))[:, :, None], 3, axis=2)
        return np.ascontiguousarray(np.asarray(img if img.mode == "RGB" else img.convert("RGB")))
    except Exception as exc:   # noqa: BLE001 - truncated or corrupt data
        raise BadFrame("compressed", f"cannot decode {what}: {type(exc).__name__}: {exc}") from None


def array_to_image(pixels: np.ndarray, encoding: str, header=None, bridge=BRIDGE) -> Image:
    """Image message from an array: mono8/mono16 (H x W) or rgb8 (H x W x 3)."""
    pixels = np.ascontiguousarray(pixels)
    if bridge is not None:
        return bridge.cv2_to_imgmsg(pixels, encoding=encoding, header=header)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    if pixels.dtype == np.uint16:
        pixels = pixels.astype("<u2", copy=False)
    msg.step = int(pixels.strides[0])
    # one copy straight from the array's buffer: array.array("B", pixels.tobytes()) copies twice and goes
    # element by element (1.4 ms for a VGA rgb8 frame against 0.04 ms); array.array also skips the
    # generated setter's per-element check
    data = array.array("B")
    data.frombytes(memoryview(pixels).cast("B"))
    msg.data = data
    return msg
