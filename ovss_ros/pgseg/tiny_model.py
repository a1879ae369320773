"""Small GroupViT / PGSeg models built from configs: for tests, benchmarks and the toy world.

Random weights carry no knowledge: they exercise the code path and cost the real compute, nothing more."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from .loading import IMAGENET_MEAN, IMAGENET_STD
from .model import PGSegModel
from .tokenizer import word_merges, write_tokenizer

# Shapes: "tiny" is the toy world's (96 px, patch 8: 144 patches -> 24 -> 8 groups); "real" is the released
# PGSeg's (embed 384, depths 6/3/3, 64/8 group tokens, 4096-wide NPR and projectors, CLIP text 256 x 12).
ARCHITECTURES = {
    "tiny": dict(image_size=96, patch_size=8, hidden=128, heads=4, depths=(2, 1, 1), group_tokens=(24, 8),
                 text_hidden=128, text_layers=3, text_heads=4, projection=128, projection_inner=512, npr_inner=512),
    "real": dict(image_size=224, patch_size=16, hidden=384, heads=6, depths=(6, 3, 3), group_tokens=(64, 8),
                 text_hidden=256, text_layers=12, text_heads=4, projection=256, projection_inner=4096,
                 npr_inner=4096),
}


def groupvit_config(vocab_size: int, bos: int, eos: int, npr: bool, image_size: int, patch_size: int, hidden: int,
                    heads: int, depths, group_tokens, text_hidden: int, text_layers: int, text_heads: int,
                    projection: int, projection_inner: int, npr_inner: int):
    """transformers GroupViTConfig (+ PGSeg's npr_prototypes when `npr`) from a few numbers."""
    from transformers import GroupViTConfig

    groups = list(group_tokens)
    cfg = GroupViTConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=text_hidden, intermediate_size=4 * text_hidden,
                         num_hidden_layers=text_layers, num_attention_heads=text_heads, max_position_embeddings=77,
                         bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=hidden, intermediate_size=4 * hidden, depths=list(depths),
                           num_hidden_layers=sum(depths), num_group_tokens=groups + [0],
                           num_output_groups=groups + [groups[-1]], num_attention_heads=heads,
                           image_size=image_size, patch_size=patch_size),
        projection_dim=projection, projection_intermediate_dim=projection_inner)
    if npr:
        cfg.npr_prototypes = groups
        cfg.npr_inner_dim = npr_inner
    return cfg


def build_pgseg(words: Iterable[str], directory: Path, architecture: str = "tiny", npr: bool = True, seed: int = 0,
                sharpness: Optional[float] = None, **overrides) -> tuple[PGSegModel, object]:
    """(model in eval mode, tokenizer) with random weights; the tokenizer is written to `directory` (a BPE
    that spells `words`). `sharpness`: None keeps transformers' init; a number redraws the weights with
    `sharpen` (decisions with margins, for tests that compare numerics)."""
    tok = write_tokenizer(word_merges(words), Path(directory))
    torch.manual_seed(seed)
    arch = {**ARCHITECTURES[architecture], **overrides}
    model = PGSegModel(groupvit_config(len(tok), tok.bos_token_id, tok.eos_token_id, npr, **arch))
    if sharpness is not None:
        sharpen(model, sharpness, seed)
    return model.eval(), tok


@torch.no_grad()
def sharpen(model: PGSegModel, assign_gain: float, seed: int = 0) -> PGSegModel:
    """Redraw the weights at fan-in scale (std 1/sqrt(fan_in)) and the grouping blocks' assignment q/k at
    `assign_gain` times that, in place.

    transformers' init (std 0.02 everywhere) leaves a random GroupViT nearly flat: its group assignment logits
    differ by ~1e-4, so which group takes a pixel is a float near-tie that a half-precision pass flips, which
    says nothing about the pass. At fan-in scale the tokens keep their spread through the layers, the assignments
    are clear (gain 2: logits spread ~4) and groups score classes with margins, as a trained model's do."""
    g = torch.Generator().manual_seed(seed)

    def draw(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            assign = ".assign.q_proj" in name or ".assign.k_proj" in name
            draw(module.weight, (assign_gain if assign else 1.0) * module.weight[0].numel() ** -0.5)
            if module.bias is not None:
                draw(module.bias, 0.02)
        elif isinstance(module, nn.LayerNorm):
            draw(module.weight, 0.1, 1.0)
            draw(module.bias, 0.02)
        elif isinstance(module, nn.Embedding):       # text tokens and positions
            draw(module.weight, 0.5)
    for name, p in model.named_parameters():
        if name.endswith("group_token") or name.endswith("position_embeddings"):
            draw(p, 0.2)
    return model


def save_pgseg(model: PGSegModel, tokenizer, directory: Path, image_size: Optional[int] = None) -> Path:
    """A checkpoint directory `Segmenter.from_pretrained` loads offline."""
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
         "size": image_size or model.config.vision_config.image_size}, indent=1) + "\n")
    return directory
