"""ovss-convert-pgseg IN.pth OUT_DIR: the authors' PGSeg checkpoint (github.com/Ferenas/PGSeg) or an NVlabs GroupViT
checkpoint (github.com/NVlabs/GroupViT) -> a directory that `Segmenter.from_pretrained(OUT_DIR)` loads offline:
model.safetensors + config.json (transformers GroupViT, plus PGSeg's NPR modules) + the CLIP BPE tokenizer.

The file is read with torch.load(weights_only=True). The released files also pickle their training config (an
OmegaConf object), which that refuses; `--trust-pickle` unpickles them fully, which runs whatever code the file
names: only for a file from a source you trust.

Key mapping: the authors' names (timm-style vision blocks with fused qkv, CLIP-style text blocks with fused
in_proj, Conv1d projectors) to transformers' GroupViTModel, then `img_encoder.layers.{s}.downsample_spatial.*`
(PGSeg's NPR) to `npr.{s}.*`. Weights used only by the authors' training loss are dropped and listed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
import sys
from pathlib import Path
from typing import Optional

import torch

# Present in the released checkpoints, unused at inference (training losses only).
TRAINING_ONLY = (r"img_encoder\.logit_scale", r"img_encoder\.mapping_text\..*", r"text_encoder\.Atten\..*",
                 r"multi_label_logit_scale")

_V = "vision_model.encoder.stages"
_RULES = [   # (authors' name, transformers' name); applied to the whole key, first match wins
    (r"img_encoder\.pos_embed", "vision_model.embeddings.position_embeddings"),
    (r"img_encoder\.patch_embed\.proj\.(\w+)", r"vision_model.embeddings.patch_embeddings.projection.\1"),
    (r"img_encoder\.patch_embed\.norm\.(\w+)", r"vision_model.embeddings.layernorm.\1"),
    (r"img_encoder\.norm\.(\w+)", r"vision_model.layernorm.\1"),
    (r"img_encoder\.layers\.(\d+)\.group_token", _V + r".\1.group_token"),
    (r"img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.norm([12])\.(\w+)", _V + r".\1.layers.\2.layer_norm\3.\4"),
    (r"img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(\w+)", _V + r".\1.layers.\2.self_attn.out_proj.\3"),
    (r"img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc[12]\.\w+)", _V + r".\1.layers.\2.mlp.\3"),
    (r"img_encoder\.layers\.(\d+)\.downsample\.pre_assign_attn\.attn\.proj\.(\w+)",
     _V + r".\1.downsample.pre_assign_attn.attn.out_proj.\2"),
    (r"img_encoder\.layers\.(\d+)\.downsample\.(.+)", _V + r".\1.downsample.\2"),
    (r"img_encoder\.layers\.(\d+)\.group_projector\.(.+)", _V + r".\1.group_projector.\2"),
    (r"text_encoder\.token_embedding\.weight", "text_model.embeddings.token_embedding.weight"),
    (r"text_encoder\.positional_embedding", "text_model.embeddings.position_embedding.weight"),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(\w+)",
     r"text_model.encoder.layers.\1.self_attn.out_proj.\2"),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.ln_([12])\.(\w+)", r"text_model.encoder.layers.\1.layer_norm\2.\3"),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(\w+)", r"text_model.encoder.layers.\1.mlp.fc1.\2"),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(\w+)", r"text_model.encoder.layers.\1.mlp.fc2.\2"),
    (r"text_encoder\.ln_final\.(\w+)", r"text_model.final_layer_norm.\1"),
    (r"img_projector\.linear_hidden\.([01])\.(\w+)", r"visual_projection.\1.\2"),
    (r"img_projector\.linear_out\.(\w+)", r"visual_projection.3.\1"),
    (r"text_projector\.linear_hidden\.([01])\.(\w+)", r"text_projection.\1.\2"),
    (r"text_projector\.linear_out\.(\w+)", r"text_projection.3.\1"),
    (r"img_encoder\.layers\.(\d+)\.downsample_spatial\.mu", r"npr.\1.mu"),
    (r"img_encoder\.layers\.(\d+)\.downsample_spatial\.mapping_x\.linear_hidden\.([01])\.(\w+)", r"npr.\1.mapping_x.\2.\3"),
    (r"img_encoder\.layers\.(\d+)\.downsample_spatial\.mapping_x\.linear_out\.(\w+)", r"npr.\1.mapping_x.3.\2"),
    (r"logit_scale", "logit_scale"),
]
_FUSED = [   # fused q/k/v projections, split in three along dim 0
    (r"img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", _V + r".\1.layers.\2.self_attn.{}_proj.\3"),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)",
     r"text_model.encoder.layers.\1.self_attn.{}_proj.\2"),
]


class ConversionError(RuntimeError):
    """The checkpoint cannot be converted; the message says why."""


def read_checkpoint(path: Path, trust_pickle: bool = False) -> dict:
    """The model's state dict from a checkpoint file ({'model': ...}, {'state_dict': ...} or flat)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        raise ConversionError(
            f"{path} holds more than tensors (the authors' checkpoints also pickle their training config), and "
            "torch.load(weights_only=True) refuses to unpickle it. Unpickling can run code from the file: if you "
            f"trust where it came from, run again with --trust-pickle. ({' '.join(str(exc).split())[:300]})") from None
    except (OSError, RuntimeError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors (or a dict with one under 'model')")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def rename(state: dict) -> tuple[dict, list[str], list[str]]:
    """(transformers-named tensors, dropped training-only names, names no rule knows)."""
    out, dropped, unknown = {}, [], []
    for key, value in state.items():
        if any(re.fullmatch(p, key) for p in TRAINING_ONLY):
            dropped.append(key)
            continue
        for pattern, target in _FUSED:
            m = re.fullmatch(pattern, key)
            if m:
                for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                    out[m.expand(target).format(part)] = chunk.clone()
                break
        else:
            for pattern, target in _RULES:
                m = re.fullmatch(pattern, key)
                if m:
                    name = m.expand(target)
                    # Conv1d(k=1) weights [out, in, 1] -> Linear [out, in]
                    squeeze = value.dim() == 3 and value.shape[-1] == 1 and (
                        "projection." in name or ".mapping_x." in name)
                    out[name] = value.squeeze(-1) if squeeze else value
                    break
            else:
                unknown.append(key)
    return out, dropped, unknown


def infer_config(state: dict, vision_heads: int = 6, text_heads: Optional[int] = None):
    """transformers GroupViTConfig (+ npr_prototypes) from the authors' tensor shapes. Head counts are not in
    the shapes: the released models use 6 (vision) and width // 64 (text, the authors' rule)."""
    from transformers import GroupViTConfig

    def count(pattern: str) -> int:
        return len({m.group(1) for k in state for m in [re.fullmatch(pattern, k)] if m})

    try:
        pos = state["img_encoder.pos_embed"]
        dim, patch = pos.shape[-1], state["img_encoder.patch_embed.proj.weight"].shape[-1]
        stages = count(r"img_encoder\.layers\.(\d+)\..*")
        depths = [count(rf"img_encoder\.layers\.{s}\.blocks\.(\d+)\..*") for s in range(stages)]
        groups = [state[f"img_encoder.layers.{s}.group_token"].shape[1] if f"img_encoder.layers.{s}.group_token"
                  in state else 0 for s in range(stages)]
        outputs = [state[f"img_encoder.layers.{s}.downsample.mlp_inter.fc2.weight"].shape[0]
                   for s in range(stages) if groups[s]]
        width = state["text_encoder.positional_embedding"].shape[1]
        context = state["text_encoder.positional_embedding"].shape[0]
        vocab = state["text_encoder.token_embedding.weight"].shape[0]
        text_layers = count(r"text_encoder\.transformer\.resblocks\.(\d+)\..*")
        cfg = GroupViTConfig(
            text_config=dict(vocab_size=vocab, hidden_size=width, num_hidden_layers=text_layers,
                             num_attention_heads=text_heads or max(1, width // 64),
                             intermediate_size=state["text_encoder.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                             max_position_embeddings=context, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                             pad_token_id=vocab - 1),
            vision_config=dict(hidden_size=dim, num_attention_heads=vision_heads, patch_size=patch,
                               image_size=int(round(pos.shape[1] ** 0.5)) * patch, depths=depths,
                               num_hidden_layers=sum(depths), num_group_tokens=groups,
                               num_output_groups=outputs + outputs[-1:],
                               intermediate_size=state["img_encoder.layers.0.blocks.0.mlp.fc1.weight"].shape[0]),
            projection_dim=state["img_projector.linear_out.weight"].shape[0],
            projection_intermediate_dim=state["img_projector.linear_hidden.0.weight"].shape[0])
    except KeyError as exc:
        raise ConversionError(f"not a GroupViT / PGSeg checkpoint: it has no {exc.args[0]!r}") from None
    npr = [state[f"img_encoder.layers.{s}.downsample_spatial.mu"].shape[1] for s in range(stages)
           if f"img_encoder.layers.{s}.downsample_spatial.mu" in state]
    if npr:
        cfg.npr_prototypes = npr
        cfg.npr_inner_dim = state["img_encoder.layers.0.downsample_spatial.mapping_x.linear_hidden.0.weight"].shape[0]
    return cfg


def convert(src: Path, out_dir: Path, bpe: Optional[Path] = None, tokenizer: Optional[Path] = None,
            trust_pickle: bool = False, vision_heads: int = 6, text_heads: Optional[int] = None) -> dict:
    """Convert and save; returns the conversion record (also written as conversion.json)."""
    from .model import PGSegModel
    from .tokenizer import read_bpe_file, write_tokenizer

    if (bpe is None) == (tokenizer is None):
        raise ConversionError("give exactly one of --bpe (CLIP's bpe_simple_vocab_16e6.txt.gz, shipped with the "
                              "authors' code) or --tokenizer (a saved CLIP tokenizer directory)")
    state = read_checkpoint(Path(src), trust_pickle)
    config = infer_config(state, vision_heads, text_heads)
    tensors, dropped, unknown = rename(state)
    model = PGSegModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(unknown + [k for k in tensors if k not in expected])
    wrong = sorted(k for k in tensors if k in expected and tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = [f"missing keys: {', '.join(missing)}" if missing else "",
                 f"unexpected keys: {', '.join(unexpected)}" if unexpected else "",
                 "shape mismatches: " + ", ".join(f"{k} {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}"
                                                  for k in wrong) if wrong else ""]
        raise ConversionError(f"{src} does not match the architecture read from its shapes; "
                              + "; ".join(p for p in parts if p))
    model.load_state_dict(tensors, strict=True)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    if bpe is not None:
        tok = write_tokenizer(read_bpe_file(Path(bpe)), out_dir, context_length=config.text_config.max_position_embeddings)
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer))
        tok.save_pretrained(out_dir)
    if len(tok) != config.text_config.vocab_size:
        raise ConversionError(f"the tokenizer has {len(tok)} entries but the checkpoint's text embedding has "
                              f"{config.text_config.vocab_size} rows: wrong BPE file?")
    from .loading import IMAGENET_MEAN, IMAGENET_STD

    (out_dir / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
         "size": config.vision_config.image_size}, indent=1) + "\n")
    record = {"source": str(src), "sha256": hashlib.sha256(Path(src).read_bytes()).hexdigest(),
              "kind": "pgseg" if getattr(config, "npr_prototypes", None) else "groupvit",
              "tensors_in": len(state), "tensors_out": len(tensors), "dropped_training_only": sorted(dropped)}
    (out_dir / "conversion.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ovss-convert-pgseg", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="the authors' .pth (PGSeg or NVlabs GroupViT)")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--bpe", type=Path, help="CLIP's BPE merges file (bpe_simple_vocab_16e6.txt.gz)")
    ap.add_argument("--tokenizer", type=Path, help="or: a saved CLIP tokenizer directory")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="unpickle the whole file (runs code the file names; only for files you trust)")
    ap.add_argument("--vision-heads", type=int, default=6, help="attention heads of the image encoder (6 released)")
    ap.add_argument("--text-heads", type=int, default=None, help="default: text width // 64, the authors' rule")
    a = ap.parse_args(argv)
    try:
        rec = convert(a.checkpoint, a.out_dir, a.bpe, a.tokenizer, a.trust_pickle, a.vision_heads, a.text_heads)
    except ConversionError as exc:
        print(f"ovss-convert-pgseg: error: {exc}", file=sys.stderr)
        return 2
    print(f"{rec['kind']} checkpoint converted to {a.out_dir} ({rec['tensors_out']} tensors; dropped training-only: "
          f"{', '.join(rec['dropped_training_only']) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
