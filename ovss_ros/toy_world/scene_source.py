"""Training and held-out scenes for ovss-train-toy, from toy world v1 (`world.py`) or v2 (`world_v2.py`).

v1 scenes are cheap (about 2 ms), so every training step draws fresh ones, as the shipped v1 model was
trained. A v2 scene takes about 13 ms (4 x 4 supersampling, camera effects): 32 of them would cost about as
much as the training step itself, so `pool` pre-renders that many training scenes once, on every core, and
the steps sample batches from them (seeded). Held-out scenes are the worlds' own held-out seeds in both cases.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

import numpy as np

from . import world as world_v1
from .world import scene_seed

VERSIONS = (1, 2)


def _module(version: int):
    if version == 1:
        return world_v1
    if version == 2:
        from . import world_v2
        return world_v2
    raise ValueError(f"toy world version {version!r}: expected one of {VERSIONS}")


def make_scene(seed: int, world: str, version: int):
    """Scene `seed` of `world` at the version's default size (v1 96 x 96, v2 160 x 120)."""
    return _module(version).make_scene(seed, world)


def _render_many(args):
    seeds, world, version = args
    return [make_scene(s, world, version) for s in seeds]


class SceneSource:
    """Batches of training scenes, step by step. `pool` 0: fresh scenes every step, seeds
    (seed * 100000 + step) * batch + j (what the v1 model was trained on); `pool` N: N training scenes
    rendered once (seeds seed * 100000 * batch + i), each step a batch drawn from them without replacement."""

    def __init__(self, world: str, version: int = 1, batch: int = 32, seed: int = 0, pool: int = 0,
                 workers: Optional[int] = None):
        self.world, self.version, self.batch, self.seed = world, version, batch, seed
        self.names = _module(version).class_names(world)
        self.pool: list = []
        if pool:
            base = seed * 100_000 * batch
            seeds = [scene_seed("train", base + i) for i in range(pool)]
            n = max(1, min(workers or os.cpu_count() or 1, 8))
            chunks = [(seeds[k::n], world, version) for k in range(n)]
            with ProcessPoolExecutor(n) as ex:
                parts = list(ex.map(_render_many, chunks))
            # put back in seed order: chunk k holds seeds k, k + n, ...
            self.pool = [None] * pool
            for k, part in enumerate(parts):
                self.pool[k::n] = part
            self._rng = np.random.default_rng([seed, pool])

    def step(self, step: int) -> list:
        if self.pool:
            idx = self._rng.choice(len(self.pool), size=self.batch, replace=False)
            return [self.pool[i] for i in idx]
        return [make_scene(scene_seed("train", (self.seed * 100_000 + step) * self.batch + j), self.world,
                           self.version) for j in range(self.batch)]

    def heldout(self, n: int) -> list:
        return [make_scene(scene_seed("heldout", i), self.world, self.version) for i in range(n)]
