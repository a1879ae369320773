"""GradCAM on BLIP's text-to-image cross-attention, driven by the raw ITM match logit.

GC = A * relu(dL/dA) on the chosen head (or the mean over heads), summed over the chosen layers, where A is
the cross-attention probability of a caption token over the image patches and L the ITM match logit summed
over captions (captions do not interact, so each gets its own gradient). PnP-OVSS (Luo et al., 2024) builds
its class maps from these per-token maps; text_pass.itm_pass supplies A with captions folded into the query
axis, [F, heads, C*T, N+1].
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from .text_cache import CaptionPlan


def gradients(logits: torch.Tensor, probs: dict[int, torch.Tensor], layers: Sequence[int],
              rows=None) -> list[torch.Tensor]:
    """dL/dA for the captured layers; L = the match logit summed over the captions `rows` (all if None)."""
    with torch.enable_grad():      # the callers run under no_grad; the sum must join the graph
        match = logits[:, 1] if rows is None else logits[:, 1][rows]
        return list(torch.autograd.grad(match.sum(), [probs[i] for i in layers]))


def token_gradcam(probs: dict[int, torch.Tensor], grads: Sequence[torch.Tensor], layers: Sequence[int],
                  head: Union[int, str], text_mask: torch.Tensor) -> torch.Tensor:
    """Per-token GradCAM maps [B, T, N] over image patches (image CLS key dropped); B = frames x captions."""
    gc = None
    for i, g in zip(layers, grads):
        # float32 products: with fp16 weights A * dL/dA (~1e-5) would sit in fp16's subnormal range
        cam = probs[i].detach()[..., 1:].float() * g[..., 1:].float().clamp(min=0)
        cam = cam.mean(dim=1) if head == "mean" else cam[:, int(head)]
        gc = cam if gc is None else gc + cam
    b, t = text_mask.shape
    return gc.reshape(b, t, -1) * text_mask[:, :, None].to(torch.float32)


def class_maps(token_maps: torch.Tensor, plan: CaptionPlan, presence_layout: bool = False) -> torch.Tensor:
    """One frame's token maps [C', T, N] -> one map per present class [S, N]: the mean of its token rows.
    `presence_layout`: the token maps come from the all-class presence captions (prompt_mode per_class)."""
    cap = plan.presence_row_caption if presence_layout else plan.row_caption
    rows = token_maps[cap, plan.row_token]
    sums = rows.new_zeros(len(plan.classes), rows.shape[1]).index_add_(0, plan.row_class, rows)
    return sums / plan.rows_per_class[:, None]


def ranking_map(token_maps: torch.Tensor, plan: CaptionPlan, presence_layout: bool = False) -> torch.Tensor:
    """Salience used to pick patches to drop: the sum of every class token row -> [N]."""
    cap = plan.presence_rank_caption if presence_layout else plan.rank_caption
    return token_maps[cap, plan.rank_token].sum(dim=0)
