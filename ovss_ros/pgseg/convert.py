"""ovss-convert-pgseg IN.pth OUT_DIR: the authors' PGSeg checkpoint (github.com/Ferenas/PGSeg) or an NVlabs GroupViT
checkpoint (github.com/NVlabs/GroupViT) -> a directory that `Segmenter.from_pretrained(OUT_DIR)` loads offline:
model.safetensors + config.json (transformers GroupViT, plus PGSeg's NPR modules) + the CLIP BPE tokenizer.

Reading: by default with a restricted unpickler. It admits torch's tensor-rebuild functions, storage types and
plain containers; any other global (the released files pickle their training config as an OmegaConf object)
becomes an inert placeholder that keeps its state and runs nothing, so the weights convert without omegaconf
installed and without running code from the file. If the weights themselves need such a class, the conversion
stops and names it. `--trust-pickle` unpickles the whole file with pickle, which runs whatever code the file
names: only for a file from a source you trust.

Key mapping: the authors' names (timm-style vision blocks with fused qkv, CLIP-style text blocks with fused
in_proj, Conv1d projectors) to transformers' GroupViTModel, then `img_encoder.layers.{s}.downsample_spatial.*`
(PGSeg's NPR) to `npr.{s}.*`. Weights used only by the authors' training loss are dropped and listed.

Head counts are not in the tensor shapes. At the released widths (image encoder 384, text 256) they default to
the released 6 and 256 // 64 = 4; at any other width both --vision-heads and --text-heads must be given, since a
wrong guess converts silently and segments wrongly.

Output: written into a hidden folder beside OUT_DIR and renamed to OUT_DIR only once complete (removed on any
failure), so OUT_DIR never exists half written. OUT_DIR must not exist or must be an empty directory.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Optional

from .checkpoint_file import ConversionError, one_line, read_checkpoint
from .loading import CONVERSION_RECORD, CONVERTED_BY, LICENCE

# The only widths whose head counts are known: (image encoder, text) of the released PGSeg and GroupViT.
RELEASED_WIDTHS = (384, 256)
RELEASED_VISION_HEADS = 6

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


def resolve_heads(vision_width: int, text_width: int, vision_heads: Optional[int] = None,
                  text_heads: Optional[int] = None) -> tuple[int, int]:
    """(vision heads, text heads). Head counts are not in the tensor shapes: at the
    released widths the released counts apply to whatever is not given; at any other width both must be given,
    because a wrong count still converts and then segments wrongly with nothing to show for it."""
    given = vision_heads is not None and text_heads is not None
    if (vision_width, text_width) != RELEASED_WIDTHS and not given:
        raise ConversionError(
            f"image encoder width {vision_width} and text width {text_width} are not the released ones "
            f"{RELEASED_WIDTHS}, so the released head counts may not apply: give both --vision-heads and "
            "--text-heads (the counts the model was trained with). Head counts are not stored in the tensor "
            "shapes, and a wrong guess converts silently but segments wrongly")
    vision = RELEASED_VISION_HEADS if vision_heads is None else int(vision_heads)
    text = max(1, text_width // 64) if text_heads is None else int(text_heads)   # the authors' rule for text
    for what, heads, width in (("--vision-heads", vision, vision_width), ("--text-heads", text, text_width)):
        if heads < 1 or width % heads:
            raise ConversionError(f"{what} {heads} does not divide the width {width}")
    return vision, text


def infer_config(state: dict, vision_heads: Optional[int] = None, text_heads: Optional[int] = None):
    """transformers GroupViTConfig (+ npr_prototypes) from the authors' tensor shapes, with the head counts of
    `resolve_heads`."""
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
        vision_heads, text_heads = resolve_heads(int(dim), int(width), vision_heads, text_heads)
        cfg = GroupViTConfig(
            text_config=dict(vocab_size=vocab, hidden_size=width, num_hidden_layers=text_layers,
                             num_attention_heads=text_heads,
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


# ---- output -------------------------------------------------------------------------------------------------------

def check_out_dir(out_dir: Path) -> None:
    """OUT_DIR may be new or an empty directory; anything else is refused rather than mixed with or replaced
    (a previous conversion, or files of the user's, would be lost or blended in)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ConversionError(f"{out_dir} exists and is not a directory: give a new folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ConversionError(f"{out_dir} exists and is not empty: give a new folder, or remove it first")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write(out: Path, model, config, bpe: Optional[Path], tokenizer: Optional[Path]) -> None:
    """Everything but the conversion record, into `out`."""
    from .loading import IMAGENET_MEAN, IMAGENET_STD
    from .tokenizer import read_bpe_file, write_tokenizer

    model.save_pretrained(out, safe_serialization=True)
    if bpe is not None:
        try:
            merges = read_bpe_file(Path(bpe))
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise ConversionError(f"cannot read the BPE file {bpe}: {type(exc).__name__}: {one_line(exc)}") from None
        tok = write_tokenizer(merges, out, context_length=config.text_config.max_position_embeddings)
    else:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(tokenizer))
        except (OSError, ValueError) as exc:
            raise ConversionError(f"cannot load the tokenizer {tokenizer}: {one_line(exc)}") from None
        tok.save_pretrained(out)
    if len(tok) != config.text_config.vocab_size:
        raise ConversionError(f"the tokenizer has {len(tok)} entries but the checkpoint's text embedding has "
                              f"{config.text_config.vocab_size} rows: wrong BPE file?")
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
         "size": config.vision_config.image_size}, indent=1) + "\n")


def convert(src: Path, out_dir: Path, bpe: Optional[Path] = None, tokenizer: Optional[Path] = None,
            trust_pickle: bool = False, vision_heads: Optional[int] = None,
            text_heads: Optional[int] = None) -> dict:
    """Convert and save; returns the conversion record (also written as conversion.json). Head counts None =
    not given: the released ones at the released widths, refused at any other width (see resolve_heads)."""
    from .model import PGSegModel

    src, out_dir = Path(src), Path(out_dir)
    if (bpe is None) == (tokenizer is None):
        raise ConversionError("give exactly one of --bpe (CLIP's bpe_simple_vocab_16e6.txt.gz, shipped with the "
                              "authors' code) or --tokenizer (a saved CLIP tokenizer directory)")
    check_out_dir(out_dir)
    state, skipped = read_checkpoint(src, trust_pickle)
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
    # the loader refuses a folder with this marker but no complete conversion.json (loading.check_conversion)
    config.converted_by = CONVERTED_BY
    record = {"converted_by": CONVERTED_BY, "source": str(src), "sha256": _sha256(src),
              "kind": "pgseg" if getattr(config, "npr_prototypes", None) else "groupvit",
              "vision_heads": config.vision_config.num_attention_heads,
              "text_heads": config.text_config.num_attention_heads,
              "heads_from": {"vision": "given" if vision_heads is not None else "released default",
                             "text": "given" if text_heads is not None else "text width // 64 (released rule)"},
              "tensors_in": len(state), "tensors_out": len(tensors), "dropped_training_only": sorted(dropped),
              "not_unpickled": skipped, "licence": LICENCE}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # a hidden sibling (same file system, so the final rename is one step); plain mkdir keeps the umask's mode
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    partial.mkdir()
    try:
        try:
            _write(partial, model, config, bpe, tokenizer)
            (partial / CONVERSION_RECORD).write_text(json.dumps(record, indent=1) + "\n")
        except OSError as exc:
            raise ConversionError(f"cannot write the converted model beside {out_dir}: {one_line(exc)}") from None
        check_out_dir(out_dir)          # again: something may have appeared there meanwhile
        if out_dir.is_dir():
            out_dir.rmdir()             # empty (checked); rename onto it is not portable
        os.rename(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ovss-convert-pgseg", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="the authors' .pth (PGSeg or NVlabs GroupViT)")
    ap.add_argument("out_dir", type=Path, help="a new folder (or an empty one); written only when complete")
    ap.add_argument("--bpe", type=Path, help="CLIP's BPE merges file (bpe_simple_vocab_16e6.txt.gz)")
    ap.add_argument("--tokenizer", type=Path, help="or: a saved CLIP tokenizer directory")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="unpickle the whole file (runs code the file names; only for files you trust). Not needed "
                         "for the released files: by default a restricted reader takes the weights and skips the "
                         "training config")
    ap.add_argument("--vision-heads", type=int, default=None,
                    help="attention heads of the image encoder (default 6, the released count; required, with "
                         "--text-heads, when the widths are not the released 384 / 256)")
    ap.add_argument("--text-heads", type=int, default=None,
                    help="attention heads of the text encoder (default: text width // 64, the authors' rule)")
    a = ap.parse_args(argv)
    try:
        rec = convert(a.checkpoint, a.out_dir, a.bpe, a.tokenizer, a.trust_pickle, a.vision_heads, a.text_heads)
    except ConversionError as exc:
        print(f"ovss-convert-pgseg: error: {one_line(exc, limit=10_000)}", file=sys.stderr)
        return 2
    print(f"{rec['kind']} checkpoint converted to {a.out_dir} ({rec['tensors_out']} tensors; heads "
          f"{rec['vision_heads']} image / {rec['text_heads']} text; dropped training-only: "
          f"{', '.join(rec['dropped_training_only']) or 'none'})")
    print(f"licence: {LICENCE}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
