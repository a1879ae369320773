"""Calibration of a per-pixel confidence: does a pixel with confidence c carry a right label a fraction c of
the time?

`ReliabilityTable` accumulates (confidence, correct) pairs over frames into equal-width confidence bins
([0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]; 1.0 falls in the last bin) and reports, per bin, the pixel count, the
mean confidence and the accuracy, plus the expected calibration error

    ECE = sum over bins of (pixels in bin / all pixels) * |accuracy(bin) - mean confidence(bin)|

Only sums are kept (count, sum of confidence, number right per bin), so any number of frames costs the same
memory and tables from several runs add up.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

VOID = 255


class ReliabilityTable:
    def __init__(self, bins: int = 10):
        if bins < 1:
            raise ValueError(f"bins={bins}: expected at least 1")
        self.bins = bins
        self.count = np.zeros(bins, np.int64)
        self.conf_sum = np.zeros(bins, np.float64)
        self.right = np.zeros(bins, np.int64)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """One batch of pixels: `confidence` in [0, 1], `correct` bool, same shape."""
        conf = np.asarray(confidence, np.float64).ravel()
        ok = np.asarray(correct, bool).ravel()
        if conf.shape != ok.shape:
            raise ValueError(f"confidence has {conf.size} values, correct has {ok.size}")
        if conf.size and (not np.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1):
            raise ValueError("confidence must be finite and in [0, 1]")
        idx = np.minimum((conf * self.bins).astype(np.int64), self.bins - 1)
        self.count += np.bincount(idx, minlength=self.bins)
        self.conf_sum += np.bincount(idx, weights=conf, minlength=self.bins)
        self.right += np.bincount(idx, weights=ok, minlength=self.bins).astype(np.int64)

    def add_frame(self, confidence: np.ndarray, labels: np.ndarray, gt: np.ndarray,
                  ignore_index: Optional[int] = VOID) -> None:
        """A labelled frame: a pixel is right where its label equals the ground truth; `ignore_index` pixels
        of the ground truth are left out."""
        if confidence.shape != labels.shape or labels.shape != gt.shape:
            raise ValueError(f"shapes differ: confidence {confidence.shape}, labels {labels.shape}, gt {gt.shape}")
        keep = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
        self.add(confidence[keep], labels[keep].astype(np.int64) == gt[keep].astype(np.int64))

    def merge(self, other: "ReliabilityTable") -> "ReliabilityTable":
        if other.bins != self.bins:
            raise ValueError(f"cannot merge {other.bins} bins into {self.bins}")
        self.count += other.count
        self.conf_sum += other.conf_sum
        self.right += other.right
        return self

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def mean_confidence(self) -> np.ndarray:
        """Per bin; NaN where the bin is empty."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.conf_sum / np.maximum(self.count, 1), np.nan)

    def accuracy(self) -> np.ndarray:
        """Per bin; NaN where the bin is empty."""
        return np.where(self.count > 0, self.right / np.maximum(self.count, 1), np.nan)

    def ece(self) -> float:
        if self.total == 0:
            return float("nan")
        n = self.count > 0
        gap = np.abs(self.accuracy()[n] - self.mean_confidence()[n])
        return float((self.count[n] / self.total * gap).sum())

    def overall_accuracy(self) -> float:
        return float(self.right.sum() / self.total) if self.total else float("nan")

    def rises(self, min_fraction: float = 0.01, slack: float = 0.0) -> bool:
        """Accuracy non-decreasing (within `slack`) over the bins holding at least `min_fraction` of the
        pixels: higher confidence never means a clearly worse label."""
        acc = self.accuracy()[self.count >= max(1, min_fraction * self.total)]
        return bool(np.all(np.diff(acc) >= -slack))

    def to_dict(self) -> dict:
        edges = np.linspace(0, 1, self.bins + 1)
        mean, acc = self.mean_confidence(), self.accuracy()
        rows = [{"bin": [round(float(edges[i]), 3), round(float(edges[i + 1]), 3)], "pixels": int(self.count[i]),
                 "mean_confidence": None if np.isnan(mean[i]) else round(float(mean[i]), 4),
                 "accuracy": None if np.isnan(acc[i]) else round(float(acc[i]), 4)} for i in range(self.bins)]
        return {"pixels": self.total, "accuracy": round(self.overall_accuracy(), 4), "ece": round(self.ece(), 4),
                "mean_confidence": round(float(self.conf_sum.sum() / max(self.total, 1)), 4), "bins": rows}

    def markdown(self) -> str:
        lines = ["| confidence | pixels | mean confidence | accuracy |", "| --- | ---: | ---: | ---: |"]
        for r in self.to_dict()["bins"]:
            lo, hi = r["bin"]
            mean = "–" if r["mean_confidence"] is None else f"{r['mean_confidence']:.3f}"
            acc = "–" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
            lines.append(f"| {lo:.1f}–{hi:.1f} | {r['pixels']} | {mean} | {acc} |")
        return "\n".join(lines)


# Search grids of fit_confidence_temperatures: 1 (the model's own probabilities) and softer, log-spaced.
CLASS_TEMPERATURES = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
ASSIGNMENT_TEMPERATURES = (1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0)


def fit_confidence_temperatures(segmenter, frames, class_temperatures=CLASS_TEMPERATURES,
                                assignment_temperatures=ASSIGNMENT_TEMPERATURES, bins: int = 10,
                                ignore_index: Optional[int] = VOID) -> dict:
    """Post-hoc temperature scaling of a PGSeg model's confidence (docs/confidence.md): the (T_class, T_assign)
    of the grid whose confidence has the lowest ECE over labelled `frames` ((rgb, ground truth) pairs, labels
    as the segmenter's: 0 background, i + 1 the vocabulary's i-th class). One encoder pass per frame; labels do
    not depend on the temperatures. Fit on frames kept apart from those you measure on.

    Returns {"temperatures": (T_class, T_assign), "ece": best ECE, "grid": {"T_class,T_assign": ECE}}; write
    the pair into the checkpoint's config.json as `confidence_temperature` and
    `confidence_assignment_temperature` (write_confidence_temperatures) so that every load uses it."""
    combos = [(float(a), float(b)) for a in class_temperatures for b in assignment_temperatures]
    if not combos:
        raise ValueError("empty temperature grid")
    tables = [ReliabilityTable(bins) for _ in combos]
    n = 0
    for rgb, gt in frames:
        labels, confs = segmenter.confidence_sweep(rgb, combos)
        for table, conf in zip(tables, confs):
            table.add_frame(conf, labels, gt, ignore_index)
        n += 1
    if n == 0:
        raise ValueError("no labelled frames to fit on")
    eces = [t.ece() for t in tables]
    best = int(np.nanargmin(eces))
    return {"temperatures": combos[best], "ece": eces[best], "frames": n,
            "grid": {f"{a:g},{b:g}": round(e, 4) for (a, b), e in zip(combos, eces)}}


def write_confidence_temperatures(model_dir, temperatures: tuple[float, float]) -> None:
    """Store (T_class, T_assign) in a PGSeg checkpoint folder's config.json (other fields untouched)."""
    import json
    from pathlib import Path

    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text())
    cfg["confidence_temperature"], cfg["confidence_assignment_temperature"] = (float(t) for t in temperatures)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
