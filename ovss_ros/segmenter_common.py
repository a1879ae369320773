"""What both segmenters (PnP-OVSS `Segmenter`, PGSeg `PGSegSegmenter`) share: the outputs a call may ask
for, forced classes as vocabulary indices, and per-stage timing. Neither segmenter module is imported here, so
each can use these without depending on the other."""
from __future__ import annotations

import time
from typing import Collection, Optional, Sequence, Union

import numpy as np
import torch

from .profiling import sync_device
from .prompts import VocabularyError, normalize_name

# What segment() can return: labels always; the others only when asked for.
OUTPUTS = ("labels", "confidence", "class_maps", "raw_maps")


def check_outputs(outputs: Collection[str]) -> frozenset:
    if isinstance(outputs, str):
        outputs = (outputs,)
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"unknown outputs {unknown}: expected some of {list(OUTPUTS)}")
    return frozenset(outputs) | {"labels"}


def resolve_present(vocab: Sequence[str], present: Optional[Sequence[Union[str, int]]]) -> Optional[list[int]]:
    """Forced classes (names normalised as the vocabulary's, case ignored, or vocabulary indices) as sorted
    indices."""
    if present is None:
        return None
    index = {n.casefold(): i for i, n in enumerate(vocab)}
    out = set()
    for p in present:
        if isinstance(p, (int, np.integer)) and 0 <= int(p) < len(vocab):
            out.add(int(p))
        elif isinstance(p, str) and normalize_name(p).casefold() in index:
            out.add(index[normalize_name(p).casefold()])
        else:
            raise VocabularyError(f"present class {p!r} is not in the vocabulary")
    return sorted(out)


class Stopwatch:
    """Seconds per stage. On a GPU, stage laps wait for the device only when profiling (a wait per stage
    would serialise the host and the device); `total` is always measured after the results are ready."""

    def __init__(self, device: torch.device, profile: bool):
        self.device = device
        self.sync = profile
        self.times: dict[str, float] = {}
        self.t0 = self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.sync:
            sync_device(self.device)      # the model's device, not the current one
        now = time.perf_counter()
        self.times[stage] = self.times.get(stage, 0.0) + now - self.t
        self.t = now

    def finish(self) -> dict:
        self.times["total"] = time.perf_counter() - self.t0
        return self.times
