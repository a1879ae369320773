"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge (binary cv_bridge breaks on NumPy 2 and is
absent from the PyPI wheels). Every malformed input becomes a BadFrame whose message says what is wrong."""
from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import Image

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


def image_to_rgb(msg: Image, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """H x W x 3 uint8 RGB from a raw Image; checks encoding, size, step and data length first."""
    pixels = image_to_array(msg, max_pixels)          # validates the encoding first
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
    """H x W x 3 uint8 RGB from a CompressedImage (jpeg, png, anything OpenCV decodes)."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise BadFrame("compressed", "compressed frame has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadFrame("compressed", f"cannot decode compressed frame (format {msg.format!r}, {data.size} bytes)")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise BadFrame("size", f"decoded image of {bgr.shape[1]} x {bgr.shape[0]} pixels exceeds the limit "
                               f"of {max_pixels} pixels (max_image_pixels)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def array_to_image(pixels: np.ndarray, encoding: str, header=None) -> Image:
    """Image message from a C-contiguous array: mono8/mono16 (H x W) or rgb8 (H x W x 3)."""
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    if pixels.dtype == np.uint16:
        pixels = pixels.astype("<u2", copy=False)
    msg.step = int(pixels.strides[0])
    # array.array skips the per-element type check the generated setter does on other sequences
    msg.data = array.array("B", pixels.tobytes())
    return msg
