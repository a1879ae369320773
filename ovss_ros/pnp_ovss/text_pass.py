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
             capture: Iterable[int] = (), span=None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """ITM logits [B, 2] of every caption against its frame, and the cross-attention probabilities of the
    `capture` layers, in a graph that starts at the first of them ([F, heads, C*T, N+1], captions folded into
    the query axis).

    `prefix` rows are frame-major: B = F x C, rows f*C .. f*C+C-1 see frame f. `image_bias` [F, N+1] is
    added to every cross-attention score of its frame (0 or -max: attention-mode Salience Dropout).
    Differentiate the logits with respect to the captured probabilities for GradCAM: only the layers from the
    first captured one on record a graph. `span`: what runs a stretch of layers (`layer_span`, or a compiled
    copy of it, compiled.CompiledPasses). The layers run in stretches that end at each captured probability,
    so the probabilities are tensors between stretches: a gradient can be taken with respect to them, and
    the one `requires_grad_` stays out of any compiled stretch.
    """
    run = span or layer_span
    layers = model.text_encoder.encoder.layer
    bias = image_bias[:, None, None, :] if image_bias is not None else None
    probs_of: dict[int, torch.Tensor] = {}
    h, probs, first = prefix.hidden, None, 0     # probs: layer `first`'s, when its first half already ran
    with torch.set_grad_enabled(bool(capture)):
        for stop in [*sorted(set(capture)), None]:
            last = len(layers) - 1 if stop is None else stop
            idx = range(first, last + 1)
            out = run([layers[i] for i in idx], [kv.keys[i] for i in idx], [kv.values[i] for i in idx], h, probs,
                      prefix.bias, bias, first == 0, stop is not None, model.itm_head)
            if stop is None:
                return out, probs_of
            h, probs = out
            if not probs.requires_grad:      # the first captured layer starts the graph; later ones stay
                probs = probs.detach().requires_grad_(True)   # in it, so a gradient sees every path
            probs_of[stop] = probs
            first = stop
    raise AssertionError("unreachable")


def layer_span(layers, keys, values, h, probs, self_bias, bias, from_prefix: bool, stop_at_probs: bool, head):
    """Text layers `layers` in order, each self-attention -> cross-attention -> feed-forward. `probs` given:
    the first layer's cross-attention probabilities (its self-attention and scores already ran). Ends at the
    last layer's probabilities (-> (hidden before its cross-attention, probs)) when `stop_at_probs`, else at
    the ITM head (-> logits). `from_prefix`: the first layer is layer 0, whose self-attention the prefix holds."""
    for k, layer in enumerate(layers):
        if k > 0 or probs is None:
            if k > 0 or not from_prefix:
                h, _ = layer.attention(h, attention_mask=self_bias)
            probs = _cross_probs(layer.crossattention.self, h, keys[k], bias)
            if stop_at_probs and k == len(layers) - 1:
                return h, probs
        h = _cross_rest(layer, h, probs, values[k])
    return head(h[:, 0, :])


def _cross_probs(attn, h, keys, bias):
    """Cross-attention probabilities [F, heads, C*T, N+1] of captions h [F*C, T, D] over their frames' keys."""
    # head count and size from the module (static ints): from the shapes they are symbolic when compiled with
    # dynamic sizes, and inductor's attention fusion then fails on a symbolic 1/sqrt(d) scale
    f, heads, d = keys.shape[0], attn.num_attention_heads, attn.attention_head_size
    b, t, _ = h.shape
    q = attn.query(h).view(f, b // f, t, heads, d).permute(0, 3, 1, 2, 4).reshape(f, heads, -1, d)
    scores = torch.matmul(q, keys.transpose(-1, -2)) / math.sqrt(d)
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1)


def _cross_rest(layer, h, probs, values):
    """The rest of a text layer after its cross-attention probabilities: context, output, feed-forward."""
    attn = layer.crossattention.self
    f, heads, d = values.shape[0], attn.num_attention_heads, attn.attention_head_size
    b, t, _ = h.shape
    ctx = torch.matmul(probs, values)
    ctx = ctx.view(f, heads, b // f, t, d).permute(0, 2, 3, 1, 4).reshape(b, t, heads * d)
    return layer.feed_forward_chunk(layer.crossattention.output(ctx, h))
