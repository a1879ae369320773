"""PGSeg's input: the frame resized as mmseg's test pipeline does it, normalised on the 0-255 scale.

The authors resize uint8 pixels with OpenCV's bilinear filter (mmcv.imrescale, keep ratio, short side to 448 with
the long side capped at 2048), then subtract the ImageNet mean and divide by the std on the 0-255 scale."""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MAX_LONG_SIDE = 2048      # mmseg's img_scale=(2048, 448)


def target_size(h: int, w: int, size: int, resize: str) -> tuple[int, int]:
    """(height, width) the model sees: `size` on the short side (long side capped, mmcv's rounding) or square."""
    if resize == "square":
        return size, size
    scale = min(max(MAX_LONG_SIDE, size) / max(h, w), size / min(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5)


def preprocess(rgb: np.ndarray, size: int, resize: str, mean, std) -> np.ndarray:
    """H x W x 3 uint8 -> 3 x H' x W' float32 (mean/std: the checkpoint's, on the 0-1 scale)."""
    th, tw = target_size(*rgb.shape[:2], size, resize)
    if (th, tw) != rgb.shape[:2]:
        rgb = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_LINEAR)
    x = (rgb.astype(np.float32) - np.float32(255) * np.asarray(mean, np.float32)) / (
        np.float32(255) * np.asarray(std, np.float32))
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_torch(frame: torch.Tensor, size: int, resize: str, mean255: torch.Tensor,
                     std255: torch.Tensor) -> torch.Tensor:
    """The tensor face's `preprocess` on the frame's device (bilinear, rounded to 8-bit levels like OpenCV's
    uint8 output; within one level of it). mean255/std255: [3] on the 0-255 scale."""
    th, tw = target_size(frame.shape[0], frame.shape[1], size, resize)
    x = frame.permute(2, 0, 1)[None].float()
    if (th, tw) != tuple(frame.shape[:2]):
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False).round().clamp(0, 255)
    return (x[0] - mean255[:, None, None]) / std255[:, None, None]
