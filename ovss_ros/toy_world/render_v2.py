"""Painting and the camera model of toy world v2 (`world_v2.py`).

Everything is painted on a supersampled canvas (`ss` sub-pixels per output pixel and axis) and then
area-averaged, so edges are anti-aliased the way a real sensor integrates light over a pixel. Output pixel
i covers [i - 0.5, i + 0.5] (its centre is at i, as in v1); canvas pixel X covers output
[X / ss - 0.5, (X + 1) / ss - 0.5].
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .world import _polygon

# Limits that keep every pattern decidable (at 160 x 120; world_v2 scales stripe widths with the frame): a
# stripe of width p repeats every 2p px; defocus sigma s keeps exp(-2 pi^2 s^2 / (2p)^2) of its contrast and a
# motion blur of length L across the stripes |sinc(L / 2p)|. At the narrowest stripe and the strongest blurs
# about 0.3 of the contrast is left, above the noise over an object; the first cut of v2 (stripes 2.5-4 px,
# defocus to 1.8 px, motion to 7 px) left 0.02-0.08 on many scenes, so "striped red" and "plain red" were
# told apart by the labels but not by the pixels.
STRIPE_WIDTH = (3.5, 5.5)       # px at a 120-px short side
DEFOCUS_SIGMA = (0.4, 1.2)      # px
MOTION_LENGTH = (1.5, 3.0)      # px

SS = 4                       # sub-pixels per output pixel and axis


def to_canvas(v: float, ss: int) -> float:
    """An output coordinate on the canvas of supersampling ss."""
    return (v + 0.5) * ss - 0.5


def shape_mask(shape: str, cx: float, cy: float, r: float, angle: float, w: int, h: int, ss: int) -> np.ndarray:
    """bool (h*ss) x (w*ss): the canvas sub-pixels whose centres the shape covers."""
    m = np.zeros((h * ss, w * ss), np.uint8)
    x, y = to_canvas(cx, ss), to_canvas(cy, ss)
    if shape == "circle":
        cv2.circle(m, (int(round(x * 16)), int(round(y * 16))), int(round(r * ss * 16)), 1, -1, cv2.LINE_8, 4)
    else:
        cv2.fillPoly(m, [_polygon(shape, x, y, r * ss, angle)], 1, cv2.LINE_8, 4)
    return m.view(bool)


def pattern_fill(rgb, pattern: str, angle: float, period: float, ys: slice, xs: slice, ss: int) -> np.ndarray:
    """float32 colour of a pattern over the canvas window [ys, xs]; dark parts are 0.3 x the colour."""
    base = np.asarray(rgb, np.float32)
    hh, ww = ys.stop - ys.start, xs.stop - xs.start
    if pattern == "plain":
        return np.broadcast_to(base, (hh, ww, 3))
    y = (np.arange(ys.start, ys.stop, dtype=np.float32) + 0.5) / ss - 0.5
    x = (np.arange(xs.start, xs.stop, dtype=np.float32) + 0.5) / ss - 0.5
    a = np.deg2rad(angle)
    u = (x[None, :] * np.float32(np.cos(a) / period) + y[:, None] * np.float32(np.sin(a) / period))
    if pattern == "striped":
        on = np.floor(u).astype(np.int32) & 1
    else:
        v = (x[None, :] * np.float32(-np.sin(a) / period) + y[:, None] * np.float32(np.cos(a) / period))
        if pattern == "checked":
            on = (np.floor(u).astype(np.int32) + np.floor(v).astype(np.int32)) & 1
        elif pattern == "dotted":       # dark dots of radius 0.3 periods on a square lattice
            u -= np.floor(u) + np.float32(0.5)
            v -= np.floor(v) + np.float32(0.5)
            on = u * u + v * v < np.float32(0.09)
        else:
            raise ValueError(f"unknown pattern {pattern!r}")
    shade = np.where(on, np.float32(0.3), np.float32(1.0))
    return shade[..., None] * base


def paint(img: np.ndarray, lab, mask: np.ndarray, rgb, pattern: str, angle: float, period: float,
          label: int, ss: int) -> None:
    """Paint a patterned region over the canvas (img float32 x 3; lab uint8 or None) in place."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    if w == 0 or h == 0:
        return
    ys, xs = slice(y, y + h), slice(x, x + w)
    m = mask[ys, xs]
    np.copyto(img[ys, xs], pattern_fill(rgb, pattern, angle, period, ys, xs, ss), where=m[..., None])
    if lab is not None:
        np.copyto(lab[ys, xs], np.uint8(label), where=m)


def downsample(img: np.ndarray, lab: np.ndarray, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average the canvas -> (float32 H x W x 3, labels uint8). A pixel's label is the one covering the
    most of its ss x ss sub-pixels (plurality); a tie goes to the smaller label (background first)."""
    h, w = lab.shape[0] // ss, lab.shape[1] // ss
    if ss == 1:
        return img.copy(), lab.copy()
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    labels = np.zeros((h, w), np.uint8)
    best = np.full((h, w), -1.0, np.float32)
    for v in np.flatnonzero(np.bincount(lab.ravel(), minlength=1)):
        share = cv2.resize((lab == v).view(np.uint8).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        win = share > best
        labels[win] = v
        best[win] = share[win]
    return out, labels


# -- background ------------------------------------------------------------------------------------------
def background(rng: np.random.Generator, w: int, h: int, ss: int) -> np.ndarray:
    """float32 canvas: a smooth desaturated colour field plus one of {nothing, blotches, grid, grain, speckle}."""
    W, H = w * ss, h * ss
    coarse = rng.uniform(40, 215, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    grey = coarse.mean(axis=2, keepdims=True)
    coarse = grey + (coarse - grey) * rng.uniform(0.15, 0.6)
    bg = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
    texture, amp = int(rng.integers(0, 5)), float(rng.uniform(5, 18))
    if texture == 1:      # blotches
        blot = rng.normal(0, 1, (max(2, h // 6), max(2, w // 6))).astype(np.float32)
        bg += cv2.resize(blot, (W, H), interpolation=cv2.INTER_LINEAR)[..., None] * amp
    elif texture == 2:    # tiles
        step = int(rng.integers(7, 16)) * ss
        bg[::step] += amp * 2
        bg[:, ::step] += amp * 2
    elif texture == 3:    # grain
        a = rng.uniform(0, np.pi)
        x, y = np.arange(W, dtype=np.float32) / ss, np.arange(H, dtype=np.float32) / ss
        phase = (x[None, :] * np.cos(a) + y[:, None] * np.sin(a)) / rng.uniform(1.5, 4)
        bg += np.sin(phase + rng.uniform(0, 6))[..., None] * amp * 0.6
    elif texture == 4:    # speckle at output resolution (gravel, carpet)
        speck = rng.normal(0, 1, (h, w)).astype(np.float32)
        bg += cv2.resize(speck, (W, H), interpolation=cv2.INTER_NEAREST)[..., None] * amp * 0.5
    return bg


def clutter(bg: np.ndarray, rng: np.random.Generator, w: int, h: int, ss: int, colours: list) -> list[str]:
    """Paint 2-7 non-object structures in the given (class) colours: lines, groups of parallel stripes, small
    blobs, small patterned patches; each smaller than 3 % of the frame or thin. Returns their kinds."""
    kinds = []
    scratch = np.zeros(bg.shape[:2], np.uint8)
    for _ in range(int(rng.integers(2, 8))):
        kind = ("line", "stripes", "blob", "patch")[int(rng.integers(0, 4))]
        rgb = np.asarray(colours[int(rng.integers(0, len(colours)))], np.float32) * rng.uniform(0.85, 1.15, 3)
        col = tuple(float(c) for c in np.clip(rgb, 0, 255))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        a = rng.uniform(0, np.pi)
        d = np.array([np.cos(a), np.sin(a)])
        if kind in ("line", "stripes"):
            n = 1 if kind == "line" else int(rng.integers(3, 7))
            length, gap = rng.uniform(15, 0.8 * max(w, h)), rng.uniform(2.5, 5.0)
            thick = max(1, int(round(rng.uniform(0.6, 1.6 if kind == "line" else 0.45 * gap) * ss)))
            for k in range(n):
                c = np.array([cx, cy]) + np.array([-d[1], d[0]]) * gap * k
                p1, p2 = c - d * length / 2, c + d * length / 2
                cv2.line(bg, _fixed(p1, ss), _fixed(p2, ss), col, thick, cv2.LINE_8, 4)
        elif kind == "blob":
            for _k in range(int(rng.integers(1, 4))):
                ox, oy = rng.uniform(-4, 4, 2)
                axes = (int(rng.uniform(2, 6) * ss * 16), int(rng.uniform(1.5, 5) * ss * 16))
                cv2.ellipse(bg, _fixed((cx + ox, cy + oy), ss), axes, float(rng.uniform(0, 180)), 0, 360, col,
                            -1, cv2.LINE_8, 4)
        else:
            scratch[:] = 0
            pw, ph = rng.uniform(6, 14), rng.uniform(5, 11)
            box = cv2.boxPoints(((to_canvas(cx, ss), to_canvas(cy, ss)), (pw * ss, ph * ss), np.rad2deg(a)))
            cv2.fillPoly(scratch, [np.round(box * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
            pattern = ("striped", "checked", "dotted")[int(rng.integers(0, 3))]
            paint(bg, None, scratch.view(bool), col, pattern, np.rad2deg(a), rng.uniform(*STRIPE_WIDTH), 0, ss)
        kinds.append(kind)
    return kinds


def _fixed(p, ss: int) -> tuple[int, int]:
    return int(round(to_canvas(p[0], ss) * 16)), int(round(to_canvas(p[1], ss) * 16))


def lighting(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Per-pixel gain H x W x 1: a lamp to one side (linear gradient up to +-25 %) times lens vignetting."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = x / max(w, h) - 0.5 * w / max(w, h), y / max(w, h) - 0.5 * h / max(w, h)
    a = rng.uniform(0, 2 * np.pi)
    grad = 1 + rng.uniform(0, 0.5) * (x * np.cos(a) + y * np.sin(a))
    vignette = 1 - rng.uniform(0, 0.8) * (x * x + y * y)
    return (grad * vignette)[..., None]


# -- camera ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    """What the camera does to the light; the defaults do nothing."""
    defocus_sigma: float = 0.0          # Gaussian blur, output px (0: in focus)
    motion_length: float = 0.0          # line-kernel blur, output px (0: still)
    motion_angle: float = 0.0           # degrees
    shot: float = 0.0                   # noise variance per unit of signal (photon noise)
    read: float = 0.0                   # noise std independent of the signal
    exposure: float = 1.0               # brightness gain
    contrast: float = 1.0               # slope about mid-grey (128)
    white_balance: tuple = (1.0, 1.0, 1.0)   # per-channel gain


def sample_camera(rng: np.random.Generator) -> Camera:
    """Each effect is absent with some probability; the same number of draws either way."""
    def maybe(p_none: float, lo: float, hi: float, off: float = 0.0) -> float:
        skip, v = rng.random() < p_none, float(rng.uniform(lo, hi))
        return off if skip else v
    wb_skip, wb = rng.random() < 0.3, tuple(float(g) for g in rng.uniform(0.8, 1.25, 3))
    return Camera(defocus_sigma=maybe(0.4, *DEFOCUS_SIGMA), motion_length=maybe(0.5, *MOTION_LENGTH),
                  motion_angle=float(rng.uniform(0, 180)), shot=maybe(0.2, 0.1, 1.0), read=maybe(0.3, 0.5, 4.0),
                  exposure=maybe(0.3, 0.6, 1.4, 1.0), contrast=maybe(0.3, 0.65, 1.35, 1.0),
                  white_balance=(1.0, 1.0, 1.0) if wb_skip else wb)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    size = int(np.ceil(length)) // 2 * 2 + 3
    k = np.zeros((size, size), np.float32)
    c, d = (size - 1) / 2, np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))]) * length / 2
    p1, p2 = (np.array([c, c]) - d) * 16, (np.array([c, c]) + d) * 16
    cv2.line(k, tuple(int(round(v)) for v in p1), tuple(int(round(v)) for v in p2), 1.0, 1, cv2.LINE_AA, 4)
    return k / k.sum()


def expose(img: np.ndarray, cam: Camera, noise_rng: np.random.Generator) -> np.ndarray:
    """Scene radiance (float32 H x W x 3, 0-255 scale) -> uint8 frame: exposure, optics, sensor noise, then
    the processing (white balance, contrast) and quantisation."""
    x = img * np.float32(cam.exposure)
    if cam.defocus_sigma > 0:
        x = cv2.GaussianBlur(x, (0, 0), cam.defocus_sigma, borderType=cv2.BORDER_REFLECT)
    if cam.motion_length > 0:
        x = cv2.filter2D(x, -1, motion_kernel(cam.motion_length, cam.motion_angle), borderType=cv2.BORDER_REFLECT)
    if cam.shot > 0 or cam.read > 0:
        std = np.sqrt(np.maximum(x, 0) * np.float32(cam.shot) + np.float32(cam.read) ** 2)
        x = x + noise_rng.standard_normal(x.shape, dtype=np.float32) * std
    x = x * np.asarray(cam.white_balance, np.float32)
    x = 128 + (x - 128) * np.float32(cam.contrast)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
