"""Small BLIP ITM models built from configs: for tests, benchmarks and the offline demo.

Random weights carry no knowledge: they exercise the code path and cost the real compute, nothing more.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import torch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
BASE_WORDS = ["a", "picture", "of", "an", "object", "the", "and"]


def word_tokenizer(words: Iterable[str], vocab_size: Optional[int] = None):
    """A word-level BERT-style fast tokenizer (lower-cased, punctuation split) that knows "[ENC]".

    Built with `tokenizers` directly: BertTokenizerFast(vocab_file=...) silently ignores the file in
    transformers 5.x (docs/toy_world.md).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in [*BASE_WORDS, *words]:
        for piece in w.lower().split():
            vocab.setdefault(piece, len(vocab))
    if vocab_size is not None:   # pad with unused rows so the embedding matches a real checkpoint's size
        for i in range(len(vocab), vocab_size):
            vocab[f"[unused{i}]"] = i
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]", bos_token="[DEC]",
                             additional_special_tokens=["[ENC]"], do_lower_case=True)


def blip_config(vocab_size: int, image_size: int = 96, patch_size: int = 8, vision_hidden: int = 64,
                vision_layers: int = 2, vision_heads: int = 4, text_hidden: int = 64, text_layers: int = 3,
                text_heads: int = 4, vision_mlp: Optional[int] = None, text_mlp: Optional[int] = None):
    from transformers import BlipConfig

    return BlipConfig(
        vision_config=dict(hidden_size=vision_hidden, intermediate_size=vision_mlp or 4 * vision_hidden,
                           num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                           image_size=image_size, patch_size=patch_size, initializer_range=0.02,
                           layer_norm_eps=1e-6),
        text_config=dict(vocab_size=vocab_size, hidden_size=text_hidden,
                         intermediate_size=text_mlp or 4 * text_hidden, num_hidden_layers=text_layers,
                         num_attention_heads=text_heads, encoder_hidden_size=vision_hidden,
                         max_position_embeddings=512, pad_token_id=0, sep_token_id=3, bos_token_id=5),
        projection_dim=min(256, text_hidden))


# Real BLIP shapes (same compute as the Salesforce checkpoints, random weights).
ARCHITECTURES = {
    "tiny": dict(),
    "base": dict(image_size=384, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12,
                 text_hidden=768, text_layers=12, text_heads=12),
    "large": dict(image_size=384, patch_size=16, vision_hidden=1024, vision_layers=24, vision_heads=16,
                  text_hidden=768, text_layers=12, text_heads=12, text_mlp=3072),
}


def build_blip(words: Iterable[str], architecture: str = "tiny", seed: int = 0, real_vocab: bool = False,
               sharpness: Optional[float] = None, **config_overrides):
    """(model, processor) with random weights. `real_vocab` pads the vocabulary to BLIP's 30524 rows.
    `sharpness`: None keeps transformers' init; a number redraws the weights with `sharpen`. Where transformers
    can build no BLIP image processor (neither torchvision nor pillow) the processor is the tokenizer alone,
    which the engine takes as well (CLIP's mean and std, as BLIP's)."""
    from transformers import BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    tokenizer = word_tokenizer(words, vocab_size=30524 if real_vocab else None)
    cfg = blip_config(len(tokenizer), **{**ARCHITECTURES[architecture], **config_overrides})
    torch.manual_seed(seed)
    model = BlipForImageTextRetrieval(cfg).eval()
    if sharpness is not None:
        sharpen(model, sharpness, seed)
    size = cfg.vision_config.image_size
    try:
        image_processor = BlipImageProcessor(size={"height": size, "width": size})
    except ImportError:      # a bare machine: torch, transformers and OpenCV only
        return model, tokenizer
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


@torch.no_grad()
def sharpen(model, cross_gain: float, seed: int = 0):
    """Redraw the linear and patch weights at fan-in scale (std 1/sqrt(fan_in)) and the text cross-attention's
    query/key at `cross_gain` times that, in place.

    transformers' init (std 0.02) leaves a random BLIP's GradCAM class maps nearly equal (they differ by ~1e-3
    of their value), so each pixel's class is a float near-tie. At fan-in scale the image tokens keep their
    spread and each class word's cross-attention differs across patches and across words."""
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            cross = "crossattention.self.query" in name or "crossattention.self.key" in name
            std = (cross_gain if cross else 1.0) * module.weight[0].numel() ** -0.5
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * std)
    return model


@torch.no_grad()
def resize_image_grid(model, processor, image_size: int):
    """Give a BLIP a new square input size in place: its position table is resampled to the new patch grid by
    transformers' own `interpolate_pos_encoding` (bicubic), so a model trained at one size can start training
    at another. The processor resizes to the new size too."""
    from torch import nn

    emb = model.vision_model.embeddings
    n = (image_size // emb.patch_size) ** 2
    dummy = torch.zeros(1, 1 + n, emb.embed_dim, dtype=emb.position_embedding.dtype)
    table = emb.interpolate_pos_encoding(dummy, image_size, image_size)
    emb.position_embedding = nn.Parameter(table.contiguous())
    emb.image_size, emb.num_patches, emb.num_positions = image_size, n, n + 1
    model.config.vision_config.image_size = image_size
    processor.image_processor.size = {"height": image_size, "width": image_size}
    return model


def save_model(model, processor, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


if __name__ == "__main__":   # python -m ovss_ros.pnp_ovss.tiny_model OUT_DIR [words...]: a random-weight tiny checkpoint
    import sys

    out_dir = Path(sys.argv[1])
    words = sys.argv[2:] or ["red", "green", "blue", "yellow", "circle", "square", "triangle"]
    save_model(*build_blip(words, seed=0), out_dir)
    print(f"random-weight tiny BLIP ITM saved to {out_dir}")
