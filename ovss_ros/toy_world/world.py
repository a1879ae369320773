"""Deterministic synthetic scenes with exact per-pixel ground truth.

A scene is a textured, unevenly lit background with 1-4 filled objects. Each object has a colour, a
fill pattern and a shape; a *world* decides which two attributes name the class:

- "pattern" (default): "<pattern> <colour>", e.g. "striped red" (3 x 4 = 12 classes; the shape varies
  freely and is not part of the name),
- "shape" (compositional stretch): "<colour> <shape>", e.g. "blue triangle" (4 x 3 = 12 classes; the
  pattern varies freely).

Same seed, same scene, bit for bit. Labels: 0 = background, k = classes[k - 1]; later objects occlude
earlier ones and the label map says so exactly (rendering is hard-edged, no anti-aliasing).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import cv2
import numpy as np

COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (45, 80, 215), "yellow": (225, 200, 40)}
PATTERNS = ("plain", "striped", "checked")
SHAPES = ("circle", "square", "triangle")
EXTRA_SHAPES = ("pentagon", "hexagon", "diamond")   # only where shape is not part of the class name
WORLDS = ("pattern", "shape")
SIZE = 96                                           # the tiny model's native input
HELDOUT_OFFSET = 1_000_000_000                      # held-out scene seeds never collide with training seeds


def class_names(world: str = "pattern") -> tuple[str, ...]:
    if world == "pattern":
        return tuple(f"{p} {c}" for p in PATTERNS for c in COLOURS)
    if world == "shape":
        return tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
    raise ValueError(f"unknown world {world!r}: expected one of {WORLDS}")


def vocabulary_words(world: str = "pattern") -> list[str]:
    """Every word the tokenizer must know for this world (both worlds, so one tokenizer fits all)."""
    return [*COLOURS, *PATTERNS, *SHAPES, *EXTRA_SHAPES]


def scene_seed(split: str, index: int) -> int:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    return index + (HELDOUT_OFFSET if split == "heldout" else 0)


@dataclass
class Obj:
    colour: str
    pattern: str
    shape: str
    cx: float
    cy: float
    radius: float
    angle: float                 # degrees
    pattern_angle: float
    pattern_period: float
    tint: tuple = (1.0, 1.0, 1.0)

    def class_name(self, world: str) -> str:
        return f"{self.pattern} {self.colour}" if world == "pattern" else f"{self.colour} {self.shape}"


@dataclass
class Scene:
    rgb: np.ndarray              # H x W x 3 uint8
    labels: np.ndarray           # H x W uint8, 0 = background
    classes: tuple               # the world's vocabulary, label k = classes[k - 1]
    objects: list = field(default_factory=list)
    seed: int = 0

    @property
    def present(self) -> list[int]:
        """0-based indices of the classes with at least one visible pixel."""
        return [int(k) - 1 for k in np.unique(self.labels) if k > 0]

    @property
    def present_names(self) -> list[str]:
        return [self.classes[i] for i in self.present]


# -- drawing ---------------------------------------------------------------------------------------
def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    sides = {"square": 4, "triangle": 3, "pentagon": 5, "hexagon": 6, "diamond": 4}[shape]
    # roughly equal areas, so no shape is systematically tiny
    scale = {"square": 1.25, "triangle": 1.45, "pentagon": 1.15, "hexagon": 1.1, "diamond": 1.3}[shape]
    t = np.arange(sides) * 2 * np.pi / sides + (np.pi / 4 if shape == "square" else 0.0)
    pts = np.stack([np.cos(t), np.sin(t)], axis=1) * r * scale
    if shape == "diamond":
        pts[:, 0] *= 0.65
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    xy = pts @ np.array([[c, s], [-s, c]]) + (cx, cy)
    return np.round(xy * 16).astype(np.int32)   # 4 fractional bits: sub-pixel placement


def object_mask(o: Obj, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    if o.shape == "circle":
        cv2.circle(mask, (int(round(o.cx * 16)), int(round(o.cy * 16))), int(round(o.radius * 16)), 1, -1,
                   lineType=cv2.LINE_8, shift=4)
    else:
        cv2.fillPoly(mask, [_polygon(o.shape, o.cx, o.cy, o.radius, o.angle)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _pattern_fill(o: Obj, size: int) -> np.ndarray:
    """H x W x 3 float colour of the object's fill (used only under its mask)."""
    base = np.clip(np.asarray(COLOURS[o.colour], np.float32) * np.asarray(o.tint, np.float32), 0, 255)
    dark = base * 0.3
    out = np.empty((size, size, 3), np.float32)
    out[:] = base
    if o.pattern == "plain":
        return out
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = np.deg2rad(o.pattern_angle)
    u = (xx * np.cos(a) + yy * np.sin(a)) / o.pattern_period
    if o.pattern == "striped":
        on = (np.floor(u) % 2) == 1
    else:   # checked: two perpendicular stripe sets, XOR
        v = (-xx * np.sin(a) + yy * np.cos(a)) / o.pattern_period
        on = ((np.floor(u) + np.floor(v)) % 2) == 1
    out[on] = dark
    return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth, desaturated colour field + one of several textures + a few thin lines."""
    coarse = rng.uniform(50, 210, (rng.integers(2, 5), rng.integers(2, 5), 3)).astype(np.float32)
    grey = coarse.mean(axis=2, keepdims=True)
    coarse = grey + (coarse - grey) * rng.uniform(0.2, 0.6)          # never as saturated as an object
    bg = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    texture = rng.integers(0, 4)
    if texture == 1:        # blotchy noise
        blot = cv2.resize(rng.normal(0, 1, (size // 6, size // 6)).astype(np.float32), (size, size),
                          interpolation=cv2.INTER_LINEAR)
        bg += blot[..., None] * rng.uniform(6, 16)
    elif texture == 2:      # faint grid, like tiles or a fence
        step = int(rng.integers(7, 15))
        g = np.zeros((size, size), np.float32)
        g[::step, :] = 1
        g[:, ::step] = 1
        bg += g[..., None] * rng.uniform(-30, 30)
    elif texture == 3:      # wood-like grain
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        a = rng.uniform(0, np.pi)
        grain = np.sin((xx * np.cos(a) + yy * np.sin(a)) / rng.uniform(1.5, 4) + rng.uniform(0, 6))
        bg += grain[..., None] * rng.uniform(4, 10)
    for _ in range(rng.integers(0, 5)):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        shade = float(rng.uniform(30, 220))
        cv2.line(bg, p1, p2, (shade, shade, shade), 1)
    return bg


def _lighting(rng: np.random.Generator, size: int) -> np.ndarray:
    """A per-pixel gain: global brightness times a linear gradient (a lamp to one side)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    a = rng.uniform(0, 2 * np.pi)
    grad = 1 + rng.uniform(0, 0.4) * (xx * np.cos(a) + yy * np.sin(a))
    return (rng.uniform(0.75, 1.2) * grad)[..., None]


def render(background: np.ndarray, gain: np.ndarray, objects: list[Obj], world: str,
           noise_rng: np.random.Generator, noise_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint objects in order over the background -> (rgb uint8, labels uint8)."""
    size = background.shape[0]
    names = class_names(world)
    img = background.copy()
    labels = np.zeros((size, size), np.uint8)
    for o in objects:
        m = object_mask(o, size)
        img[m] = _pattern_fill(o, size)[m]
        labels[m] = names.index(o.class_name(world)) + 1
    img = img * gain + noise_rng.normal(0, noise_sigma, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), labels


# -- sampling --------------------------------------------------------------------------------------
def _sample_object(rng: np.random.Generator, world: str, size: int, cls: str) -> Obj:
    a, b = cls.split()
    if world == "pattern":
        pattern, colour, shape = a, b, str(rng.choice(SHAPES + EXTRA_SHAPES))
    else:
        colour, shape, pattern = a, b, str(rng.choice(PATTERNS))
    s = size / SIZE
    r = float(rng.uniform(10, 20)) * s
    return Obj(colour=colour, pattern=pattern, shape=shape,
               cx=float(rng.uniform(0.6 * r, size - 0.6 * r)), cy=float(rng.uniform(0.6 * r, size - 0.6 * r)),
               radius=r, angle=float(rng.uniform(0, 360)), pattern_angle=float(rng.uniform(0, 180)),
               pattern_period=float(rng.uniform(2.5, 4.0)) * max(1.0, s),
               tint=tuple(float(v) for v in rng.uniform(0.85, 1.15, 3)))


def sample_objects(rng: np.random.Generator, world: str = "pattern", size: int = SIZE,
                   n_objects: Optional[int] = None, min_visible: float = 0.5) -> list[Obj]:
    """1-4 objects of distinct classes; overlaps allowed while each keeps >= min_visible of its area."""
    names = class_names(world)
    n = int(n_objects if n_objects is not None else rng.integers(1, 5))
    chosen = rng.choice(len(names), size=n, replace=False)
    objects: list[Obj] = []
    for k in chosen:
        for _attempt in range(30):
            cand = _sample_object(rng, world, size, names[k])
            if _visible_enough(objects + [cand], size, min_visible):
                objects.append(cand)
                break
    return objects


def _visible_enough(objects: list[Obj], size: int, min_visible: float) -> bool:
    covered = np.zeros((size, size), bool)
    for o in reversed(objects):            # later objects are on top
        m = object_mask(o, size)
        full = m.sum()
        if full == 0 or (m & ~covered).sum() < min_visible * full:
            return False
        covered |= m
    return True


def make_scene(seed: int, world: str = "pattern", size: int = SIZE, n_objects: Optional[int] = None) -> Scene:
    rng = np.random.default_rng([seed, WORLDS.index(world)])
    objects = sample_objects(rng, world, size, n_objects)
    bg, gain = _background(rng, size), _lighting(rng, size)
    rgb, labels = render(bg, gain, objects, world, rng, float(rng.uniform(0, 6)))
    return Scene(rgb, labels, class_names(world), objects, seed)


def heldout_scenes(n: int, world: str = "pattern", start: int = 0):
    """The fixed held-out set used for every reported figure."""
    for i in range(start, start + n):
        yield make_scene(scene_seed("heldout", i), world)


def moved(o: Obj, dx: float, dy: float, dangle: float) -> Obj:
    return replace(o, cx=o.cx + dx, cy=o.cy + dy, angle=o.angle + dangle)
