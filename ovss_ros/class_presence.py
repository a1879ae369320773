"""Class presence without GPT-4o: BLIP's own ITM probability for "a picture of <class>"."""
from __future__ import annotations

from typing import Optional

import torch

from .gradcam import itm_forward
from .prompts import PromptBatch


@torch.no_grad()
def itm_probabilities(model, per_class_prompts: PromptBatch, image_embeds: torch.Tensor) -> torch.Tensor:
    """P(match) per class from the pass-0 image tokens (no extra ViT pass) -> [C]."""
    logits, _ = itm_forward(model, per_class_prompts, image_embeds, output_attentions=False)
    return torch.softmax(logits.float(), dim=-1)[:, 1]


def select_classes(prob: torch.Tensor, threshold: float, top_k: Optional[int]) -> list[int]:
    """Indices of classes with probability >= threshold, at most top_k of them, best first."""
    order = torch.argsort(prob, descending=True, stable=True).tolist()
    keep = [i for i in order if float(prob[i]) >= threshold]
    return keep[:top_k] if top_k is not None else keep
