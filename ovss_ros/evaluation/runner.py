"""Run a Segmenter over a dataset and accumulate both protocols' confusion matrices and presence counts."""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from .datasets import PROTOCOLS, Dataset, scored_names, to_protocol
from .metrics import ConfusionMatrix, PresenceCounter


class Accumulator:
    """Scores (gt, prediction) pairs in the segmenter's label space under every protocol."""

    def __init__(self, class_names, background_is_class: bool, protocols=PROTOCOLS):
        self.class_names = tuple(class_names)
        self.background_is_class = background_is_class
        self.protocols = tuple(protocols)
        self.cms: dict[str, ConfusionMatrix] = {}
        self.names: dict[str, list] = {}
        self.presence = PresenceCounter()

    def update(self, gt: np.ndarray, pred: np.ndarray, pred_present=None) -> None:
        n_fg = len(self.class_names)
        for p in self.protocols:
            g, q, n, bg = to_protocol(gt, pred, n_fg, p, self.background_is_class)
            if p not in self.cms:
                self.cms[p] = ConfusionMatrix(n, ignore_index=255)
                self.names[p] = scored_names(self.class_names, bg)
            self.cms[p].update(g, q)
        if pred_present is not None:
            gt_present = [int(k) - 1 for k in np.unique(gt) if 0 < k <= n_fg]
            self.presence.update(gt_present, pred_present)

    def results(self) -> dict:
        out = {p: self.cms[p].metrics(self.names[p]) for p in self.protocols if p in self.cms}
        out["presence"] = self.presence.metrics()
        return out


def evaluate(segmenter, dataset: Dataset, presence: str = "itm", progress: bool = True,
             protocols=PROTOCOLS, on_sample: Optional[Callable] = None) -> dict:
    """presence: "itm" (end to end) or "gt" (the ground-truth classes are forced: localization alone)."""
    if presence not in ("itm", "gt"):
        raise ValueError("presence must be 'itm' or 'gt'")
    segmenter.set_vocabulary(dataset.class_names)
    acc = Accumulator(dataset.class_names, dataset.background_is_class, protocols)
    n_fg = len(dataset.class_names)
    items = iter(dataset)
    if progress:
        from tqdm import tqdm
        items = tqdm(items, total=len(dataset), desc=f"ovss-eval {dataset.name}", unit="img", smoothing=0.1)
    times = []
    for sample in items:
        forced = None
        if presence == "gt":
            forced = [int(k) - 1 for k in np.unique(sample.gt) if 0 < k <= n_fg]
        t = time.perf_counter()
        if forced is not None and not forced:      # nothing to find: all background, no model call
            pred, present = np.zeros(sample.gt.shape, np.uint8), []
        else:
            res = segmenter.segment(sample.rgb, present=forced)
            pred, present = res.labels, list(np.flatnonzero(res.present))
        times.append(time.perf_counter() - t)
        acc.update(sample.gt, pred, present)
        if on_sample is not None:
            on_sample(sample, pred)
    out = acc.results()
    out["images"] = len(times)
    out["seconds_per_image"] = float(np.mean(times)) if times else float("nan")
    return out


def baselines(dataset: Dataset, seed: int = 0, protocols=PROTOCOLS) -> dict:
    """The trivial predictors: every pixel background; every pixel a uniform random label."""
    rng = np.random.default_rng(seed)
    bg = Accumulator(dataset.class_names, dataset.background_is_class, protocols)
    rnd = Accumulator(dataset.class_names, dataset.background_is_class, protocols)
    n = len(dataset.class_names)
    for s in dataset:
        bg.update(s.gt, np.zeros_like(s.gt), [])
        r = rng.integers(0 if dataset.background_is_class else 1, n + 1, s.gt.shape)
        rnd.update(s.gt, r, list(range(n)))
    return {"all_background": bg.results(), "uniform_random": rnd.results()}
