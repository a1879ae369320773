"""Class presence without GPT-4o: BLIP's own ITM probability for "a picture of <class>"."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """P(match) from ITM logits [B, 2] -> [B]."""
    return torch.softmax(logits.detach().float(), dim=-1)[:, 1]


def select_classes(prob: np.ndarray, threshold: float, top_k: Optional[int]) -> list[int]:
    """Indices of classes with probability >= threshold, at most top_k of them, best first (ties: lower
    index first)."""
    order = np.argsort(-prob, kind="stable")
    keep = [int(i) for i in order if prob[i] >= threshold]
    return keep[:top_k] if top_k is not None else keep
