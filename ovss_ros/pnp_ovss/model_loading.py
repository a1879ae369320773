"""Load a BLIP image-text-matching checkpoint (Hub id or local directory) for the engine."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ..engine.loading import (DEFAULT_MODEL, ModelLoadError, dtype_name, hub_errors, resolve_device,  # noqa: F401
                              resolve_dtype)

KNOWN_CHECKPOINTS = (
    "Salesforce/blip-itm-large-flickr",   # the paper's choice
    "Salesforce/blip-itm-large-coco",
    "Salesforce/blip-itm-base-coco",
    "Salesforce/blip-itm-base-flickr",
)


@dataclass
class LoadedModel:
    model: "torch.nn.Module"          # transformers BlipForImageTextRetrieval, eval mode, frozen
    tokenizer: object                 # a fast BERT-style tokenizer (offsets are needed)
    image_mean: tuple
    image_std: tuple
    native_image_size: int
    device: torch.device
    name: str


def load_blip(
    model: Union[str, Path] = DEFAULT_MODEL,
    device: Union[str, torch.device] = "auto",
    dtype: Union[str, torch.dtype] = "float32",
    local_files_only: Optional[bool] = None,
    revision: Optional[str] = None,
) -> LoadedModel:
    """Load `BlipForImageTextRetrieval` and its processor from a Hub id or a local directory.

    Safetensors only and never `trust_remote_code`: a checkpoint is data, not code.
    """
    from transformers import BlipForImageTextRetrieval, BlipProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()     # node logs are read by people; no carriage-return bars

    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model: expected a Hugging Face id or a local directory, got {type(model).__name__} "
                        "(an in-memory model goes through wrap_blip / Segmenter.from_model)")
    name = str(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    with hub_errors(name, local_files_only) as offline:
        processor = BlipProcessor.from_pretrained(name, local_files_only=offline, revision=revision)
        net = BlipForImageTextRetrieval.from_pretrained(name, local_files_only=offline, revision=revision,
                                                        use_safetensors=True)
    return wrap_blip(net, processor, dev, torch_dtype, name=name)


# BLIP's image statistics (OpenAI CLIP's), for a model handed over with a bare tokenizer.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def wrap_blip(model, processor, device: Union[str, torch.device, None] = None,
              dtype: Union[str, torch.dtype, None] = None, name: Optional[str] = None) -> LoadedModel:
    """An in-memory `BlipForImageTextRetrieval` and its `BlipProcessor` (or its tokenizer alone: images are
    then normalised with BLIP's CLIP statistics) as a LoadedModel. The model is put in eval mode and frozen
    in place; device/dtype None keep the model where and as it is."""
    from transformers import BlipForImageTextRetrieval

    if not isinstance(model, BlipForImageTextRetrieval):
        raise TypeError(f"model: expected a transformers BlipForImageTextRetrieval, got {type(model).__name__}")
    if hasattr(processor, "tokenizer") and hasattr(processor, "image_processor"):
        tokenizer, ip = processor.tokenizer, processor.image_processor
        mean, std = tuple(ip.image_mean), tuple(ip.image_std)
    elif callable(processor) and hasattr(processor, "convert_tokens_to_ids"):
        tokenizer, mean, std = processor, _CLIP_MEAN, _CLIP_STD
    else:
        raise TypeError(f"processor: expected a BlipProcessor or its tokenizer, got {type(processor).__name__}")
    name = name or getattr(model.config, "_name_or_path", "") or "in-memory model"
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"model {name!r}: the engine needs a fast tokenizer (character offsets)")
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    to = {"device": dev} if dtype is None else {"device": dev, "dtype": resolve_dtype(dtype)}
    model.eval().requires_grad_(False).to(**to)
    native = model.config.vision_config.image_size
    return LoadedModel(model=model, tokenizer=tokenizer, image_mean=mean, image_std=std,
                       native_image_size=int(native), device=dev, name=name)
