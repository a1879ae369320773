"""Salience Dropout: hide the most salient patches and look again, so weaker regions show up."""
from __future__ import annotations

from typing import Optional

import torch


def patches_per_round(grid: int, drop_patches: int, drop_fraction: Optional[float]) -> int:
    n = grid * grid
    k = round(drop_fraction * n) if drop_fraction is not None else drop_patches
    return max(0, min(int(k), n))


def select_patches(ranking: torch.Tensor, dropped: torch.Tensor, k: int) -> torch.Tensor:
    """Append the k highest-ranked patches to `dropped`, as the reference does it:
    `s[dropped] = 0; dropped += argsort(s)[-k:]`.

    Already dropped patches score 0, so when fewer than k patches score above 0 some of the k are zeros,
    possibly already dropped ones (then fewer new patches are hidden; `dropped` may repeat an index, which
    every user of it tolerates). Ties are taken in a stable order (numpy `argsort(kind="stable")`: among
    equal scores the highest index wins); numpy's default sort leaves that order unspecified.
    """
    if k == 0:
        return dropped
    score = ranking.clone()
    score[dropped] = 0
    top = torch.argsort(score, stable=True)[-k:]
    return torch.cat([dropped, top])


def drop_pixels(pixel_values: torch.Tensor, dropped: torch.Tensor, grid: int, ps: int) -> torch.Tensor:
    """Zero (in normalised space, i.e. the dataset-mean colour) the ps x ps pixel block of each dropped patch."""
    if dropped.numel() == 0:
        return pixel_values
    keep = torch.ones(grid * grid, device=pixel_values.device, dtype=pixel_values.dtype)
    keep[dropped] = 0
    keep = keep.view(grid, grid).repeat_interleave(ps, 0).repeat_interleave(ps, 1)
    return pixel_values * keep


def attention_bias(dropped: list[torch.Tensor], n_patches: int, dtype: torch.dtype,
                   device) -> torch.Tensor:
    """Attention-mode dropout for a batch of frames: [F, N+1] additive cross-attention bias, -max on each
    frame's dropped patches (image CLS at 0 is never dropped). Masking equals removing those keys (their
    weight is exactly 0) and, unlike removing them, needs no host round trip to count what is kept."""
    bias = torch.zeros(len(dropped), n_patches + 1, dtype=dtype, device=device)
    for f, d in enumerate(dropped):
        bias[f, d + 1] = torch.finfo(dtype).min
    return bias


def zero_dropped(maps: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    out = maps.clone()
    out[..., dropped] = 0
    return out
