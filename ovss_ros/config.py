"""Engine configuration: every constant of the reference is a field; presets are named bundles.

The allowed values live in two tables, so the ROS layer can build parameter descriptors from the same
source that `SegmenterConfig.validate` checks against:

- `ENGINE_CHOICES`: string fields -> the allowed strings.
- `ENGINE_LIMITS`: numeric fields -> (min, max), both inclusive, None where unbounded on that side.
  Optional fields may also be None; `gradcam_layer` / `gradcam_head` are a 0-based index or the keyword in
  `INDEX_KEYWORDS` and are not in either table (their upper bound is the model's, checked by Segmenter).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import string
import typing
from dataclasses import dataclass
from typing import Any, Optional, Union

BACKGROUND_MODES = ("always", "if_few_classes", "never")
POSTPROCESS_MODES = ("none", "blur", "crf", "blur+crf")
DROPOUT_MODES = ("pixel", "attention")
PROMPT_MODES = ("single", "per_class")
GRADCAM_ROWS = ("class_tokens", "first_token")
PRESENCE_MODES = ("itm", "all")
VISION_DTYPES = ("auto", "float32", "bfloat16", "float16")
MODEL_DTYPES = ("float32", "bfloat16", "float16")        # the weights' dtype (`dtype` of from_pretrained, the node)
COMPILE_MODES = ("none", "torch_compile")

# Blur/CRF never run above this long side, whatever postprocess_max_side says (None = up to this cap):
# DenseCRF on a 4000x3000 frame took 97 s and 3.6 GB; at 1024 px it is seconds, and 1024 still covers
# VOC/COCO-sized images at full resolution (the reference's setting). See docs/deviations.md.
POSTPROCESS_MAX_SIDE_CAP = 1024
# `confidence` where DenseCRF runs: the equal-weight pool of two estimates of P(label right), the CRF marginal
# (sure wherever neighbours agree, overconfident when the maps are weak) and the evidence share of the label
# before the CRF (blind to the CRF's corrections, underconfident where it fixed the label). 1 = the marginal
# alone, 0 = the share alone. Equal weights: neither is preferred a priori; measured in docs/confidence.md.
CONFIDENCE_CRF_WEIGHT = 0.5
# A square model input above this is a typo, not a setting: 1024 px is a 64x64 grid at patch 16,
# 7x the tokens of the paper's 336 px and far past what BLIP was trained on (384).
MAX_IMAGE_SIZE = 1024

ENGINE_CHOICES: dict[str, tuple[str, ...]] = {
    "prompt_mode": PROMPT_MODES,
    "gradcam_rows": GRADCAM_ROWS,
    "dropout_mode": DROPOUT_MODES,
    "presence": PRESENCE_MODES,
    "background": BACKGROUND_MODES,
    "postprocess": POSTPROCESS_MODES,
    "vision_dtype": VISION_DTYPES,
    "compile": COMPILE_MODES,
}

ENGINE_LIMITS: dict[str, tuple[Optional[float], Optional[float]]] = {
    "image_size": (16, MAX_IMAGE_SIZE),            # also a multiple of the patch size (checked with the model)
    "dropout_rounds": (1, 32),                     # 1 = plain GradCAM; each round is a full GradCAM pass
    "drop_patches": (0, None),                     # 0 is harmless (rounds repeat pass 0); the grid clamps it
    "drop_fraction": (0.0, 0.5),                   # hiding more than half the grid per round leaves nothing to see
    "presence_threshold": (0.0, 1.0),              # a probability
    "presence_top_k": (1, None),
    "threshold": (0.0, 1.0),                       # on min-max normalised maps
    "background_min_classes": (1, None),
    "blur_sigma": (0.0, 1.0),                      # fraction of max(H, W); 0 = no blur
    "postprocess_max_side": (16, POSTPROCESS_MAX_SIDE_CAP),
    "crf_iterations": (0, 100),                    # 0 = the unaries alone
    "crf_gaussian_sxy": (0.01, None),              # kernel widths divide the features: 0 gives inf/NaN
    "crf_gaussian_compat": (0.0, None),            # weights: 0 switches the kernel off
    "crf_bilateral_sxy": (0.01, None),
    "crf_bilateral_srgb": (0.01, None),
    "crf_bilateral_compat": (0.0, None),
    "max_classes": (1, 65535),                     # labels are uint16 at most
    "max_class_name_length": (1, None),
    "max_image_pixels": (1, None),
}

# Fields that are a 0-based index or one keyword.
INDEX_KEYWORDS = {"gradcam_layer": "all", "gradcam_head": "mean"}


@dataclass
class SegmenterConfig:
    """All knobs of PnP-OVSS. Defaults are the reference's intended configuration: the paper's settings as
    the upstream code (github.com/letitiabanana/PnP-OVSS) runs them; see docs/deviations.md."""

    # -- model input
    image_size: Optional[int] = 336          # square warp; None = the checkpoint's native size
    prompt_template: str = "a picture of {}"
    prompt_mode: str = "single"              # one caption listing every class (reference) or one per class
    # -- GradCAM on the text encoder's cross-attention
    gradcam_layer: Union[int, str] = 7       # 0-based text layer, or "all" (summed over layers)
    gradcam_head: Union[int, str] = 9        # 0-based head, or "mean"
    gradcam_rows: str = "class_tokens"       # which query rows form a class map
    # -- Salience Dropout
    dropout_rounds: int = 4                  # passes, pass 0 included (reference drop_iter)
    drop_patches: int = 10                   # patches removed per pass
    drop_fraction: Optional[float] = None    # if set, overrides drop_patches as a fraction of the grid
    dropout_mode: str = "pixel"              # re-run the ViT on zeroed pixels, or mask image tokens
    double_count_first_pass: bool = True     # the reference adds pass 0 twice
    # -- class presence (replaces the reference's GPT-4o lists)
    presence: str = "itm"                    # "itm" probability per class, or "all" classes
    presence_threshold: float = 0.5
    presence_top_k: Optional[int] = None     # keep at most k classes (after the threshold)
    # -- maps to labels
    threshold: float = 0.15                  # on per-class min-max normalised maps, raw values kept
    background: str = "always"               # always / if_few_classes / never
    background_min_classes: int = 3          # "if_few_classes": background channel only below this
    postprocess: str = "blur+crf"
    blur_sigma: float = 0.05                 # times max(H, W)
    postprocess_max_side: Optional[int] = None  # blur/CRF at this long side (None: full size up to the cap)
    crf_iterations: int = 10
    crf_gaussian_sxy: float = 3.0
    crf_gaussian_compat: float = 7.0
    crf_bilateral_sxy: float = 50.0
    crf_bilateral_srgb: float = 5.0
    crf_bilateral_compat: float = 10.0
    # -- numerics
    vision_dtype: str = "float32"            # auto (CUDA: bf16 from sm80, else fp16; CPU: fp32) / float32 / bfloat16 / float16: no-grad ViT pass
    compile: str = "none"                    # none / torch_compile: ViT and text layers through torch.compile
    # -- input limits
    max_classes: int = 256
    max_class_name_length: int = 64
    max_image_pixels: int = 4096 * 4096      # larger inputs are refused, not silently slowed down

    def validate(self) -> "SegmenterConfig":
        """Refuse, with one reason naming the parameter, any value that would break the engine later.
        Checks that need the model (layer/head counts, multiple of the patch size) are in Segmenter."""
        check_types_and_choices(self, _FIELD_TYPES, ENGINE_CHOICES)
        for name, keyword in INDEX_KEYWORDS.items():
            value = getattr(self, name)
            if value != keyword and (isinstance(value, str) or value < 0):
                raise ValueError(f"{name}={value!r}: expected a 0-based index (>= 0) or {keyword!r}")
        check_limits(self, ENGINE_LIMITS)
        _check_template(self.prompt_template)
        if self.gradcam_rows == "first_token" and self.prompt_mode != "per_class":
            raise ValueError("gradcam_rows='first_token' needs prompt_mode='per_class' "
                             "(one caption's first row cannot tell classes apart)")
        return self

    def replace(self, **changes: Any) -> "SegmenterConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown engine parameter(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_FIELD_TYPES = typing.get_type_hints(SegmenterConfig)


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


def _check_template(template: str) -> None:
    """Exactly one bare `{}` and no other braces: prompts.py finds the class words by the text around it."""
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


PRESETS: dict[str, dict[str, Any]] = {
    # The reference algorithm (intended Run_seg.sh configuration), bugs fixed.
    "paper": {},
    # Throughput: fewer rounds, token masking instead of ViT re-runs, no CPU DenseCRF, reduced-size blur.
    "realtime": dict(
        dropout_rounds=2,
        dropout_mode="attention",
        postprocess="blur",
        postprocess_max_side=320,
        vision_dtype="auto",
    ),
    # What fits the project's tiny toy-world BLIP (3 text layers, 12x12 grid); see docs/toy_world.md.
    "tiny": dict(
        image_size=None,
        prompt_mode="per_class",
        gradcam_layer="all",
        gradcam_head="mean",
        gradcam_rows="first_token",
        dropout_rounds=1,
        drop_fraction=0.05,
        # chosen on validation scenes of the toy world (benchmarks/toy_world_tune.py, docs/toy_world.md):
        # the CRF snaps 8-px patch maps to object edges, so the threshold only clears faint patches
        postprocess="blur+crf",
        threshold=0.05,
        presence_threshold=0.7,
        crf_bilateral_sxy=25.0,
        crf_bilateral_srgb=10.0,
    ),
}


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


def parse_overrides(pairs: Optional[list[str]]) -> dict[str, Any]:
    """['dropout_rounds=2', 'postprocess=blur'] -> {'dropout_rounds': 2, 'postprocess': 'blur'}."""
    defaults = SegmenterConfig()
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"expected key=value, got {pair!r}")
        key, value = (x.strip() for x in pair.split("=", 1))
        out[key] = parse_value(value, getattr(defaults, key, None))
    return out


def make_config(preset: str = "paper", **overrides: Any) -> SegmenterConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {sorted(PRESETS)}")
    return SegmenterConfig().replace(**{**PRESETS[preset], **overrides})
