"""Load a GroupViT / PGSeg checkpoint (Hub id or local directory) and know what it accepts.

A directory written by `ovss-convert-pgseg` (or `PGSegModel.save_pretrained`) carries PGSeg's NPR modules
(`npr_prototypes` in config.json); a plain transformers GroupViT checkpoint such as `nvidia/groupvit-gcc-yfcc`
loads as GroupViT with NPR off. A converter folder whose conversion record is missing or incomplete is refused
(`check_conversion`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..engine.config import check_vision_dtype
from ..engine.loading import (ModelLoadError, dtype_name, hub_errors, resolve_device, resolve_dtype,
                              resolve_dtype_name)
from ..engine.methods import check_method
from ..engine.vocabulary import VocabularyError, normalize_vocabulary, refuse_same_tokens
from .config import PGSegConfig
from .model import PGSegModel

# The authors normalise with ImageNet statistics on the 0-255 scale (mmseg's test pipeline).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ovss-convert-pgseg output. The marker is a config.json field only the converter writes (save_pgseg folders, the
# embedded toy model and transformers' GroupViT folders have none and load as before); the converter renames the
# folder into place with conversion.json already in it, so marker without a complete record = an unfinished
# conversion or an altered folder, refused rather than loaded into wrong results.
CONVERTED_BY = "ovss-convert-pgseg"
CONVERSION_RECORD = "conversion.json"
RECORD_FIELDS = ("converted_by", "source", "sha256", "kind", "vision_heads", "text_heads", "tensors_in",
                 "tensors_out", "dropped_training_only", "licence")
LICENCE = ("GroupViT and PGSeg weights are under NVIDIA's Source Code License (non-commercial use only); "
           "the converted folder carries that licence too")


@dataclass
class LoadedGroupViT:
    model: PGSegModel                 # eval mode, frozen
    tokenizer: object                 # CLIP BPE tokenizer
    image_mean: tuple
    image_std: tuple
    native_image_size: int
    device: torch.device
    name: str


def check_conversion(name: str, config, offline: bool, revision: Optional[str] = None) -> None:
    """A folder written by ovss-convert-pgseg must carry its complete conversion record (see CONVERTED_BY)."""
    if getattr(config, "converted_by", None) != CONVERTED_BY:
        return
    if Path(name).expanduser().is_dir():
        path = Path(name).expanduser() / CONVERSION_RECORD
        path = path if path.is_file() else None
    else:
        from transformers.utils import cached_file

        path = cached_file(name, CONVERSION_RECORD, local_files_only=offline, revision=revision,
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    again = "convert the checkpoint again with ovss-convert-pgseg"
    if path is None:
        raise ModelLoadError(f"cannot load model: '{name}' was written by ovss-convert-pgseg (config.json says so) "
                             f"but has no {CONVERSION_RECORD}: the conversion did not finish or the folder was "
                             f"altered; {again}")
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model: '{name}': {CONVERSION_RECORD} is unreadable "
                             f"({type(exc).__name__}); {again}") from None
    missing = [f for f in RECORD_FIELDS if not isinstance(record, dict) or f not in record]
    if missing:
        raise ModelLoadError(f"cannot load model: '{name}': {CONVERSION_RECORD} is incomplete (no "
                             f"{', '.join(missing)}); {again}")
    heads = (config.vision_config.num_attention_heads, config.text_config.num_attention_heads)
    if (record["vision_heads"], record["text_heads"]) != heads:
        raise ModelLoadError(f"cannot load model: '{name}': config.json has {heads[0]} image / {heads[1]} text "
                             f"attention heads but {CONVERSION_RECORD} records {record['vision_heads']} / "
                             f"{record['text_heads']}; {again}")


def _image_stats(name: str, offline: bool) -> tuple[tuple, tuple]:
    path = Path(name).expanduser() / "preprocessor_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        return tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))
    try:
        from transformers import AutoImageProcessor

        ip = AutoImageProcessor.from_pretrained(name, local_files_only=offline)
        return tuple(ip.image_mean), tuple(ip.image_std)
    except (OSError, ValueError, ImportError):
        return IMAGENET_MEAN, IMAGENET_STD


def load_groupvit(model: Union[str, os.PathLike], device: Union[str, torch.device] = "auto",
                  dtype: Union[str, torch.dtype] = "float32", local_files_only: Optional[bool] = None,
                  revision: Optional[str] = None) -> LoadedGroupViT:
    """PGSegModel (NPR when the checkpoint has it) and its tokenizer. Safetensors only, no remote code."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    name = str(model)
    dev = resolve_device(device)
    with hub_errors(name, local_files_only) as offline:
        config = AutoConfig.from_pretrained(name, local_files_only=offline, revision=revision)
        check_method(config.model_type, "pgseg", name)
        check_conversion(name, config, offline, revision)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline, revision=revision)
        net = PGSegModel.from_pretrained(name, config=config, local_files_only=offline, revision=revision,
                                         use_safetensors=True)
        mean, std = _image_stats(name, offline)
    return wrap_groupvit(net, tokenizer, dev, resolve_dtype(dtype), name=name, image_mean=mean, image_std=std)


def wrap_groupvit(model, tokenizer, device=None, dtype=None, name: Optional[str] = None,
                  image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD) -> LoadedGroupViT:
    """An in-memory PGSegModel (or transformers GroupViTModel, run without NPR) and its tokenizer."""
    from transformers import GroupViTModel

    if not isinstance(model, GroupViTModel):
        raise TypeError(f"model: expected a PGSegModel or transformers GroupViTModel, got {type(model).__name__}")
    if not isinstance(model, PGSegModel):       # same weights, plus the (absent) NPR attribute
        plain, model = model, PGSegModel(model.config)
        model.load_state_dict(plain.state_dict())
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    to = {"device": dev} if dtype is None else {"device": dev, "dtype": resolve_dtype(dtype)}
    model.eval().requires_grad_(False).to(**to)
    name = name or getattr(model.config, "_name_or_path", "") or "in-memory model"
    return LoadedGroupViT(model, tokenizer, tuple(image_mean), tuple(image_std),
                          int(model.config.vision_config.image_size), dev, name)


# config.json fields of PGSeg's confidence (docs/confidence.md): temperatures of the group-class softmax and of
# the pixel-to-group assignment, fitted on labelled frames of the model; absent = 1, the model's own probabilities.
TEMPERATURE_FIELDS = ("confidence_temperature", "confidence_assignment_temperature")


def confidence_temperatures(model_config, name: str = "") -> tuple[float, float]:
    """(T_class, T_assign) from the checkpoint's config; a bad value is refused at load."""
    out = []
    for field in TEMPERATURE_FIELDS:
        t = getattr(model_config, field, None)
        if t is None:
            t = 1.0
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < float(t) < float("inf")):
            raise ModelLoadError(f"cannot load model: '{name}': config.json's {field}={t!r} is not a positive "
                                 "number")
        out.append(float(t))
    return out[0], out[1]


@dataclass
class ClassTokens:
    input_ids: torch.Tensor        # [C, T]
    attention_mask: torch.Tensor   # [C, T]


class PGSegCheck:
    """What a GroupViT checkpoint accepts, from its config and tokenizer alone (no weights): the node holds
    one from configure on, so settings and vocabularies are refused with the same reasons loaded or not."""

    def __init__(self, model_config, tokenizer, name: str = "", weights_dtype: str = "float32") -> None:
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.name = name
        self.weights_dtype = weights_dtype    # what the weights are (or will be) loaded as: limits vision_dtype
        self.max_tokens = int(model_config.text_config.max_position_embeddings)   # CLIP's 77
        self.patch_size = int(model_config.vision_config.patch_size)
        self.native_image_size = int(model_config.vision_config.image_size)
        self.confidence_temperatures = confidence_temperatures(model_config, name)

    @classmethod
    def from_loaded(cls, loaded: LoadedGroupViT) -> "PGSegCheck":
        return cls(loaded.model.config, loaded.tokenizer, loaded.name,
                   dtype_name(next(loaded.model.parameters()).dtype))

    @classmethod
    def from_pretrained(cls, model, local_files_only: Optional[bool] = None, revision: Optional[str] = None,
                        dtype: str = "float32"):
        """`dtype`: what the weights will be loaded as."""
        from transformers import AutoConfig, AutoTokenizer

        name, weights = str(model), resolve_dtype_name(dtype)
        with hub_errors(name, local_files_only) as offline:
            config = AutoConfig.from_pretrained(name, local_files_only=offline, revision=revision)
            check_method(config.model_type, "pgseg", name)
            check_conversion(name, config, offline, revision)
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline, revision=revision)
        return cls(config, tokenizer, name, weights)

    def check_config(self, cfg: PGSegConfig) -> PGSegConfig:
        cfg.validate()
        check_vision_dtype(cfg.vision_dtype, self.weights_dtype)
        for field in ("image_size", "crop_size", "crop_stride"):
            value = getattr(cfg, field)
            if value is not None and value % self.patch_size:
                raise ValueError(f"{field}={value} is not a multiple of the patch size {self.patch_size}")
        return cfg

    def prompts(self, classes: Sequence[str], cfg: PGSegConfig) -> tuple[tuple, ClassTokens]:
        """Checked names and their token ids; a prompt longer than the text model's context (77 for CLIP's
        tokenizer) is refused here, when the vocabulary is set, not on the first frame."""
        names = normalize_vocabulary(classes, cfg.max_classes, cfg.max_class_name_length)
        texts = [cfg.prompt_template.format(n) for n in names]
        enc = self.tokenizer(texts, padding="longest", truncation=False, return_tensors="pt")
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        worst = max(range(len(names)), key=lambda i: lengths[i])
        if lengths[worst] > self.max_tokens:
            raise VocabularyError(f"the caption of class {names[worst]!r} has {lengths[worst]} tokens but the text "
                                  f"model takes at most {self.max_tokens} (its context length): use a shorter "
                                  "class name")
        # one template for every class: equal captions <=> the tokenizer reads the names alike
        refuse_same_tokens(names, [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"],
                                                                                   enc["attention_mask"])])
        return names, ClassTokens(enc["input_ids"], enc["attention_mask"])

    def check_vocabulary(self, classes: Sequence[str], cfg: PGSegConfig) -> tuple:
        return self.prompts(classes, cfg)[0]
