"""What loading either method's checkpoint shares: the device and weight dtype, and one ModelLoadError that
says what to do when a Hub id or directory cannot be read."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

import torch

# The paper's checkpoint; what Segmenter.from_pretrained loads when given no model.
DEFAULT_MODEL = "Salesforce/blip-itm-large-flickr"
MODEL_DTYPES = ("float32", "bfloat16", "float16")        # the weights' dtype (`dtype` of from_pretrained, the node)
_DTYPES = {name: getattr(torch, name) for name in MODEL_DTYPES}


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16: the names the settings use."""
    return str(dtype).removeprefix("torch.")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do."""


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


def resolve_dtype_name(dtype: Union[str, torch.dtype]) -> str:
    """A dtype argument (name or torch.dtype) as its checked name."""
    return dtype_name(resolve_dtype(dtype))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@contextmanager
def hub_errors(name: str, local_files_only: Optional[bool] = None):
    """Around transformers' from_pretrained calls for `name`: yields the effective local_files_only and turns
    a missing directory, cache entry or unreachable Hub into one ModelLoadError that says what to do."""
    from transformers.utils import logging as hf_logging

    is_dir = Path(name).expanduser().is_dir()
    if not is_dir and name.startswith(("/", "./", "../", "~")):
        raise ModelLoadError(f"cannot load model: the directory '{name}' does not exist (a local checkpoint "
                             "folder saved with save_pretrained, or a Hugging Face id such as "
                             f"'{DEFAULT_MODEL}', is expected)")
    offline = _offline() if local_files_only is None else bool(local_files_only)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()      # e.g. "falling back to BlipImageProcessorPil" without torchvision
    try:
        yield offline
    except (OSError, ValueError) as exc:
        if is_dir:
            hint = (f"'{name}' is a directory but does not hold a BLIP ITM checkpoint saved with "
                    "save_pretrained (config.json, model.safetensors, tokenizer and preprocessor files)")
        else:
            hint = (f"'{name}' is not in the local Hugging Face cache and the Hub could not be reached"
                    f"{' (HF_HUB_OFFLINE is set)' if offline else ''}. On a machine with network run "
                    f"`hf download {name}` (or `huggingface-cli download {name}`), then copy the cache "
                    "(~/.cache/huggingface) here, or pass the downloaded folder as the model path")
        raise ModelLoadError(f"cannot load model: {hint}. Cause: {type(exc).__name__}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


