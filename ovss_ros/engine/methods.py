"""The methods the engine runs, and which one a checkpoint is: like transformers' Auto classes, a table from a
checkpoint's `model_type` to the method, and from the method to its classes, named by import path so that
this module (and `Segmenter`) never imports a method: a BLIP-only process never loads GroupViT code."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Optional, Union

from .loading import ModelLoadError, hub_errors


@dataclass(frozen=True)
class Method:
    name: str
    model_type: str          # the checkpoint config's model_type
    kind: str                # the checkpoint family, in error messages
    checkpoint: str          # what the method expects, in error messages
    segmenter: str           # "module:Class" of its Segmenter subclass
    config: str              # "module:Class" of its settings (an EngineConfig)
    checker: str             # "module:Class" checking settings and vocabularies from config + tokenizer alone
    default_preset: str      # its published protocol


REGISTRY = {
    "pnp_ovss": Method("pnp_ovss", "blip", "BLIP image-text matching", "a BLIP image-text matching checkpoint (model_type 'blip')",
                       "ovss_ros.pnp_ovss.segmenter:PnpOvssSegmenter", "ovss_ros.pnp_ovss.config:SegmenterConfig",
                       "ovss_ros.pnp_ovss.model_check:ModelCheck", "paper"),
    "pgseg": Method("pgseg", "groupvit", "GroupViT/PGSeg", "a GroupViT or PGSeg checkpoint (model_type 'groupvit')",
                    "ovss_ros.pgseg.segmenter:PGSegSegmenter", "ovss_ros.pgseg.config:PGSegConfig",
                    "ovss_ros.pgseg.loading:PGSegCheck", "pgseg"),
}
METHODS = tuple(REGISTRY)
# in-memory models: the method a module's class name belongs to
_MODULE_CLASSES = {"BlipForImageTextRetrieval": "pnp_ovss", "PGSegModel": "pgseg", "GroupViTModel": "pgseg"}


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def segmenter_class(method: str):
    return _load(check_method_name(method).segmenter)


def config_class(method: str):
    return _load(check_method_name(method).config)


def checker_class(method: str):
    """The method's checker: `from_pretrained(model, local_files_only, dtype)` reads a checkpoint's config and
    tokenizer (seconds, no weights) and checks settings (`check_config`) and vocabularies against them."""
    return _load(check_method_name(method).checker)


def check_method_name(method: str) -> Method:
    if method not in REGISTRY:
        raise ValueError(f"method={method!r}: expected one of {list(METHODS)}")
    return REGISTRY[method]


def checkpoint_method(model_type: str) -> Optional[str]:
    """The method a checkpoint's `model_type` belongs to (None if neither)."""
    return next((m.name for m in REGISTRY.values() if m.model_type == model_type), None)


def module_method(model) -> Optional[str]:
    """The method of an in-memory model, by its class (None if unknown)."""
    return _MODULE_CLASSES.get(type(model).__name__)


def detect_method(name: Union[str, os.PathLike], local_files_only: Optional[bool] = None) -> str:
    """'pnp_ovss' for a BLIP checkpoint, 'pgseg' for GroupViT/PGSeg, read from its config alone."""
    from transformers import AutoConfig

    name = str(name)
    with hub_errors(name, local_files_only) as offline:
        config = AutoConfig.from_pretrained(name, local_files_only=offline)
    method = checkpoint_method(config.model_type)
    if method is None:
        expected = " or ".join(f"{m.kind} (method {m.name})" for m in REGISTRY.values())
        raise ModelLoadError(f"cannot load model: '{name}' is a {config.model_type!r} checkpoint; expected "
                             f"{expected}")
    return method


def check_method(found_type: str, method: str, name: str) -> None:
    """One error naming what the method expects and what the checkpoint is."""
    found = checkpoint_method(found_type)
    if found != method:
        raise ModelLoadError(f"method {method!r} needs {check_method_name(method).checkpoint}, but '{name}' is a "
                             f"{found_type!r} checkpoint" + (f" (use method {found!r})" if found else ""))
