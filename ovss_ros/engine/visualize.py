"""Colours and overlays: a class keeps its colour across vocabulary changes and restarts."""
from __future__ import annotations

import colorsys
import hashlib
from typing import Sequence

import cv2
import numpy as np

BACKGROUND_COLOR = (0, 0, 0)


def class_color(name: str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour derived from the class name (not from its position)."""
    digest = hashlib.sha1(name.strip().lower().encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    sat = 0.65 + 0.35 * digest[2] / 255.0
    val = 0.75 + 0.25 * digest[3] / 255.0
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def palette(class_names: Sequence[str]) -> np.ndarray:
    """[C + 1, 3] uint8 lookup table: row 0 background, row k class_names[k - 1]."""
    return np.asarray([BACKGROUND_COLOR] + [class_color(n) for n in class_names], dtype=np.uint8)


def colorize(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    return palette(class_names)[labels]


def overlay(rgb: np.ndarray, labels: np.ndarray, class_names: Sequence[str], alpha: float = 0.5,
            legend: bool = True) -> np.ndarray:
    """RGB blend of the image and the coloured labels (background left as is), with a legend of the
    classes present in `labels`."""
    color = colorize(labels, class_names)
    fg = (labels > 0)[..., None]
    out = np.where(fg, (rgb * (1 - alpha) + color * alpha), rgb).astype(np.uint8)
    if legend:
        ids = [int(i) for i in np.unique(labels) if i > 0]
        draw_legend(out, [(class_names[i - 1], class_color(class_names[i - 1])) for i in ids])
    return out


def draw_legend(img: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
    """Swatches and names in the top-left corner, scaled to the image, drawn in place."""
    if not entries:
        return
    h, w = img.shape[:2]
    scale = max(0.3, min(h, w) / 600.0)
    thick = max(1, int(round(scale * 1.5)))
    row = int(22 * scale) + 4
    width = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for n, _ in entries)
    box_w = min(w, width + row + 12)
    box_h = min(h, row * len(entries) + 6)
    img[:box_h, :box_w] = (img[:box_h, :box_w] * 0.4).astype(np.uint8)
    for k, (name, col) in enumerate(entries):
        y = 4 + k * row
        cv2.rectangle(img, (4, y), (4 + row - 6, y + row - 6), tuple(int(c) for c in col), -1)
        cv2.putText(img, name, (row + 4, y + row - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thick, cv2.LINE_AA)
