"""What both methods' settings share: the checks (types, choices, limits, the prompt template), the encoder
dtype rules, command-line parsing, and `EngineConfig`, the base of `SegmenterConfig` (PnP-OVSS) and
`PGSegConfig` (PGSeg).

A method's settings class is a dataclass deriving from EngineConfig with these class attributes:
`CHOICES` (string fields -> allowed strings) and `LIMITS` (numeric fields -> inclusive (min, max), None =
unbounded), the tables the ROS layer builds its parameter descriptors from; `PROMPT_FIELDS`, the fields whose
change means new text; `PRESETS` (name -> field values) and `PRESET_ALIASES`; `WHAT`, how errors name them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import string
import typing
from typing import Any, Optional

VISION_DTYPES = ("auto", "float32", "bfloat16", "float16")
# A square model input above this is a typo, not a setting: 1024 px is a 64x64 grid at patch 16,
# 7x the tokens of the paper's 336 px and far past what BLIP was trained on (384).
MAX_IMAGE_SIZE = 1024
# The limits every method shares: vocabularies and images.
INPUT_LIMITS: dict[str, tuple[Optional[float], Optional[float]]] = {
    "max_classes": (1, 65535),                     # labels are uint16 at most
    "max_class_name_length": (1, None),
    "max_image_pixels": (1, None),
}


class EngineConfig:
    """The behaviour of every method's settings dataclass (see the module docstring for what a subclass
    declares). `validate` coerces and checks every field; `extra_checks` adds a method's own rules."""

    # plain class attributes, not annotated: the dataclass subclasses must not take them for fields
    CHOICES = {}
    LIMITS = {}
    PROMPT_FIELDS = ()
    PRESETS = {}
    PRESET_ALIASES = {}
    WHAT = "engine"

    def validate(self):
        """Refuse, with one reason naming the parameter, any value that would break the engine later.
        Checks that need the model (layer counts, patch size, dtype) are the model check's."""
        check_types_and_choices(self, _field_types(type(self)), self.CHOICES)
        check_limits(self, self.LIMITS)
        check_prompt_template(self.prompt_template)
        self.extra_checks()
        return self

    def extra_checks(self) -> None:
        """A method's rules across fields."""

    def replace(self, **changes: Any):
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown {self.WHAT} parameter(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def preset_names(cls) -> list[str]:
        return sorted(set(cls.PRESETS) | set(cls.PRESET_ALIASES))

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any):
        """The preset's settings with `overrides` on top, checked."""
        name = cls.PRESET_ALIASES.get(preset, preset)
        if name not in cls.PRESETS:
            what = "preset" if cls.WHAT == "engine" else f"{cls.WHAT} preset"
            raise ValueError(f"unknown {what} {preset!r}: expected one of {cls.preset_names()}")
        return cls().replace(**{**cls.PRESETS[name], **overrides})


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def check_types_and_choices(cfg, field_types: dict, choices: dict) -> None:
    """Coerce every dataclass field of `cfg` to its type, then check the string fields against `choices`;
    ValueError naming the parameter. Shared by both methods' settings."""
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, _checked_type(f.name, getattr(cfg, f.name), field_types[f.name]))
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name}={getattr(cfg, name)!r}: expected one of {list(allowed)}")


def check_limits(cfg, limits: dict) -> None:
    """Numeric fields within their inclusive (min, max); None (and index keywords) pass."""
    for name, (lo, hi) in limits.items():
        value = getattr(cfg, name)
        if value is None or isinstance(value, str):
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{name}={value!r}: expected {_range_text(lo, hi)}")


def _checked_type(name: str, value: Any, tp: Any) -> Any:
    """`value` as the field's type (ints accepted for floats), or a ValueError naming the expected type."""
    args = typing.get_args(tp)
    optional = type(None) in args
    base = tuple(a for a in args if a is not type(None)) or (tp,)
    if value is None and optional:
        return None
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if bool in base and isinstance(value, bool):
        return value
    if int in base and is_int:
        return int(value)
    if float in base and (is_int or isinstance(value, numbers.Real)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name}={value!r}: expected a finite number")
        return float(value)
    if str in base and isinstance(value, str):
        return value
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    expected = " or ".join(words[b] for b in base) + (" or None" if optional else "")
    raise ValueError(f"{name}={value!r}: expected {expected}")


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"a value in [{lo}, {hi}]"
    return f"a value >= {lo}" if lo is not None else f"a value <= {hi}"


def check_prompt_template(template: str) -> None:
    """Exactly one bare `{}` and no other braces: the prompt builders find the class words by the text around it."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"prompt_template={template!r}: {exc} (expected exactly one '{{}}')") from None
    fields = [(f, spec, conv) for _lit, f, spec, conv in parts if f is not None]
    if fields != [("", "", None)]:
        raise ValueError(f"prompt_template={template!r}: expected exactly one '{{}}' for the class names "
                         "and no other format fields")
    if any("{" in lit or "}" in lit for lit, *_ in parts):
        raise ValueError(f"prompt_template={template!r}: literal braces are not supported")



def check_vision_dtype(vision_dtype: str, weights_dtype: str) -> None:
    """Refuse an encoder pass in one half type over weights in the other. torch's autocast pairs float32 with
    one lower precision: its promote ops (cat, stack, ...) raise on bf16 next to fp16, and CPU LayerNorm on
    mixed half types; BLIP's first cat and GroupViT's first LayerNorm (on the CPU) hit that on the first frame.
    Refused with the settings instead."""
    half = ("bfloat16", "float16")
    if vision_dtype in half and weights_dtype in half and vision_dtype != weights_dtype:
        raise ValueError(f"vision_dtype={vision_dtype!r} cannot run over {weights_dtype} weights (torch's autocast "
                         f"mixes float32 with one lower precision only): use vision_dtype {weights_dtype!r}, or "
                         f"'float32' / 'auto' (no autocast: the {weights_dtype} weights run as they are), or load "
                         f"the model with dtype 'float32' or {vision_dtype!r}")


# bf16 runs natively from Ampere (compute capability 8.0) on; T4 (7.5), Xavier (7.2) and V100 (7.0) emulate it
BF16_MIN_CAPABILITY = (8, 0)


def auto_half_dtype(device, capability: Optional[tuple[int, int]] = None) -> str:
    """What `vision_dtype: auto` lowers float32 weights to on `device`: bfloat16 on a CUDA device that runs it
    natively, float16 on an older one, float32 (no autocast) elsewhere. `capability` is the device's
    (major, minor), queried when not given."""
    import torch          # here: the settings module stays importable without torch
    device = torch.device(device)
    if device.type != "cuda":
        return "float32"
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    return "bfloat16" if tuple(capability) >= BF16_MIN_CAPABILITY else "float16"


def vision_autocast_dtype(vision_dtype: str, weights_dtype: str, device,
                          capability: Optional[tuple[int, int]] = None) -> Optional[str]:
    """The autocast dtype of the no-grad encoder pass, None for no autocast (the pass runs in the weights'
    dtype). `auto` lowers float32 weights on CUDA only (auto_half_dtype: bf16 from compute capability 8.0,
    fp16 before); half weights run as they are, so `auto` never pairs two half types (the refused pair), and
    bf16 weights on an older GPU stay bf16 (load float16 or float32 weights there)."""
    if vision_dtype == "auto":
        if weights_dtype != "float32":
            return None
        vision_dtype = auto_half_dtype(device, capability)
    return None if vision_dtype == "float32" else vision_dtype


def parse_value(text: str, current: Any = None) -> Any:
    """Command-line text to a parameter value: '3' -> 3, '0.5' -> 0.5, 'none' -> None, 'true' -> True.
    Where the parameter is a string (`current`), text stays text: postprocess=none means "none"."""
    text = text.strip()
    if isinstance(current, str):
        return text
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_overrides(pairs: Optional[list[str]], configs: Optional[list] = None) -> dict[str, Any]:
    """['dropout_rounds=2', 'postprocess=blur'] -> {'dropout_rounds': 2, 'postprocess': 'blur'}. Text stays
    text for a parameter that is a string in any of `configs` (default: every method's defaults), so
    postprocess=none means "none"."""
    if configs is None:
        from .methods import METHODS, config_class

        configs = [config_class(m)() for m in METHODS]
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"expected key=value, got {pair!r}")
        key, value = (x.strip() for x in pair.split("=", 1))
        current = next((getattr(c, key) for c in configs if isinstance(getattr(c, key, None), str)), None)
        out[key] = parse_value(value, current)
    return out
