"""Load a BLIP image-text-matching checkpoint (Hub id or local directory) for the engine."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

DEFAULT_MODEL = "Salesforce/blip-itm-large-flickr"
KNOWN_CHECKPOINTS = (
    "Salesforce/blip-itm-large-flickr",   # the paper's choice
    "Salesforce/blip-itm-large-coco",
    "Salesforce/blip-itm-base-coco",
    "Salesforce/blip-itm-base-flickr",
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do."""


@dataclass
class LoadedModel:
    model: "torch.nn.Module"          # transformers BlipForImageTextRetrieval, eval mode, frozen
    tokenizer: object                 # a fast BERT-style tokenizer (offsets are needed)
    image_mean: tuple
    image_std: tuple
    native_image_size: int
    device: torch.device
    name: str


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


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

    name = str(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    is_dir = Path(name).expanduser().is_dir()
    if not is_dir and name.startswith(("/", "./", "../", "~")):
        raise ModelLoadError(f"cannot load model: the directory '{name}' does not exist (a local checkpoint "
                             "folder saved with save_pretrained, or a Hugging Face id such as "
                             f"'{DEFAULT_MODEL}', is expected)")
    if local_files_only is None:
        local_files_only = _offline()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()      # e.g. "falling back to BlipImageProcessorPil" without torchvision
    try:
        processor = BlipProcessor.from_pretrained(name, local_files_only=local_files_only, revision=revision)
        net = BlipForImageTextRetrieval.from_pretrained(
            name, local_files_only=local_files_only, revision=revision,
            use_safetensors=True)
    except (OSError, ValueError) as exc:
        if is_dir:
            hint = (f"'{name}' is a directory but does not hold a BLIP ITM checkpoint saved with "
                    "save_pretrained (config.json, model.safetensors, tokenizer and preprocessor files)")
        else:
            hint = (f"'{name}' is not in the local Hugging Face cache and the Hub could not be reached"
                    f"{' (HF_HUB_OFFLINE is set)' if local_files_only else ''}. On a machine with network run "
                    f"`hf download {name}` (or `huggingface-cli download {name}`), then copy the cache "
                    "(~/.cache/huggingface) here, or pass the downloaded folder as the model path")
        raise ModelLoadError(f"cannot load model: {hint}. Cause: {type(exc).__name__}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)

    tokenizer = processor.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"model {name!r}: the engine needs a fast tokenizer (character offsets)")
    net.eval().requires_grad_(False).to(device=dev, dtype=torch_dtype)
    ip = processor.image_processor
    native = net.config.vision_config.image_size
    return LoadedModel(model=net, tokenizer=tokenizer, image_mean=tuple(ip.image_mean),
                       image_std=tuple(ip.image_std), native_image_size=int(native), device=dev, name=name)
