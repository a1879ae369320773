"""Confusion-matrix metrics and class-presence precision/recall.

Predictions outside [0, n_classes) (e.g. "background" where background is not a scored class) land in an
extra column: they count as misses of the true class and as nobody's false positive.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def iou_of(hist: np.ndarray) -> np.ndarray:
    """Per-class IoU of confusion matrices [..., K, K or K + 1] (rows ground truth; an extra column holds the
    out-of-range predictions): [..., K], NaN for classes with no ground-truth pixel. Stacked matrices (e.g.
    bootstrap resamples) are scored in one call."""
    hist = np.asarray(hist)
    k = hist.shape[-2]
    tp = np.diagonal(hist[..., :k], axis1=-2, axis2=-1).astype(np.float64)
    gt = hist.sum(axis=-1)
    pred = hist[..., :k].sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt + pred - tp)
    return np.where(gt == 0, np.nan, iou)


def mean_iou_of(hist: np.ndarray) -> np.ndarray:
    """mIoU of confusion matrices [..., K, K or K + 1]: the mean over classes with ground truth ([...]; NaN
    where no class has any)."""
    iou = iou_of(hist)
    valid = ~np.isnan(iou)
    n = valid.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, np.where(valid, iou, 0.0).sum(axis=-1) / n, np.nan)


class ConfusionMatrix:
    def __init__(self, n_classes: int, ignore_index: Optional[int] = 255):
        self.n = int(n_classes)
        self.ignore_index = ignore_index
        self.hist = np.zeros((self.n, self.n + 1), dtype=np.int64)   # rows: ground truth, cols: prediction

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        keep = (gt >= 0) & (gt < self.n)
        if self.ignore_index is not None:
            keep &= gt != self.ignore_index
        gt, pred = gt[keep], pred[keep]
        pred = np.where((pred >= 0) & (pred < self.n), pred, self.n)
        self.hist += np.bincount(gt * (self.n + 1) + pred, minlength=self.n * (self.n + 1)).reshape(self.n, self.n + 1)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.hist += other.hist

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes with no ground-truth pixel (they do not enter the mean)."""
        return iou_of(self.hist)

    def metrics(self, class_names: Optional[Sequence[str]] = None) -> dict:
        iou = self.iou()
        gt = self.hist.sum(axis=1)
        tp = np.diag(self.hist[:, :self.n])
        total = gt.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
        valid = gt > 0
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.n)]
        return {
            "mIoU": float(np.nanmean(iou)) if valid.any() else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "mean_accuracy": float(np.nanmean(acc)) if valid.any() else float("nan"),
            "fwIoU": float(np.nansum(gt / max(total, 1) * np.nan_to_num(iou))) if total else float("nan"),
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
            "pixels": int(total),
            "classes_with_gt": int(valid.sum()),
        }


class PresenceCounter:
    """Micro-averaged precision/recall of the set of classes said to be present, per image."""

    def __init__(self):
        self.tp = self.fp = self.fn = 0
        self.images = 0

    def update(self, gt_present: Sequence[int], pred_present: Sequence[int]) -> None:
        g, p = set(int(i) for i in gt_present), set(int(i) for i in pred_present)
        self.tp += len(g & p)
        self.fp += len(p - g)
        self.fn += len(g - p)
        self.images += 1

    def metrics(self) -> dict:
        prec = self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")
        rec = self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")
        f1 = 2 * prec * rec / (prec + rec) if prec + rec and not np.isnan(prec + rec) else float("nan")
        return {"precision": prec, "recall": rec, "f1": f1, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "images": self.images}
