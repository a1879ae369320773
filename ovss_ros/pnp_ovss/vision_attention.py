"""BLIP's vision self-attention through `torch.nn.functional.scaled_dot_product_attention`.

The ViT pass only feeds the text side's cross-attention keys/values; nothing reads its attention
probabilities (GradCAM differentiates the text side's cross-attention), so the explicit matmul + softmax +
matmul of transformers' eager BlipAttention can be one fused call: flash/memory-efficient kernels on a GPU, the
fused CPU kernel here. Same weights, same maths: qkv projection split into heads, softmax(q k^T * scale) v,
heads merged, output projection.

Installed per model instance (each attention module's class is swapped for a subclass), so other BLIP models
in the process and the text encoder's attention keep transformers' eager code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SDPA_CLASSES: dict[type, type] = {}


def sdpa_forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, None]:
    """BlipAttention.forward's result without the probabilities: (output [B, T, D], None)."""
    b, t, d = hidden_states.shape
    heads = self.num_heads
    # [B, T, 3*D] -> three [B, heads, T, head_dim] views, q/k/v in the order the qkv weight stacks them
    q, k, v = self.qkv(hidden_states).view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
    p = self.dropout.p if self.training else 0.0
    ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
    return self.projection(ctx.transpose(1, 2).reshape(b, t, d)), None


def _sdpa_class(cls: type) -> type:
    if cls not in _SDPA_CLASSES:
        _SDPA_CLASSES[cls] = type(f"Sdpa{cls.__name__}", (cls,), {"forward": sdpa_forward, "_eager_class": cls})
    return _SDPA_CLASSES[cls]


def attention_modules(vision_model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every layer of a BLIP vision model (BlipVisionModel)."""
    return [layer.self_attn for layer in vision_model.encoder.layers]


def use_sdpa(vision_model: nn.Module) -> nn.Module:
    """Route this vision model's self-attention through SDPA (idempotent); returns the model."""
    for attn in attention_modules(vision_model):
        if not is_sdpa(attn):
            attn.__class__ = _sdpa_class(type(attn))
    return vision_model


def use_eager(vision_model: nn.Module) -> nn.Module:
    """Undo use_sdpa: transformers' eager attention again (probabilities computed and returned)."""
    for attn in attention_modules(vision_model):
        if is_sdpa(attn):
            attn.__class__ = attn._eager_class
    return vision_model


def is_sdpa(attn: nn.Module) -> bool:
    return type(attn) in _SDPA_CLASSES.values()
