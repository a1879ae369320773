"""Short toy-world image sequences: objects drift, spin and bounce while the camera pans over the background.

Each frame is a `Scene` with exact ground truth, so a bag made from it can be scored frame by frame.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .world import SIZE, WORLDS, Scene, _background, _lighting, class_names, moved, render, sample_objects


def make_sequence(seed: int, n_frames: int = 30, world: str = "pattern", size: int = SIZE,
                  n_objects: Optional[int] = None, pan: int = 12) -> list[Scene]:
    """`n_frames` frames; the first has objects placed as in a still scene. Deterministic in `seed`."""
    rng = np.random.default_rng([seed, WORLDS.index(world), 7])
    objects = sample_objects(rng, world, size, n_objects if n_objects is not None else int(rng.integers(2, 5)))
    s = size / SIZE
    vel = [(float(np.cos(a)) * sp, float(np.sin(a)) * sp, float(rng.uniform(-4, 4)))
           for a, sp in zip(rng.uniform(0, 2 * np.pi, len(objects)), rng.uniform(1.0, 2.2, len(objects)) * s)]
    pan_px = int(round(pan * s))
    big = _background(rng, size + 2 * pan_px)        # the camera sees a moving window of a larger scene
    gain = _lighting(rng, size)
    path = rng.uniform(0, 2 * np.pi)
    names = class_names(world)
    frames = []
    for t in range(n_frames):
        phase = path + 2 * np.pi * t / max(n_frames, 1)
        ox = int(round(pan_px * (1 + np.cos(phase))))
        oy = int(round(pan_px * (1 + np.sin(phase))))
        bg = big[oy:oy + size, ox:ox + size]
        rgb, labels = render(bg, gain, objects, world, np.random.default_rng([seed, t, 11]), 3.0)
        frames.append(Scene(rgb, labels, names, list(objects), seed))
        objects, vel = _step(objects, vel, size)
    return frames


def _step(objects, vel, size):
    new_o, new_v = [], []
    for o, (dx, dy, da) in zip(objects, vel):
        lo, hi = 0.6 * o.radius, size - 0.6 * o.radius
        if not lo <= o.cx + dx <= hi:
            dx = -dx
        if not lo <= o.cy + dy <= hi:
            dy = -dy
        new_o.append(moved(o, dx, dy, da))
        new_v.append((dx, dy, da))
    return new_o, new_v
