"""BLIP's image-grounded text encoder, split where the image enters.

A BLIP text layer is self-attention -> cross-attention over the image tokens -> feed-forward. Three parts of
that depend on different things, so each is computed as rarely as it can be:

- per vocabulary (`text_prefix`): the embeddings and layer 0's self-attention see only the caption;
- per frame (`image_kv`): every layer's cross-attention keys/values see only the image tokens, and are the
  same for class presence and every GradCAM round (the captions only supply the queries);
- per pass (`itm_pass`): the rest, for all captions of all frames at once.

The layers' own modules (`attention`, `crossattention.output`, `feed_forward_chunk`, `itm_head`) run the
maths, so weights and numerics are transformers' (`BlipForImageTextRetrieval`, the [ENC] position feeding
the ITM head as in the BLIP paper, Li et al. 2022). Only the cross-attention's core is written here, to take
precomputed keys/values and to fold captions into the query axis: each query row attends to the image
independently, so C captions x T tokens of one frame are one [C*T, N] attention against one copy of the
frame's keys — no per-caption copies of the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.nn.functional as F


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T] 1/0 -> [B, 1, 1, T] 0/-max, added to attention scores (padding gets zero weight)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


@dataclass
class TextPrefix:
    """Captions up to the first cross-attention: they depend on the text alone."""

    hidden: torch.Tensor     # [B, T, D] layer 0 after self-attention
    mask: torch.Tensor       # [B, T] float, 1 = a real token
    bias: torch.Tensor       # [B, 1, 1, T] self-attention mask of layers 1.. (additive)

    @property
    def captions(self) -> int:
        return self.hidden.shape[0]

    def select(self, rows: torch.Tensor, length: int) -> "TextPrefix":
        """Captions `rows`, cut to `length` tokens (padding beyond every kept caption's end)."""
        return TextPrefix(self.hidden[rows, :length], self.mask[rows, :length], self.bias[rows, ..., :length])

    def padded(self, captions: int, length: int) -> "TextPrefix":
        """Pad to `captions` x `length`: extra tokens are masked out, extra captions repeat caption 0 (their
        outputs are ignored; captions never interact, so they change nothing for the real ones)."""
        p = self
        if p.hidden.shape[1] < length:
            extra = length - p.hidden.shape[1]
            p = TextPrefix(F.pad(p.hidden, (0, 0, 0, extra)), F.pad(p.mask, (0, extra)),
                           F.pad(p.bias, (0, extra), value=torch.finfo(p.bias.dtype).min))
        if p.captions < captions:
            idx = torch.zeros(captions - p.captions, dtype=torch.long, device=p.hidden.device)
            p = TextPrefix(*(torch.cat([t, t[idx]]) for t in (p.hidden, p.mask, p.bias)))
        return p


def stack(prefixes: list[TextPrefix]) -> tuple[TextPrefix, int]:
    """Frame-major concatenation of one prefix per frame, padded to a common shape -> (prefix, captions
    per frame)."""
    if len(prefixes) == 1:
        return prefixes[0], prefixes[0].captions
    c = max(p.captions for p in prefixes)
    t = max(p.hidden.shape[1] for p in prefixes)
    padded = [p.padded(c, t) for p in prefixes]
    return TextPrefix(*(torch.cat(ts) for ts in zip(*((p.hidden, p.mask, p.bias) for p in padded)))), c


@torch.no_grad()
def text_prefix(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextPrefix:
    enc = model.text_encoder
    emb = enc.embeddings(input_ids=input_ids)
    bias = additive_mask(attention_mask, emb.dtype)
    hidden, _ = enc.encoder.layer[0].attention(emb, attention_mask=bias)
    return TextPrefix(hidden, attention_mask.to(emb.dtype), bias)


@dataclass
class ImageKV:
    """Cross-attention keys and values of a batch of frames, per text layer: [F, heads, N+1, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def frames(self) -> int:
        return self.keys[0].shape[0]


@torch.no_grad()
def image_kv(model, image_embeds: torch.Tensor) -> ImageKV:
    keys, values = [], []
    f, n, _ = image_embeds.shape
    for layer in model.text_encoder.encoder.layer:
        attn = layer.crossattention.self
        shape = (f, n, -1, attn.attention_head_size)
        keys.append(attn.key(image_embeds).view(shape).transpose(1, 2))
        values.append(attn.value(image_embeds).view(shape).transpose(1, 2))
    return ImageKV(keys, values)


def itm_pass(model, prefix: TextPrefix, kv: ImageKV, image_bias: Optional[torch.Tensor] = None,
             capture: Iterable[int] = (), compiled: bool = False) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """ITM logits [B, 2] of every caption against its frame, and the cross-attention probabilities of the
    `capture` layers, in a graph that starts at the first of them ([F, heads, C*T, N+1], captions folded into
    the query axis).

    `prefix` rows are frame-major: B = F x C, rows f*C .. f*C+C-1 see frame f. `image_bias` [F, N+1] is
    added to every cross-attention score of its frame (0 or -max: attention-mode Salience Dropout).
    Differentiate the logits with respect to the captured probabilities for GradCAM: only the layers from the
    first captured one on record a graph. `compiled`: run the layers through torch.compile.
    """
    capture = set(capture)
    f = kv.frames
    b, t, _ = prefix.hidden.shape
    c = b // f
    bias = image_bias[:, None, None, :] if image_bias is not None else None
    probs_of: dict[int, torch.Tensor] = {}
    run = _compiled_layers() if compiled else _layers
    with torch.set_grad_enabled(bool(capture)):
        return run(model, prefix, kv, bias, capture, probs_of, f, c, b, t), probs_of


_COMPILED = []


def _compiled_layers():
    if not _COMPILED:      # one compiled function; torch.compile keeps its graphs per shape and setting
        _COMPILED.append(torch.compile(_layers, dynamic=True))
    return _COMPILED[0]


def _layers(model, prefix, kv, bias, capture, probs_of, f, c, b, t) -> torch.Tensor:
    h = prefix.hidden
    for i, layer in enumerate(model.text_encoder.encoder.layer):
        if i > 0:
            h, _ = layer.attention(h, attention_mask=prefix.bias)
        cross = layer.crossattention
        heads, d = cross.self.num_attention_heads, cross.self.attention_head_size
        q = cross.self.query(h).view(f, c, t, heads, d).permute(0, 3, 1, 2, 4).reshape(f, heads, c * t, d)
        scores = torch.matmul(q, kv.keys[i].transpose(-1, -2)) / math.sqrt(d)
        if bias is not None:
            scores = scores + bias
        probs = torch.softmax(scores, dim=-1)
        if i in capture:
            if not probs.requires_grad:      # the first captured layer starts the graph; later ones stay
                probs = probs.detach().requires_grad_(True)   # in it, so a gradient sees every path
            probs_of[i] = probs
        ctx = torch.matmul(probs, kv.values[i])
        ctx = ctx.view(f, heads, c, t, d).permute(0, 2, 3, 1, 4).reshape(b, t, heads * d)
        h = cross.output(ctx, h)
        h = layer.feed_forward_chunk(h)
    return model.itm_head(h[:, 0, :])
