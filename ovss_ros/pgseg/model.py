"""PGSeg's image side on transformers' GroupViT: the NPR modules and a forward that runs them.

PGSeg (Zhang et al., "Uncovering Prototypical Knowledge for Weakly Open-Vocabulary Semantic Segmentation",
NeurIPS 2023; github.com/Ferenas/PGSeg) is GroupViT (Xu et al., CVPR 2022; github.com/NVlabs/GroupViT) plus
a non-learnable prototypical regularization (NPR) in stages 1 and 2 that stays on the inference path:

    prototypes = EM soft k-means over the tokens *entering* the stage (10 rounds, from a stored buffer, no grad)
    re_x       = MLP(assignments @ prototypes)                 (1x1 conv / BatchNorm / ReLU / 1x1 conv)
    grouping   = GroupingBlock(stage_output_tokens + re_x, group_tokens)

transformers' `GroupViTStage.forward` hands its tokens straight to the grouping block, so `vision_forward`
below re-runs the stage with the HF submodules and adds `re_x` where the authors do. With no NPR modules it is
GroupViT's forward, and a plain `nvidia/groupvit-*` checkpoint loads into `PGSegModel` unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GroupViTConfig, GroupViTModel

NPR_ITERATIONS = 10          # EM rounds (the authors' `stage`)
NPR_INNER_DIM = 4096         # hidden width of the reconstruction MLP (the authors' ProjectMLP default)


class PrototypeRegularizer(nn.Module):
    """One stage's NPR: EM prototypes of the input tokens, reconstructed and mapped back to token space."""

    def __init__(self, dim: int, num_prototypes: int, inner_dim: int = NPR_INNER_DIM,
                 iterations: int = NPR_ITERATIONS):
        super().__init__()
        self.iterations = iterations
        # the authors' init: normal, then unit rows; their inference never updates it, so the stored values matter
        mu = torch.randn(1, num_prototypes, dim) * (2.0 / dim) ** 0.5
        self.register_buffer("mu", mu / (1e-6 + mu.norm(dim=2, keepdim=True)))
        # the authors' Conv1d(k=1) layers, squeezed to Linear (same numbers on [tokens, channels])
        self.mapping_x = nn.Sequential(nn.Linear(dim, inner_dim), nn.BatchNorm1d(inner_dim), nn.ReLU(),
                                       nn.Linear(inner_dim, dim))

    @torch.no_grad()
    def prototypes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(assignments [B, L, K] normalised over tokens, prototypes [B, K, C] unit rows) after the EM rounds."""
        mu = self.mu.to(x.dtype).expand(x.shape[0], -1, -1)
        z = None
        for _ in range(self.iterations):
            z = torch.softmax(x @ mu.transpose(1, 2), dim=-1)
            z = z / (1e-6 + z.sum(dim=1, keepdim=True))
            mu = z.transpose(1, 2) @ x
            mu = mu / (1e-6 + mu.norm(dim=2, keepdim=True))
        return z, mu

    def forward(self, x: torch.Tensor, found: Optional[tuple] = None) -> torch.Tensor:
        """re_x [B, L, C] = MLP(z @ mu); `found`: (assignments, prototypes) already computed for `x`.

        The first layer is linear, so it runs on the K prototypes before they are spread over the L tokens:
        (z @ mu) W^T + b = z @ (mu W^T) + b, K x C x inner plus L x K x inner multiply-adds instead of
        L x C x inner (stage 1 of the released model: 64 prototypes, 196 tokens; equal to float rounding)."""
        z, mu = found if found is not None else self.prototypes(x)
        first, *rest = self.mapping_x
        hidden = torch.baddbmm(first.bias, z, F.linear(mu, first.weight))    # [B, L, inner]
        b, n, c = hidden.shape
        for module in rest:                                   # BatchNorm1d wants [N, C]
            hidden = module(hidden.reshape(b * n, -1))
        return hidden.reshape(b, n, -1)


class PGSegModel(GroupViTModel):
    """`GroupViTModel` plus one PrototypeRegularizer per grouping stage when `config.npr_prototypes` lists
    their sizes (PGSeg: [64, 8]); without it, exactly GroupViT. Saved and loaded with save_pretrained /
    from_pretrained like any transformers model (the NPR tensors are `npr.{stage}.*`)."""

    def __init__(self, config: GroupViTConfig):
        super().__init__(config)
        sizes = list(getattr(config, "npr_prototypes", None) or [])
        dim = config.vision_config.hidden_size
        inner = int(getattr(config, "npr_inner_dim", NPR_INNER_DIM))
        self.npr = nn.ModuleList([PrototypeRegularizer(dim, k, inner) for k in sizes]) if sizes else None
        if self.npr is not None:
            grouping = [s for s in self.vision_model.encoder.stages if s.downsample is not None]
            if len(grouping) != len(self.npr):
                raise ValueError(f"npr_prototypes={sizes} but the vision model has {len(grouping)} grouping stages")

    @property
    def has_npr(self) -> bool:
        return self.npr is not None


@dataclass
class VisionOutput:
    tokens: torch.Tensor                     # [B, G, D] final group tokens after the last LayerNorm
    assignments: list                        # per grouping stage: soft assignment [B, G_s, N_in] (softmax over groups)
    centres: list = field(default_factory=list)      # per grouping stage: projected group tokens (NPR loss)
    prototypes: list = field(default_factory=list)   # per NPR stage: EM prototypes [B, K, D] (NPR loss)
    grouped: list = field(default_factory=list)      # per grouping stage: the tokens it groups [B, N_in, D]


def _token_assign(assign_module, image_tokens: torch.Tensor, group_tokens: torch.Tensor):
    """GroupViTTokenAssign.forward, also returning the projected group tokens (the NPR loss's group centres)."""
    group_tokens = assign_module.norm_tokens(group_tokens)
    image_tokens = assign_module.norm_x(image_tokens)
    projected = assign_module.project_group_token(group_tokens)
    projected = assign_module.pre_assign_attn(projected, image_tokens)
    new_tokens, soft = assign_module.assign(projected, image_tokens)
    new_tokens = new_tokens + projected
    new_tokens = new_tokens + assign_module.mlp_channels(assign_module.norm_new_x(new_tokens))
    return new_tokens, soft, projected


def _version(t: torch.Tensor) -> Optional[int]:
    try:
        return t._version                   # bumped by every in-place change (load_state_dict copies in place)
    except RuntimeError:                    # a tensor made under inference_mode keeps no version counter
        return None


def _qkv(attention) -> tuple[torch.Tensor, torch.Tensor]:
    """The q, k, v projections as one [3D, D] weight and [3D] bias: one matrix product instead of three.
    Without autograd it is kept on the module until a weight is replaced or changed in place."""
    parts = (attention.q_proj, attention.k_proj, attention.v_proj)
    if torch.is_grad_enabled():
        return torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts])
    key = tuple((t.data_ptr(), _version(t), t.dtype) for p in parts for t in (p.weight, p.bias))
    cached = attention.__dict__.get("_fused_qkv")
    if cached is None or cached[0] != key:
        cached = (key, torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts]))
        attention.__dict__["_fused_qkv"] = cached         # a plain attribute: not in the state dict
    return cached[1], cached[2]


def encoder_layer(layer, x: torch.Tensor) -> torch.Tensor:
    """transformers' GroupViTEncoderLayer (pre-norm self-attention + MLP) with the attention's core in
    torch's scaled_dot_product_attention (no probabilities kept: nothing reads them) and q/k/v in one
    matrix product. Equal to `layer(x, attention_mask=None)` to float rounding."""
    attention = layer.self_attn
    b, n, d = x.shape
    weight, bias = _qkv(attention)
    h = layer.layer_norm1(x)
    q, k, v = F.linear(h, weight, bias).view(b, n, 3, attention.num_heads, attention.head_dim).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attention.dropout if attention.training else 0.0,
                                         scale=attention.scale)
    x = x + attention.out_proj(out.transpose(1, 2).reshape(b, n, d))
    return x + layer.mlp(layer.layer_norm2(x))


def vision_forward(model: PGSegModel, pixel_values: torch.Tensor, use_npr: bool = True) -> VisionOutput:
    """The GroupViT image encoder with PGSeg's NPR residual before each grouping block (when the model has NPR
    and `use_npr`). Any input size whose sides are multiples of the patch size (position embeddings
    interpolated bicubically, as the authors do at test time)."""
    vision = model.vision_model
    # GroupViT's patch embedding does not cast its input (BLIP's does): pixels arrive in float32
    weights = vision.embeddings.patch_embeddings.projection.weight.dtype
    x = vision.embeddings(pixel_values.to(weights), interpolate_pos_encoding=True)
    npr = list(model.npr) if (use_npr and model.npr is not None) else None
    out = VisionOutput(tokens=x, assignments=[])
    group_tokens = None
    grouping_index = 0
    for stage in vision.encoder.stages:
        stage_input = x
        if stage.with_group_token:
            tokens = stage.group_token.expand(x.shape[0], -1, -1)
            if stage.group_projector is not None:
                tokens = tokens + stage.group_projector(group_tokens)
        else:
            tokens = None
        cat = stage.concat_x(x, tokens)
        for layer in stage.layers:
            cat = encoder_layer(layer, cat)
        x, group_tokens = stage.split_x(cat)
        if stage.downsample is not None:
            if npr is not None:
                regularizer = npr[grouping_index]
                found = regularizer.prototypes(stage_input)
                x = x + regularizer(stage_input, found)
                out.prototypes.append(found[1])
            out.grouped.append(x)
            x, soft, centres = _token_assign(stage.downsample, x, group_tokens)
            out.assignments.append(soft)
            out.centres.append(centres)
            grouping_index += 1
    out.tokens = vision.layernorm(x)
    return out


def project(model: GroupViTModel, projection: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A projection MLP (Linear / BatchNorm1d / ReLU / Linear) over the last dim of [..., D], in the
    projector's dtype (tokens may come out of an autocast pass in another)."""
    shape = x.shape
    x = x.to(next(projection.parameters()).dtype)
    return projection(x.reshape(-1, shape[-1])).reshape(*shape[:-1], -1)


def image_embeddings(model: PGSegModel, vision: VisionOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """(group embeddings [B, G, P], pooled image embedding [B, P]), both L2-normalised float32: the projector on
    each final group token, and on their mean (the authors' avgpool over the last stage's tokens)."""
    groups = project(model, model.visual_projection, vision.tokens)
    pooled = project(model, model.visual_projection, vision.tokens.float().mean(dim=1))
    # float32 whatever the weights: the class scores are softmaxes at logit scale up to 100
    return F.normalize(groups.float(), dim=-1), F.normalize(pooled.float(), dim=-1)


def text_embeddings(model: GroupViTModel, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                    templates: int = 1) -> torch.Tensor:
    """Class embeddings [C, P] from [C * templates, T] token ids: EOT feature -> projector -> mean over
    templates -> L2-normalise (the authors average before normalising); float32 whatever the weights."""
    pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    emb = project(model, model.text_projection, pooled).float()
    emb = emb.reshape(-1, templates, emb.shape[-1]).mean(dim=1)
    return F.normalize(emb, dim=-1)


def logit_scale(model: GroupViTModel) -> torch.Tensor:
    """exp(logit_scale) clamped at 100, as the authors' inference; transformers' GroupViT does not clamp."""
    return model.logit_scale.float().exp().clamp(max=100)
