"""PGSeg's per-pixel confidence: P(label right) from the model's own soft pixel-to-group assignment
(docs/confidence.md).

The decode gives each pixel its strongest group and each group a label (background, or its best kept class);
a pixel's label is as sure as (a) the pixel belongs to a group carrying that label and (b) that group is the
class. With a(x, g) the chained soft assignment of pixel x to group g (a distribution over groups; each
stage's softmax over groups tempered by T_assign) and pi(g, l) the group's probability of label l, the pixel's
label distribution is the mixture

    P(l | x) = sum_g a(x, g) * pi(g, l)

pi(g, background) = 1 for a group the background rule makes background, else 0; pi(g, c) = P_T(g, c), the
group's softmax over the whole vocabulary, for the kept classes of a non-background group, with

    P_T(g, c) = softmax_c(scale * cos(g, c) / T)

T and T_assign (> 0) are properties of the model, read from its config.json (`confidence_temperature`,
`confidence_assignment_temperature`; 1, the model's own probabilities, where absent) and fitted post hoc on
labelled frames (temperature scaling, evaluation.calibration.fit_confidence_temperatures). The decode's labels
use the untempered scores and the hard group argmax, so neither changes a label.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .inference import chain_assignments


def check_temperature(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"confidence temperature must be a positive finite number, got {value!r}")
    return float(value)


def tempered_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) over the last axis (T = 1: the plain softmax, bit for bit)."""
    return (logits if temperature == 1.0 else logits / temperature).softmax(dim=-1)


def group_maps(assignments: Sequence[torch.Tensor], size: tuple[int, int], patch: int,
               temperature: float = 1.0) -> torch.Tensor:
    """[B, G, h, w]: each pixel's soft assignment to the final groups (sums to 1 over G), chained over the
    grouping stages and upsampled as inference.pixel_groups does before its argmax. `temperature` tempers each
    stage's softmax over groups (a ** (1 / T), renormalised: the softmax of its logits / T)."""
    stages = []
    for a in assignments:
        a = a.float()
        if temperature != 1.0:
            a = a.clamp_min(1e-30).pow(1.0 / temperature)
            a = a / a.sum(dim=1, keepdim=True)
        stages.append(a)
    chained = chain_assignments(stages)
    h, w = size
    maps = chained.transpose(1, 2).reshape(chained.shape[0], chained.shape[2], h // patch, w // patch)
    return F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)


def group_label_probabilities(p: torch.Tensor, scores: torch.Tensor, background: Optional[float]) -> torch.Tensor:
    """pi [B, G, L]: per group, the probability of each label channel as window_scores orders them (background
    first when `background` is set, then the kept classes). p, scores [B, G, K]: the groups' vocabulary softmax
    and Q * P scores, restricted to the kept classes."""
    if background is None:
        return p
    t = torch.minimum(scores.flatten(1).max(dim=1).values,
                      torch.full((), background, dtype=scores.dtype, device=scores.device))
    is_bg = (scores.max(dim=-1).values < t[:, None]).to(p.dtype)           # [B, G], the decode's rule
    return torch.cat([is_bg[..., None], p * (1 - is_bg[..., None])], dim=-1)


def pixel_label_probabilities(maps: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """[B, L, h, w] = sum_g maps[B, g, h, w] * pi[B, g, L]."""
    return torch.einsum("bghw,bgl->blhw", maps, pi)
