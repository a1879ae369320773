"""Bootstrap confidence intervals of mIoU over scenes.

The input is one confusion matrix per scene, [S, K, K] or [S, K, K + 1] as `ConfusionMatrix.hist` holds it
(rows ground truth). mIoU is the pooled one of metrics.py: the scenes' matrices are summed, then scored. A
resample draws S scenes with replacement; instead of summing the drawn matrices one resample at a time, the
draws become a count matrix W [R, S] (how often each scene was drawn) and all R pooled matrices are W times the
per-scene matrices in one product.

`bootstrap_miou` gives the percentile interval of one variant; `paired_difference` that of the difference
between two variants run on the same scenes, with the same draws for both, so scene-to-scene difficulty
(shared by both) cancels and a small but consistent difference shows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import mean_iou_of


@dataclass(frozen=True)
class Interval:
    estimate: float      # on all scenes, not the mean of the resamples
    low: float
    high: float
    level: float = 0.95
    resamples: int = 0

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level,
                "resamples": self.resamples, "excludes_zero": self.excludes_zero}


def _scene_matrices(cms) -> np.ndarray:
    cms = np.asarray(cms)
    if cms.ndim != 3 or cms.shape[2] not in (cms.shape[1], cms.shape[1] + 1) or cms.shape[0] < 1:
        raise ValueError(f"expected per-scene confusion matrices [S, K, K or K + 1], got shape {cms.shape}")
    return cms.astype(np.float64)


def resample_weights(n_scenes: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """[resamples, n_scenes]: row r counts how often each scene is drawn in resample r (each row sums to
    n_scenes): sampling with replacement."""
    if n_scenes < 1 or resamples < 1:
        raise ValueError(f"need at least one scene and one resample (got {n_scenes}, {resamples})")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_scenes, np.full(n_scenes, 1.0 / n_scenes), size=resamples)


def resampled_miou(cms, weights: np.ndarray) -> np.ndarray:
    """mIoU of each resample [R] for per-scene matrices `cms` and count matrix `weights` [R, S]."""
    cms = _scene_matrices(cms)
    if weights.shape[1] != cms.shape[0]:
        raise ValueError(f"weights draw from {weights.shape[1]} scenes, there are {cms.shape[0]}")
    s, k, c = cms.shape
    pooled = (weights.astype(np.float64) @ cms.reshape(s, k * c)).reshape(-1, k, c)
    return mean_iou_of(pooled)


def _interval(estimate: float, samples: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level={level}: expected a fraction in (0, 1)")
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level, int(samples.size))


def bootstrap_miou(cms, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """mIoU of the pooled scenes and its percentile bootstrap interval over scenes."""
    cms = _scene_matrices(cms)
    weights = resample_weights(cms.shape[0], resamples, seed)
    return _interval(float(mean_iou_of(cms.sum(axis=0))), resampled_miou(cms, weights), level)


def paired_difference(cms_a, cms_b, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """mIoU(b) - mIoU(a) for two variants scored on the same scenes (same order), and its paired percentile
    bootstrap interval: each resample draws the same scenes for both."""
    a, b = _scene_matrices(cms_a), _scene_matrices(cms_b)
    if a.shape != b.shape:
        raise ValueError(f"the variants' matrices differ in shape: {a.shape} vs {b.shape}")
    weights = resample_weights(a.shape[0], resamples, seed)
    diff = resampled_miou(b, weights) - resampled_miou(a, weights)
    estimate = float(mean_iou_of(b.sum(axis=0)) - mean_iou_of(a.sum(axis=0)))
    return _interval(estimate, diff, level)
