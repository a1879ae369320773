"""Several frames through the engine in one pass, with the fallback that keeps one bad frame from costing the
others. Shared by the node's worker (one frame per camera) and the bag tools (consecutive frames)."""
from __future__ import annotations

from typing import Collection, Sequence


def segment_each(seg, images: Sequence, outputs: Collection[str], batch_errors=(ValueError,)) -> list:
    """One entry per image, in order: its SegmentationResult, or the exception the engine raised for it.

    Uses the engine's batched path for two or more frames where it has one. When that raises one of
    `batch_errors` (the engine refuses the whole batch for one bad frame: ImageError, VocabularyError), the
    frames are redone one by one so only the bad one fails. Exceptions other than `batch_errors` propagate."""
    if len(images) > 1 and hasattr(seg, "segment_batch"):
        try:
            return list(seg.segment_batch(list(images), outputs=outputs))
        except batch_errors:
            pass
    out: list = []
    for image in images:
        try:
            out.append(seg.segment(image, outputs=outputs))
        except batch_errors as exc:
            out.append(exc)
    return out
