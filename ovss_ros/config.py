"""Engine configuration: every constant of the reference is a field; presets are named bundles."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

BACKGROUND_MODES = ("always", "if_few_classes", "never")
POSTPROCESS_MODES = ("none", "blur", "crf", "blur+crf")
DROPOUT_MODES = ("pixel", "attention")
PROMPT_MODES = ("single", "per_class")
GRADCAM_ROWS = ("class_tokens", "first_token")
PRESENCE_MODES = ("itm", "all")


@dataclass
class SegmenterConfig:
    """All knobs of PnP-OVSS. Defaults are the reference's intended configuration (see docs/deviations.md)."""

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
    postprocess_max_side: Optional[int] = None  # run blur/CRF at this long side, upsample labels after
    crf_iterations: int = 10
    crf_gaussian_sxy: float = 3.0
    crf_gaussian_compat: float = 7.0
    crf_bilateral_sxy: float = 50.0
    crf_bilateral_srgb: float = 5.0
    crf_bilateral_compat: float = 10.0
    # -- numerics
    vision_dtype: str = "float32"            # auto (bf16 on CUDA, fp32 on CPU) / float32 / bfloat16 / float16: no-grad ViT pass
    # -- input limits
    max_classes: int = 256
    max_class_name_length: int = 64
    max_image_pixels: int = 4096 * 4096      # larger inputs are refused, not silently slowed down

    def validate(self) -> "SegmenterConfig":
        def one_of(name: str, allowed) -> None:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {allowed}")

        one_of("background", BACKGROUND_MODES)
        one_of("postprocess", POSTPROCESS_MODES)
        one_of("dropout_mode", DROPOUT_MODES)
        one_of("prompt_mode", PROMPT_MODES)
        one_of("gradcam_rows", GRADCAM_ROWS)
        one_of("presence", PRESENCE_MODES)
        one_of("vision_dtype", ("auto", "float32", "bfloat16", "float16"))
        if isinstance(self.gradcam_layer, str) and self.gradcam_layer != "all":
            raise ValueError(f"gradcam_layer={self.gradcam_layer!r}: expected an int or 'all'")
        if isinstance(self.gradcam_head, str) and self.gradcam_head != "mean":
            raise ValueError(f"gradcam_head={self.gradcam_head!r}: expected an int or 'mean'")
        if self.dropout_rounds < 1:
            raise ValueError("dropout_rounds must be >= 1 (1 = GradCAM without dropout)")
        if self.drop_fraction is not None and not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError("drop_fraction must be in [0, 1)")
        if self.gradcam_rows == "first_token" and self.prompt_mode != "per_class":
            raise ValueError("gradcam_rows='first_token' needs prompt_mode='per_class' "
                             "(one caption's first row cannot tell classes apart)")
        if "{}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{}' for the class names")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
        return self

    def replace(self, **changes: Any) -> "SegmenterConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown engine parameter(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    # What fits the project's tiny toy-world BLIP (3 text layers, 12x12 grid); see toy_world_notes.md.
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
