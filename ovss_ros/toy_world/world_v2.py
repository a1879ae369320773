"""Toy world v2: the v1 vocabulary (`world.py`) seen through a camera, on cluttered backgrounds.

Same face as v1 (`Scene` with rgb / labels / classes / objects / seed, `class_names`, `make_scene`,
`heldout_scenes`, v1's held-out seeds), harder in the ways real frames are:

- 160 x 120 by default (any W x H on request), painted at 4 x 4 supersampling and area-averaged, so object
  edges are anti-aliased. Ground truth: the label covering the most of each pixel's 16 sub-pixels
  (plurality; a tie goes to the smaller label, background first).
- Backgrounds: a smooth colour field with one of several textures, plus 2-7 structures in the class
  colours (lines, groups of parallel stripes, small blobs, small striped / checked / dotted patches), each
  thin or smaller than 3 % of the frame; they are background (label 0).
- 1-4 labelled objects, classes drawn with replacement (several instances of a class happen), 0-2
  distractors at random depths whose attribute combination is outside the vocabulary (a purple / orange /
  white object, a dotted one in the pattern world, a pentagon / hexagon / diamond in a class colour in the
  shape world), labelled background (0). Each object covers 3-40 % of the frame (its unoccluded in-frame
  area, measured on a 2 x 2 supersampled grid) and keeps >= 45 % of that area visible there (labels give
  >= 40 %, tested); later objects are on top.
- The camera (`render_v2.Camera`, each effect sometimes absent): exposure, lighting gradient and
  vignetting, defocus (Gaussian), motion blur (line kernel), shot + read noise, white balance, contrast.

Same seed, same scene, bit for bit; the random stream is keyed with a version tag, so seed s in v2 is not
v1's scene s.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np

from . import render_v2 as r2
from .world import COLOURS, EXTRA_SHAPES, PATTERNS, SHAPES, WORLDS, Obj, Scene, class_names, scene_seed

__all__ = ["Obj2", "Scene2", "Camera", "class_names", "make_scene", "heldout_scenes", "scene_seed",
           "area_fraction", "sample_objects"]

Camera = r2.Camera
VERSION_TAG = 0x7632                # "v2": keys the random stream apart from v1's
SIZE = (160, 120)                   # W, H
DISTRACTOR_COLOURS = {"purple": (135, 55, 175), "orange": (240, 135, 35), "white": (235, 235, 228)}
DISTRACTOR_PATTERNS = ("dotted",)
ALL_COLOURS = {**COLOURS, **DISTRACTOR_COLOURS}
AREA_RANGE = (0.03, 0.40)           # object area / frame area
MIN_VISIBLE = 0.45
CHECK_SS = 2                        # supersampling of the grid on which area and visibility are checked
# area of a shape of radius r, in r**2 (v1's polygon scales): sizes are drawn as areas, not radii
AREA_K = {"circle": np.pi, "square": 3.125, "triangle": 2.73, "pentagon": 3.14, "hexagon": 3.14, "diamond": 2.2}


@dataclass
class Obj2(Obj):
    """A v1 object that may be a distractor and may take colours outside the vocabulary."""
    distractor: bool = False       # attribute combination outside the vocabulary: labelled background

    def rgb(self) -> np.ndarray:
        return np.clip(np.asarray(ALL_COLOURS[self.colour], np.float32) * np.asarray(self.tint, np.float32), 0, 255)

    def mask(self, w: int, h: int, ss: int) -> np.ndarray:
        return r2.shape_mask(self.shape, self.cx, self.cy, self.radius, self.angle, w, h, ss)


@dataclass
class Scene2(Scene):
    world: str = "pattern"
    camera: Camera = field(default_factory=Camera)
    clutter: list = field(default_factory=list)      # kinds of the background structures painted


def _size(size) -> tuple[int, int]:
    w, h = (size, size) if np.isscalar(size) else size
    if int(w) < 32 or int(h) < 32:
        raise ValueError(f"size must be at least 32 x 32, got {size!r}")
    return int(w), int(h)


def area_fraction(o: Obj2, size=SIZE) -> float:
    """The object's unoccluded in-frame area over the frame's, on the CHECK_SS grid."""
    w, h = _size(size)
    return float(o.mask(w, h, CHECK_SS).mean())


# -- sampling ---------------------------------------------------------------------------------------------
def _sample_object(rng: np.random.Generator, world: str, w: int, h: int, cls: Optional[str]) -> Obj2:
    any_shape, any_pattern = SHAPES + EXTRA_SHAPES, PATTERNS + DISTRACTOR_PATTERNS
    if cls is not None:
        a, b = cls.split()
        if world == "pattern":
            pattern, colour, shape = a, b, str(rng.choice(any_shape))
        else:
            colour, shape, pattern = a, b, str(rng.choice(any_pattern))
    elif rng.random() < 0.5:      # a colour outside the vocabulary, anything else
        colour, pattern, shape = str(rng.choice(list(DISTRACTOR_COLOURS))), str(rng.choice(any_pattern)), \
            str(rng.choice(any_shape))
    elif world == "pattern":      # a class colour with a pattern outside the vocabulary
        colour, pattern, shape = str(rng.choice(list(COLOURS))), "dotted", str(rng.choice(any_shape))
    else:                         # a class colour with a shape outside the vocabulary
        colour, pattern, shape = str(rng.choice(list(COLOURS))), str(rng.choice(any_pattern)), \
            str(rng.choice(EXTRA_SHAPES))
    frac = float(np.exp(rng.uniform(np.log(AREA_RANGE[0] * 1.05), np.log(AREA_RANGE[1]))))
    r = float(np.sqrt(frac * w * h / AREA_K[shape]))
    cx = float(rng.uniform(0.7 * r, w - 0.7 * r)) if w > 1.4 * r else w / 2
    cy = float(rng.uniform(0.7 * r, h - 0.7 * r)) if h > 1.4 * r else h / 2
    return Obj2(colour=colour, pattern=pattern, shape=shape, cx=cx, cy=cy, radius=r,
                angle=float(rng.uniform(0, 360)), pattern_angle=float(rng.uniform(0, 180)),
                pattern_period=float(rng.uniform(*r2.STRIPE_WIDTH)) * min(w, h) / 120,
                tint=tuple(float(v) for v in rng.uniform(0.85, 1.15, 3)),
                distractor=cls is None)


def sample_objects(rng: np.random.Generator, world: str = "pattern", size=SIZE) -> list[Obj2]:
    """1-4 labelled objects (classes with replacement) stacked in order, then 0-2 distractors slipped in at
    random depths; an object whose size or visibility cannot be met in 30 tries is dropped (the first one
    always fits)."""
    w, h = _size(size)
    names = class_names(world)
    specs = [names[int(k)] for k in rng.integers(0, len(names), int(rng.integers(1, 5)))]
    specs += [None] * int(rng.integers(0, 3))
    objects: list[Obj2] = []
    masks: list[np.ndarray] = []
    for spec in specs:
        for _attempt in range(30):
            cand = _sample_object(rng, world, w, h, spec)
            m = cand.mask(w, h, CHECK_SS)
            at = len(objects) if spec is not None else int(rng.integers(0, len(objects) + 1))
            if AREA_RANGE[0] <= m.mean() <= AREA_RANGE[1] and _visible_enough(masks[:at] + [m] + masks[at:]):
                objects.insert(at, cand)
                masks.insert(at, m)
                break
    return objects


def _visible_enough(masks: list[np.ndarray]) -> bool:
    """Every mask keeps >= MIN_VISIBLE of its area under the ones after it (later = on top)."""
    covered = np.zeros_like(masks[-1])
    for m in reversed(masks):
        if (m & ~covered).sum() < MIN_VISIBLE * m.sum():
            return False
        covered |= m
    return True


# -- the scene --------------------------------------------------------------------------------------------
def make_scene(seed: int, world: str = "pattern", size=SIZE, camera: Union[None, dict, Camera] = None,
               ss: int = r2.SS) -> Scene2:
    """Scene `seed` of `world` at size (W, H). `camera`: a Camera, or a dict of fields replacing the sampled
    ones (everything else, noise included, stays the same). `ss` = 1 renders hard edges (for comparison)."""
    w, h = _size(size)
    names = class_names(world)            # raises on an unknown world
    wi = WORLDS.index(world)
    rng = np.random.default_rng([seed, wi, VERSION_TAG])
    objects = sample_objects(rng, world, (w, h))
    img = r2.background(rng, w, h, ss)
    kinds = r2.clutter(img, rng, w, h, ss, list(COLOURS.values()))
    gain = r2.lighting(rng, w, h)
    cam = r2.sample_camera(rng)
    if isinstance(camera, Camera):
        cam = camera
    elif camera:
        cam = replace(cam, **camera)
    lab = np.zeros(img.shape[:2], np.uint8)
    for o in objects:
        label = 0 if o.distractor else names.index(o.class_name(world)) + 1
        r2.paint(img, lab, o.mask(w, h, ss), o.rgb(), o.pattern, o.pattern_angle, o.pattern_period, label, ss)
    radiance, labels = r2.downsample(img, lab, ss)
    rgb = r2.expose(radiance * gain, cam, np.random.default_rng([seed, wi, VERSION_TAG, 1]))
    return Scene2(rgb, labels, names, objects, seed, world=world, camera=cam, clutter=kinds)


def heldout_scenes(n: int, world: str = "pattern", start: int = 0, size=SIZE):
    """The fixed held-out set: v1's held-out seeds (10**9 + i), v2 scenes."""
    for i in range(start, start + n):
        yield make_scene(scene_seed("heldout", i), world, size)
