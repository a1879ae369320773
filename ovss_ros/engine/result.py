"""What a segmentation call returns, the same for both methods: `SegmentationResult` from the numpy face
(`segment`, `segment_batch`), `TensorResult` from the tensor face (`segment_torch*`). Same fields in the same
order, built by keyword; only where the arrays live differs. Every field's meaning is written here once.

- labels: [H, W] class ids at the frame's size: 0 = background, k = class_names[k - 1]. uint8 (numpy uint16,
  tensor int32 above 254 classes), cast on the model's device before any copy.
- class_names: the vocabulary, in label order.
- class_ids: [K] int64, the label ids of the segmented classes, ascending.
- present: [C] bool, True for the classes that were segmented (class_ids - 1 are its True indices).
- presence: [C] float32, the method's image-level evidence per class; what it is says `presence_kind`:
  "itm_probability" (PnP-OVSS: BLIP's image-text match probability of each class on its own, NaN where not
  computed, e.g. presence "all" or forced classes) or "vocabulary_softmax" (PGSeg: a softmax over the
  vocabulary of the image-level similarities, averaged over windows; it sums to 1 over the classes).
- confidence: [H, W] float32 in [0, 1] (see "Score dtype"), an estimate of the probability that the pixel's
  label is right (calibrated on held-out scenes, docs/confidence.md). None unless asked for.
- class_maps: [K, H, W] float32 in [0, 1] (see "Score dtype"), per segmented class (order of class_ids), the
  score the label is chosen from. Relative evidence, not a probability: PnP-OVSS min-max normalises each
  class per frame; PGSeg's are its group-class scores. None unless asked for.
- raw_maps: [K, h, w] float32, per segmented class, the method's maps before upsampling and post-processing:
  PnP-OVSS the accumulated Salience Dropout GradCAM maps on the model's g x g patch grid; PGSeg the stitched
  group-class scores at the model input's resolution. None unless asked for.
- timings: stage -> seconds of the call (on a GPU, without profiling, work queued rather than finished).

Score dtype: a call's `score_dtype="uint8"` (both faces, both methods) returns confidence and class_maps as
uint8 levels round(255 x) instead of float32 (the only fields whose dtype can differ), quantised on the
model's device, so a consumer that wants 8 bits (the ROS node's mono8 images) copies a quarter of the bytes.
raw_maps stay float32 (they are not in [0, 1]).

The extras cost: at full resolution they outweigh the labels (a 1080p frame with 12 classes: ~100 MB of class
maps), so a call computes only those it is asked for (`outputs=`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch

PRESENCE_KINDS = ("itm_probability", "vocabulary_softmax")


@dataclass(kw_only=True)
class _Fields:
    """The fields both results have, in this order (their meanings: the module docstring)."""
    labels: Union[np.ndarray, torch.Tensor]
    class_names: tuple
    class_ids: np.ndarray
    present: np.ndarray
    presence: np.ndarray
    presence_kind: str
    confidence: Optional[Union[np.ndarray, torch.Tensor]] = None
    class_maps: Optional[Union[np.ndarray, torch.Tensor]] = None
    raw_maps: Optional[Union[np.ndarray, torch.Tensor]] = None
    timings: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class SegmentationResult(_Fields):
    """The numpy face's result: every array on the host."""

    def summary(self) -> dict:
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names) + 1)
        total = max(1, self.labels.size)
        return {
            "classes": [
                {"id": i + 1, "name": n, "presence": None if np.isnan(p) else round(float(p), 4),
                 "segmented": bool(s), "pixel_fraction": round(float(counts[i + 1]) / total, 4)}
                for i, (n, p, s) in enumerate(zip(self.class_names, self.presence, self.present))
            ],
            "presence_kind": self.presence_kind,
            "background_fraction": round(float(counts[0]) / total, 4),
            "size": [int(self.labels.shape[1]), int(self.labels.shape[0])],
            "timings_ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
        }


@dataclass(kw_only=True)
class TensorResult(_Fields):
    """The tensor face's result: labels and extras stay on the model's device; class_ids, present and
    presence are on the host (they decided which classes were segmented)."""


@dataclass
class FrameOutput:
    """What a method's frame step hands the shared face: device tensors; the extras None unless asked for."""
    labels: torch.Tensor                         # [H, W] int64 label ids
    presence: Union[np.ndarray, torch.Tensor]    # [C], as the result's `presence`
    present: list[int]                           # vocabulary indices segmented, ascending
    confidence: Optional[torch.Tensor] = None
    class_maps: Optional[torch.Tensor] = None
    raw_maps: Optional[torch.Tensor] = None
