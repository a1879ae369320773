"""Synthetic checkpoints in the file format the PGSeg and GroupViT authors release, for the conversion and parity
tests.

What the format is (facts about the released files, not their code): ``torch.save`` of a dict whose ``'model'``
entry is the state dict, beside the optimiser and scheduler states, the epoch, the best metrics, the apex loss
scaler and ``'config'``, the training configuration as a pickled OmegaConf object. The state dict's names follow
the authors' modules: ``img_encoder.*`` (patch embedding, stages ``layers.{s}`` with fused ``qkv`` blocks, the
grouping block ``downsample``, PGSeg's NPR ``downsample_spatial``), ``text_encoder.*`` (CLIP-style blocks with a
fused ``in_proj``), the two projectors as 1x1 Conv1d + BatchNorm MLPs, and the top-level ``logit_scale``. The
released PGSeg file has 437 entries (64,746,015 elements); GroupViT has 406 of them.

The name table below is written from that description; the values are seeded random numbers chosen so that a
wrong step shows: sharp group assignments (several groups in use) and an NPR residual as large as the tokens.
"""
from __future__ import annotations

import math

import torch

# The released configuration: embed 384, 6 heads, depths 6/3/3, 64 -> 8 groups, 4096-wide NPR and projector MLPs,
# CLIP's text tower (width 256, 12 layers, 4 heads, 77 tokens, 49,408 words), 256-d joint space.
FULL = dict(img_size=224, patch_size=16, embed_dim=384, depths=(6, 3, 3), num_heads=6,
            num_group_tokens=(64, 8, 0), num_output_groups=(64, 8), npr_inner_dim=4096,
            context_length=77, text_width=256, text_layers=12, text_heads=4, vocab_size=49408,
            proj_inner_dim=4096, output_dim=256)

# Same structure, quick on a CPU.
SMALL = dict(img_size=64, patch_size=16, embed_dim=48, depths=(2, 1, 1), num_heads=2,
             num_group_tokens=(16, 4, 0), num_output_groups=(16, 4), npr_inner_dim=64,
             context_length=77, text_width=32, text_layers=2, text_heads=2, vocab_size=600,
             proj_inner_dim=64, output_dim=32)

SIZES = {"small": SMALL, "full": FULL}
MAPPING_TEXT_DIM = 256      # PGSeg's unused image->text mapping always ends at 256 channels


class AuthorsConfig:
    """Stands in for the pickled OmegaConf object under 'config': any class outside torch's allow-list makes
    ``torch.load(weights_only=True)`` refuse the file, as it refuses the released ones."""

    def __init__(self, **entries):
        self.__dict__.update(entries)


# ---- the name table: (name, shape, how to fill it) --------------------------------------------------------------

def _linear(name, n_out, n_in, bias=True, kind="weight"):
    yield f"{name}.weight", (n_out, n_in), kind
    if bias:
        yield f"{name}.bias", (n_out,), "bias"


def _norm(name, dim):
    yield f"{name}.weight", (dim,), "gain"
    yield f"{name}.bias", (dim,), "bias"


def _two_layer(name, n_in, hidden, n_out):
    """timm-style MLP: fc1 -> GELU -> fc2."""
    yield from _linear(f"{name}.fc1", hidden, n_in)
    yield from _linear(f"{name}.fc2", n_out, hidden)


def _conv_mlp(name, n_in, inner, n_out, out_kind="weight"):
    """The authors' projector: Conv1d(k=1) -> BatchNorm1d -> ReLU -> Conv1d(k=1)."""
    yield f"{name}.linear_hidden.0.weight", (inner, n_in, 1), "weight"
    yield f"{name}.linear_hidden.0.bias", (inner,), "bias"
    yield from _norm(f"{name}.linear_hidden.1", inner)
    yield f"{name}.linear_hidden.1.running_mean", (inner,), "bn_mean"
    yield f"{name}.linear_hidden.1.running_var", (inner,), "bn_var"
    yield f"{name}.linear_hidden.1.num_batches_tracked", (), "count"
    yield f"{name}.linear_out.weight", (n_out, inner, 1), out_kind
    yield f"{name}.linear_out.bias", (n_out,), "bias"


def _image_encoder(c, npr):
    d, p = c["embed_dim"], c["patch_size"]
    grid = c["img_size"] // p
    yield "img_encoder.pos_embed", (1, grid * grid, d), "pos"
    if npr:
        yield "img_encoder.logit_scale", (), "scale"
    yield "img_encoder.patch_embed.proj.weight", (d, 3, p, p), "weight"
    yield "img_encoder.patch_embed.proj.bias", (d,), "bias"
    yield from _norm("img_encoder.patch_embed.norm", d)
    stages = len(c["depths"])
    for s in range(stages):
        at = f"img_encoder.layers.{s}"
        groups = c["num_group_tokens"][s]
        if groups:
            yield f"{at}.group_token", (1, groups, d), "group_token"
        for b in range(c["depths"][s]):
            yield from _norm(f"{at}.blocks.{b}.norm1", d)
            yield from _linear(f"{at}.blocks.{b}.attn.qkv", 3 * d, d)
            yield from _linear(f"{at}.blocks.{b}.attn.proj", d, d)
            yield from _norm(f"{at}.blocks.{b}.norm2", d)
            yield from _two_layer(f"{at}.blocks.{b}.mlp", d, 4 * d, d)
        if s < stages - 1:
            yield from _grouping_block(f"{at}.downsample", d, groups, c["num_output_groups"][s])
            if npr:
                yield f"{at}.downsample_spatial.mu", (1, c["num_output_groups"][s], d), "prototypes"
                yield from _conv_mlp(f"{at}.downsample_spatial.mapping_x", d, c["npr_inner_dim"], d, "npr_out")
        if s > 0 and groups:
            yield from _norm(f"{at}.group_projector.0", d)
            yield from _two_layer(f"{at}.group_projector.1", c["num_group_tokens"][s - 1], d // 2, groups)
    yield from _norm("img_encoder.norm", d)
    if npr:
        yield from _conv_mlp("img_encoder.mapping_text", d, c["npr_inner_dim"], MAPPING_TEXT_DIM)


def _grouping_block(at, d, groups_in, groups_out):
    yield from _norm(f"{at}.norm_tokens", d)
    yield from _two_layer(f"{at}.mlp_inter", groups_in, d // 2, groups_out)
    yield from _norm(f"{at}.norm_post_tokens", d)
    yield from _norm(f"{at}.norm_x", d)
    yield from _norm(f"{at}.pre_assign_attn.norm_post", d)
    for part in ("q_proj", "k_proj", "v_proj", "proj"):
        yield from _linear(f"{at}.pre_assign_attn.attn.{part}", d, d)
    yield from _norm(f"{at}.pre_assign_attn.norm2", d)
    yield from _two_layer(f"{at}.pre_assign_attn.mlp", d, 4 * d, d)
    for part in ("q_proj", "k_proj"):
        yield from _linear(f"{at}.assign.{part}", d, d, kind="assign")
    for part in ("v_proj", "proj"):
        yield from _linear(f"{at}.assign.{part}", d, d)
    yield from _norm(f"{at}.norm_new_x", d)
    yield from _two_layer(f"{at}.mlp_channels", d, 4 * d, d)


def _text_encoder(c, npr):
    w = c["text_width"]
    yield "text_encoder.positional_embedding", (c["context_length"], w), "pos"
    for b in range(c["text_layers"]):
        at = f"text_encoder.transformer.resblocks.{b}"
        yield f"{at}.attn.in_proj_weight", (3 * w, w), "weight"
        yield f"{at}.attn.in_proj_bias", (3 * w,), "bias"
        yield from _linear(f"{at}.attn.out_proj", w, w)
        yield from _norm(f"{at}.ln_1", w)
        yield from _linear(f"{at}.mlp.c_fc", 4 * w, w)
        yield from _linear(f"{at}.mlp.c_proj", w, 4 * w)
        yield from _norm(f"{at}.ln_2", w)
    yield from _norm("text_encoder.ln_final", w)
    yield "text_encoder.token_embedding.weight", (c["vocab_size"], w), "embedding"
    if npr:
        yield "text_encoder.Atten.mu", (1, 8, 1), "prototypes"


def name_table(npr=True, size="small"):
    """[(name, shape, fill)] of an authors' state dict, in their order: the top-level scale, image encoder, text
    encoder, projectors."""
    c = SIZES[size]
    rows = [("logit_scale", (), "scale")]
    rows += _image_encoder(c, npr)
    rows += _text_encoder(c, npr)
    rows += _conv_mlp("img_projector", c["embed_dim"], c["proj_inner_dim"], c["output_dim"])
    rows += _conv_mlp("text_projector", c["text_width"], c["proj_inner_dim"], c["output_dim"])
    return rows


def released_key_shapes(npr=True):
    """{name: shape} of the released file's ['model'] dict (no tensors allocated)."""
    return {name: shape for name, shape, _ in name_table(npr, "full")}


def _fill(shape, kind, g):
    def randn(std, mean=0.0):
        return torch.randn(shape, generator=g) * std + mean

    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    if kind == "weight":
        return randn(fan_in ** -0.5)
    if kind == "assign":      # q.k / sqrt(d) with a spread of about 4: groups win pixels clearly
        return randn(2.0 * fan_in ** -0.5)
    if kind == "npr_out":     # the reconstruction about as large as the tokens, so a missing NPR shows
        return randn(3.0 * fan_in ** -0.5)
    if kind == "bias":
        return randn(0.02)
    if kind == "gain":
        return randn(0.1, 1.0)
    if kind == "bn_mean":
        return randn(0.1)
    if kind == "bn_var":
        return torch.rand(shape, generator=g) + 0.5
    if kind == "count":
        return torch.tensor(1000, dtype=torch.int64)
    if kind in ("pos", "group_token"):
        return randn(0.2)
    if kind == "embedding":
        return randn(0.5)
    if kind == "prototypes":  # unit rows along the feature axis (the text buffer is [1, 8, 1]: along the 8)
        t = torch.randn(shape, generator=g)
        axis = 1 if shape[-1] == 1 else -1
        return t / t.norm(dim=axis, keepdim=True)
    if kind == "scale":       # log of the temperature's inverse: exp() in [12, 55], below the clamp at 100
        return torch.empty(()).uniform_(2.5, 4.0, generator=g)
    raise ValueError(kind)


def authors_state_dict(npr=True, size="small", seed=0) -> dict:
    """A state dict with the authors' names and shapes and seeded random values (``npr=False``: GroupViT)."""
    g = torch.Generator().manual_seed(seed)
    return {name: _fill(shape, kind, g) for name, shape, kind in name_table(npr, size)}


def _authors_config(state, kind):
    c = {"pgseg": "PGSeg", "groupvit": "GroupViT"}[kind]
    return AuthorsConfig(model=AuthorsConfig(type="MultiLabelContrastive", img_encoder=dict(type=c),
                                             text_encoder=dict(type="TextTransformer"), contrast_temperature=0.07),
                         train=AuthorsConfig(amp_opt_level="O1", epochs=30), output=c)


def save_authors_checkpoint(path, state, kind="pgseg", with_metrics=False):
    """``torch.save`` a dict laid out like the released files: 'model', 'optimizer', 'lr_scheduler', ['metrics'],
    'max_accuracy', 'max_miou', 'epoch', 'config' (an AuthorsConfig, so weights_only=True refuses it), 'amp'."""
    ckpt = {"model": state, "optimizer": {}, "lr_scheduler": {}}
    if with_metrics:
        ckpt["metrics"] = {"max_accuracy": 42.7, "max_miou": 53.8}
    ckpt.update(max_accuracy=42.7, max_miou=53.8, epoch=29, config=_authors_config(state, kind),
                amp={"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}})
    torch.save(ckpt, path)


def save_plain_state_dict(path, state):
    """The state dict alone: tensors only, readable with weights_only=True."""
    torch.save({k: v.clone() for k, v in state.items()}, path)


def small_bpe(path, vocab_size: int, words):
    """A CLIP-format BPE file (gzip) whose vocabulary has exactly `vocab_size` entries: the 512 byte symbols, the
    merges that spell `words`, made-up filler words' merges up to the size, and the two special tokens."""
    import gzip

    from ovss_ros.pgseg.tokenizer import CLIP_MERGES, word_merges

    wanted = vocab_size - 514
    merges = word_merges(words)
    filler = (f"{a}{b}{c}" for a in "qwxz" for b in "aeiou" for c in "jkvy")
    for word in filler:
        if len(merges) >= wanted:
            break
        merges += [m for m in word_merges([word]) if m not in merges]
    merges = merges[:wanted]
    if len(merges) != wanted or len(merges) >= CLIP_MERGES:
        raise ValueError(f"cannot make a BPE of {vocab_size} entries from {len(merges)} merges")
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return path
