"""PGSeg inference from the papers, in plain torch, for checking the engine: an independent second implementation.

Sources: PGSeg (Zhang et al., "Uncovering Prototypical Knowledge for Weakly Open-Vocabulary Semantic
Segmentation", NeurIPS 2023) on GroupViT (Xu et al., CVPR 2022), as described in docs/pgseg.md, and the facts
of the authors' checkpoint layout (test/engine/pgseg_checkpoints.py). Nothing here uses transformers or the
engine: weights are looked up by the authors' names in a state dict, and every step is a few lines of tensor
algebra. Batch size 1 throughout (one window at a time), which is what the authors evaluate with.

    image  -> patches + position -> stage 1 (blocks, NPR residual, grouping 64) -> stage 2 (..., grouping 8)
           -> stage 3 blocks -> LayerNorm -> 8 group tokens
    groups -> projector -> group embeddings; their mean -> projector -> image embedding
    text   -> CLIP-style causal transformer -> end-of-text feature -> projector
    decode -> pixel->group (chained soft assignments, upsampled, argmax), group->class (Q * P with the image
              top-k filter), background rule; windows averaged, resized, argmax
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MEAN_255 = (123.675, 116.28, 103.53)     # ImageNet statistics on the 0-255 scale
STD_255 = (58.395, 57.12, 57.375)
NPR_ROUNDS = 10
LOGIT_SCALE_MAX = 100.0


# ---- building blocks -----------------------------------------------------------------------------------------

def lin(w, name, x):
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def ln(w, name, x):
    return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)


def gelu_mlp(w, name, x):
    return lin(w, f"{name}.fc2", F.gelu(lin(w, f"{name}.fc1", x)))


def attend(q, k, v, heads, mask=None):
    """Multi-head scaled dot-product attention on [L, C] rows (no batch)."""
    def split(t):
        return t.reshape(t.shape[0], heads, -1).transpose(0, 1)          # [heads, L, C/heads]

    q, k, v = split(q), split(k), split(v)
    logits = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits + mask
    return (logits.softmax(-1) @ v).transpose(0, 1).reshape(q.shape[1], -1)


def conv_mlp(w, name, x):
    """The authors' 1x1-conv projector on [L, C] rows: conv, BatchNorm (running statistics), ReLU, conv."""
    h = F.linear(x, w[f"{name}.linear_hidden.0.weight"][..., 0], w[f"{name}.linear_hidden.0.bias"])
    bn = f"{name}.linear_hidden.1"
    h = (h - w[f"{bn}.running_mean"]) / torch.sqrt(w[f"{bn}.running_var"] + 1e-5) * w[f"{bn}.weight"] + w[f"{bn}.bias"]
    return F.linear(h.relu(), w[f"{name}.linear_out.weight"][..., 0], w[f"{name}.linear_out.bias"])


# ---- image side --------------------------------------------------------------------------------------------

def vit_block(w, name, x, heads):
    """Pre-norm transformer block with a fused q/k/v projection."""
    q, k, v = lin(w, f"{name}.attn.qkv", ln(w, f"{name}.norm1", x)).chunk(3, dim=-1)
    x = x + lin(w, f"{name}.attn.proj", attend(q, k, v, heads))
    return x + gelu_mlp(w, f"{name}.mlp", ln(w, f"{name}.norm2", x))


def token_mlp(w, name, tokens):
    """An MLP across the token axis (GroupViT mixes S group tokens into S' with it)."""
    return gelu_mlp(w, name, tokens.T).T


def npr_residual(w, name, tokens):
    """Non-learnable prototypical regularisation: EM from the stored prototypes on the tokens entering the stage,
    then the reconstruction through the stage's MLP. Returns the residual added before grouping."""
    mu = w[f"{name}.mu"][0]                                  # [K, C], kept as stored at inference
    for _ in range(NPR_ROUNDS):
        z = (tokens @ mu.T).softmax(dim=1)                   # token -> prototype responsibilities
        z = z / (z.sum(dim=0, keepdim=True) + 1e-6)          # each prototype's weights sum to 1 over tokens
        mu = z.T @ tokens
        mu = mu / (mu.norm(dim=1, keepdim=True) + 1e-6)
    return conv_mlp(w, f"{name}.mapping_x", z @ mu)


def grouping_block(w, name, x, groups, heads):
    """Merge N tokens into S' groups. Returns (the S' new tokens, the soft assignment [S', N])."""
    x = ln(w, f"{name}.norm_x", x)
    centres = ln(w, f"{name}.norm_post_tokens", token_mlp(w, f"{name}.mlp_inter", ln(w, f"{name}.norm_tokens", groups)))
    pre = f"{name}.pre_assign_attn"                          # the centres look at the tokens once (post-norm block)
    attn = attend(lin(w, f"{pre}.attn.q_proj", centres), lin(w, f"{pre}.attn.k_proj", x),
                  lin(w, f"{pre}.attn.v_proj", x), heads)
    centres = centres + lin(w, f"{pre}.attn.proj", attn)
    centres = ln(w, f"{pre}.norm_post", centres + gelu_mlp(w, f"{pre}.mlp", ln(w, f"{pre}.norm2", centres)))
    # single-head assignment: each token goes to its best centre (hard, at eval); the soft one is what the decode reads
    q, k = lin(w, f"{name}.assign.q_proj", centres), lin(w, f"{name}.assign.k_proj", x)
    soft = (q @ k.T / math.sqrt(q.shape[-1])).softmax(dim=0)           # [S', N], over the groups
    hard = F.one_hot(soft.argmax(dim=0), soft.shape[0]).T.to(x.dtype)
    hard = hard / (hard.sum(dim=1, keepdim=True) + 1.0)                # mean over members, damped by one
    merged = lin(w, f"{name}.assign.proj", hard @ lin(w, f"{name}.assign.v_proj", x)) + centres
    return merged + gelu_mlp(w, f"{name}.mlp_channels", ln(w, f"{name}.norm_new_x", merged)), soft


def encode_image(w, image, heads, npr=True):
    """image [3, H, W] (normalised) -> (final group tokens [G, C] after the last LayerNorm, [soft assignments],
    patch grid (h, w))."""
    weight = w["img_encoder.patch_embed.proj.weight"]
    p = weight.shape[-1]
    patches = F.conv2d(image[None], weight, w["img_encoder.patch_embed.proj.bias"], stride=p)[0]
    grid = tuple(patches.shape[1:])
    x = ln(w, "img_encoder.patch_embed.norm", patches.flatten(1).T)
    pos = w["img_encoder.pos_embed"][0]
    side = math.isqrt(pos.shape[0])
    if grid != (side, side):                                  # learned on the training grid; bicubic elsewhere
        pos = F.interpolate(pos.T.reshape(1, -1, side, side), size=grid, mode="bicubic", align_corners=False)
        pos = pos[0].flatten(1).T
    x = x + pos
    stages = 1 + max(int(k.split(".")[2]) for k in w if k.startswith("img_encoder.layers."))
    groups, assignments = None, []
    for s in range(stages):
        at = f"img_encoder.layers.{s}"
        entering = x
        if f"{at}.group_token" in w:
            new = w[f"{at}.group_token"][0]
            if f"{at}.group_projector.0.weight" in w:         # the previous stage's group tokens, mixed in
                new = new + token_mlp(w, f"{at}.group_projector.1", ln(w, f"{at}.group_projector.0", groups))
            groups = new
        else:
            groups = None                                     # the last stage has no group tokens
        n = x.shape[0]
        seq = x if groups is None else torch.cat([x, groups])
        b = 0
        while f"{at}.blocks.{b}.norm1.weight" in w:
            seq = vit_block(w, f"{at}.blocks.{b}", seq, heads)
            b += 1
        x, groups = seq[:n], (seq[n:] if groups is not None else None)
        if f"{at}.downsample.norm_x.weight" in w:
            if npr and f"{at}.downsample_spatial.mu" in w:
                x = x + npr_residual(w, f"{at}.downsample_spatial", entering)
            x, soft = grouping_block(w, f"{at}.downsample", x, groups, heads)
            assignments.append(soft)
    return ln(w, "img_encoder.norm", x), assignments, grid


# ---- text side -------------------------------------------------------------------------------------------

def encode_text(w, ids, heads):
    """ids [n, L] (end-of-text = the largest id in each row; anything after it is ignored) -> unit rows [n, D]."""
    rows = []
    causal = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
    for row in ids:
        x = w["text_encoder.token_embedding.weight"][row] + w["text_encoder.positional_embedding"][:len(row)]
        b = 0
        while f"text_encoder.transformer.resblocks.{b}.ln_1.weight" in w:
            at = f"text_encoder.transformer.resblocks.{b}"
            q, k, v = F.linear(ln(w, f"{at}.ln_1", x), w[f"{at}.attn.in_proj_weight"],
                               w[f"{at}.attn.in_proj_bias"]).chunk(3, dim=-1)
            x = x + lin(w, f"{at}.attn.out_proj", attend(q, k, v, heads, causal))
            h = lin(w, f"{at}.mlp.c_fc", ln(w, f"{at}.ln_2", x))
            x = x + lin(w, f"{at}.mlp.c_proj", h * torch.sigmoid(1.702 * h))     # CLIP's quick GELU
            b += 1
        rows.append(ln(w, "text_encoder.ln_final", x)[row.argmax()])
    return F.normalize(conv_mlp(w, "text_projector", torch.stack(rows)), dim=-1)


# ---- decode ------------------------------------------------------------------------------------------------

def group_class_scores(w, tokens, text, top_k=5):
    """(Q * P [G, C], image-level class probabilities [C]) for one window's final group tokens."""
    scale = w["logit_scale"].exp().clamp(max=LOGIT_SCALE_MAX)
    groups = F.normalize(conv_mlp(w, "img_projector", tokens), dim=-1)
    image = F.normalize(conv_mlp(w, "img_projector", tokens.mean(dim=0, keepdim=True)), dim=-1)[0]
    logits = scale * groups @ text.T
    p = logits.softmax(dim=-1)
    q_image = (scale * image @ text.T).softmax(dim=-1)
    kept = torch.zeros(len(text), dtype=torch.bool)
    kept[q_image.topk(min(top_k, len(text))).indices] = True
    q = logits.masked_fill(~kept, float("-inf")).softmax(dim=-1)
    return q * p, q_image


def decode_window(w, window, text, heads, *, background, npr=True):
    """One window [3, h, w] -> (class scores [K, h, w], Q * P); K = C + 1 with channel 0 the background when a
    threshold is given, else C."""
    tokens, soft, grid = encode_image(w, window, heads, npr)
    pixel_to_group = soft[0].T
    for a in soft[1:]:
        pixel_to_group = pixel_to_group @ a.T                 # [N, S1] @ [S1, S2] ... -> [N, G]
    maps = pixel_to_group.T.reshape(1, -1, *grid)
    maps = F.interpolate(maps, size=window.shape[1:], mode="bilinear", align_corners=False)[0]
    onehot = F.one_hot(maps.argmax(dim=0), maps.shape[0]).to(maps.dtype)        # [h, w, G]
    qp, _ = group_class_scores(w, tokens, text)
    scores = (onehot @ qp).permute(2, 0, 1)
    if background is None:
        return scores, qp
    t = min(background, qp.max().item())
    bg = (scores.max(dim=0).values < t).to(scores.dtype)
    return torch.cat([bg[None], scores]), qp


def preprocess(rgb, short_side):
    """Keep-ratio resize so that the short side is `short_side` (long side at most max(2048, short_side)),
    OpenCV bilinear on the uint8 frame, then ImageNet normalisation -> [3, H, W] float32."""
    h, w = rgb.shape[:2]
    factor = min(max(2048, short_side) / max(h, w), min(2048, short_side) / min(h, w))
    size = (int(w * factor + 0.5), int(h * factor + 0.5))
    img = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    img = (img - np.array(MEAN_255, np.float32)) / np.array(STD_255, np.float32)
    return torch.from_numpy(img.transpose(2, 0, 1).copy())


def window_origins(length, crop, stride):
    """Start offsets of windows along one axis; the last window is pushed back to end at the border."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, length) - crop, 0) for i in range(count)]


@torch.no_grad()
def segment(w, text, rgb, heads, *, short_side, crop=None, stride=None, background=None, npr=True):
    """(class probabilities [K, H, W] at the frame's size, every window's Q * P) for an RGB uint8 frame; the
    labels are their argmax (0 = background when a threshold is given, else the first class). ``crop=None`` runs
    the whole resized image as one window."""
    image = preprocess(rgb, short_side)
    H, W = image.shape[1:]
    k = len(text) + (background is not None)
    total, count, qps = torch.zeros(k, H, W), torch.zeros(1, H, W), []
    ys = [0] if crop is None else window_origins(H, crop, stride)
    xs = [0] if crop is None else window_origins(W, crop, stride)
    hh, ww = (H, W) if crop is None else (min(crop, H), min(crop, W))
    for y in ys:
        for x in xs:
            scores, qp = decode_window(w, image[:, y:y + hh, x:x + ww], text, heads, background=background, npr=npr)
            total[:, y:y + hh, x:x + ww] += scores
            count[:, y:y + hh, x:x + ww] += 1
            qps.append(qp)
    averaged = F.interpolate((total / count)[None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0]
    return averaged.softmax(dim=0), qps
