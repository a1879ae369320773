"""Turn whatever image a caller has into the engine's input: RGB uint8, H x W x 3.

Pillow is optional (a bare CUDA machine has torch, transformers and OpenCV only): the numpy face's host resize
imports it on first use and, without it, resizes as `preprocess_torch` does (within one 8-bit level of PIL).
"""
from __future__ import annotations

import functools
import logging
import sys

import numpy as np
import torch
import torch.nn.functional as F


class ImageError(ValueError):
    """The image cannot be segmented; the message says why."""


@functools.lru_cache(maxsize=None)      # one look-up: a missing module is searched for on every import
def _pil_image():
    """PIL.Image, or None where pillow is not installed."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _is_pil_image(obj) -> bool:
    # a PIL image exists only once PIL.Image is imported: nothing to import here, with or without pillow
    image = sys.modules.get("PIL.Image")
    return image is not None and isinstance(obj, image.Image)


def _check_size(h: int, w: int, max_pixels: int) -> None:
    if h == 0 or w == 0:
        raise ImageError(f"image has zero size ({h} x {w})")
    if h * w > max_pixels:
        raise ImageError(f"image of {w} x {h} pixels exceeds max_image_pixels={max_pixels}; "
                         "downscale it first or raise the limit")


def to_rgb_uint8(image, max_pixels: int) -> np.ndarray:
    """Documented conversions: gray -> RGB, RGBA -> RGB (alpha ignored), uint16 -> uint8 (>> 8 with
    rounding), float in [0, 1] -> uint8. Anything else is an ImageError."""
    if _is_pil_image(image):
        image = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB", "RGBA", "I;16") else image)
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array or PIL image, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"expected H x W, H x W x 3 or H x W x 4, got shape {image.shape}")
    _check_size(*image.shape[:2], max_pixels)
    if image.dtype == np.uint8:
        out = image
    elif image.dtype == np.uint16:
        out = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ImageError("float images must be finite and in [0, 1]")
        out = np.round(image * 255).astype(np.uint8)
    else:
        raise ImageError(f"unsupported pixel type {image.dtype} (use uint8, uint16 or float in [0, 1])")
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    elif out.shape[2] == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def preprocess(rgb: np.ndarray, size: int, mean, std) -> np.ndarray:
    """Square warp to size x size with PIL bicubic (the reference's torchvision Resize), normalise -> 3 x S x S.
    Without pillow: `preprocess_torch` on the host (within one 8-bit level of PIL), said once in the log."""
    Image = _pil_image()
    if Image is None:
        _say_no_pil()
        x = preprocess_torch(torch.from_numpy(np.ascontiguousarray(rgb)), size,
                             torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
        return np.ascontiguousarray(x.numpy())
    img = Image.fromarray(rgb).resize((size, size), Image.BICUBIC)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@functools.lru_cache(maxsize=None)
def _say_no_pil() -> None:
    logging.getLogger(__name__).warning(
        "pillow is not installed: frames are resized with torch's PIL-compatible bicubic (within one 8-bit level "
        "of PIL's, the reference's); pip install pillow for PIL's own")


def preprocess_torch(frame: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The tensor face's `preprocess`, on the frame's device: H x W x 3 uint8 -> 3 x S x S normalised.

    Antialiased bicubic (torch's PIL-compatible resampling) rounded to 8-bit levels as PIL's is; it matches
    `preprocess` to within one 8-bit level per pixel (test/engine/test_tensor_face.py). `mean`/`std`: [3]
    float32 tensors on the frame's device.
    """
    x = frame.permute(2, 0, 1)[None].float()
    # as PIL: width first, then height, each pass rounded and clipped to 8 bits (bicubic overshoots at edges)
    for target in ((x.shape[-2], size), (size, size)):
        if tuple(x.shape[-2:]) != target:
            x = F.interpolate(x, size=target, mode="bicubic", antialias=True, align_corners=False)
            x = x.round().clamp(0, 255)
    return (x[0] / 255.0 - mean[:, None, None]) / std[:, None, None]


def check_frame_tensor(frame, max_pixels: int) -> torch.Tensor:
    """The tensor face's input check: an H x W x 3 uint8 tensor, as `to_rgb_uint8` would give."""
    if not isinstance(frame, torch.Tensor):
        raise ImageError(f"expected a torch.Tensor, got {type(frame).__name__}")
    if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[2] != 3:
        raise ImageError(f"expected an H x W x 3 uint8 tensor, got {tuple(frame.shape)} {frame.dtype}")
    _check_size(*frame.shape[:2], max_pixels)
    return frame
