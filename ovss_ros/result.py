"""What one segmentation call returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch


@dataclass
class SegmentationResult:
    labels: np.ndarray            # H x W, uint8 (uint16 above 254 classes); 0 = background, k = class_names[k-1]
    class_names: tuple            # the vocabulary, in label order
    presence: np.ndarray          # [C] ITM match probability per class (NaN where not computed)
    present: np.ndarray           # [C] bool: the classes that were segmented
    class_ids: np.ndarray         # [K] label ids of the segmented classes
    # The extras below are None unless asked for (`segment(..., outputs=...)`): at full resolution they cost
    # more than the labels themselves (a 1080p frame with 12 classes: ~100 MB of class maps).
    # [K, H, W] float32 in [0, 1], per segmented class: the score the label is chosen from (the label is the
    # best of background and these, after DenseCRF where it runs). Relative evidence, not a probability:
    # PnP-OVSS min-max normalises each class per frame (1 = the class's strongest evidence in this frame);
    # PGSeg's are its Q x P group-class scores. For a probability use `confidence`.
    class_maps: Optional[np.ndarray] = None
    # H x W float32 in [0, 1]: an estimate of the probability that the pixel's label is right (calibrated on
    # held-out scenes, docs/confidence.md). PnP-OVSS: the label's share of the post-processed evidence, pooled
    # with its DenseCRF marginal where the CRF runs, times the class's ITM presence probability; PGSeg: the
    # label's probability under the soft pixel-to-group assignment mixed with the groups' label probabilities.
    confidence: Optional[np.ndarray] = None
    timings: dict = field(default_factory=dict)   # stage -> seconds
    # [K, g, g] float32 per segmented class (ids in class_ids), g = the model's patch grid side: the
    # accumulated Salience Dropout GradCAM maps before threshold, upsampling and post-processing
    raw_maps: Optional[np.ndarray] = None

    def summary(self) -> dict:
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names) + 1)
        total = max(1, self.labels.size)
        return {
            "classes": [
                {"id": i + 1, "name": n, "presence": None if np.isnan(p) else round(float(p), 4),
                 "segmented": bool(s), "pixel_fraction": round(float(counts[i + 1]) / total, 4)}
                for i, (n, p, s) in enumerate(zip(self.class_names, self.presence, self.present))
            ],
            "background_fraction": round(float(counts[0]) / total, 4),
            "size": [int(self.labels.shape[1]), int(self.labels.shape[0])],
            "timings_ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
        }


@dataclass
class TensorResult:
    """What the tensor face (Segmenter.segment_torch) returns: tensors on the model's device."""
    labels: torch.Tensor        # [H, W] uint8 (int32 above 254 classes); ids as in SegmentationResult
    class_names: tuple
    presence: np.ndarray          # [C] on the host: it was needed there to choose the classes
    present: list                 # vocabulary indices that were segmented, ascending
    confidence: Optional[torch.Tensor] = None   # [H, W] float32, when asked for; meaning as SegmentationResult's
    class_maps: Optional[torch.Tensor] = None   # [K, H, W] float32, when asked for; meaning as SegmentationResult's
    raw_maps: Optional[torch.Tensor] = None     # [K, g, g] float32, when asked for
    timings: dict = field(default_factory=dict)
