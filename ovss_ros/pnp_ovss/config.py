"""PnP-OVSS settings: every constant of the reference is a field; presets are named bundles.

`ENGINE_CHOICES` (string fields -> allowed strings) and `ENGINE_LIMITS` (numeric fields -> inclusive
(min, max)) are the tables `validate` checks and the ROS layer builds its parameter descriptors from.
`gradcam_layer` / `gradcam_head` are a 0-based index or the keyword in `INDEX_KEYWORDS` (their upper bound is
the model's, checked by the model check).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from ..engine.config import INPUT_LIMITS, MAX_IMAGE_SIZE, VISION_DTYPES, EngineConfig

BACKGROUND_MODES = ("always", "if_few_classes", "never")
POSTPROCESS_MODES = ("none", "blur", "crf", "blur+crf")
DROPOUT_MODES = ("pixel", "attention")
PROMPT_MODES = ("single", "per_class")
GRADCAM_ROWS = ("class_tokens", "first_token")
PRESENCE_MODES = ("itm", "all")
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
    **INPUT_LIMITS,
}

# Fields that are a 0-based index or one keyword.
INDEX_KEYWORDS = {"gradcam_layer": "all", "gradcam_head": "mean"}


@dataclass
class SegmenterConfig(EngineConfig):
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

    CHOICES = ENGINE_CHOICES
    LIMITS = ENGINE_LIMITS
    # fields whose change means new text (prompts, token rows)
    PROMPT_FIELDS = ("prompt_template", "prompt_mode", "gradcam_rows", "max_classes", "max_class_name_length")
    WHAT = "engine"

    def extra_checks(self) -> None:
        for name, keyword in INDEX_KEYWORDS.items():
            value = getattr(self, name)
            if value != keyword and (isinstance(value, str) or value < 0):
                raise ValueError(f"{name}={value!r}: expected a 0-based index (>= 0) or {keyword!r}")
        if self.gradcam_rows == "first_token" and self.prompt_mode != "per_class":
            raise ValueError("gradcam_rows='first_token' needs prompt_mode='per_class' "
                             "(one caption's first row cannot tell classes apart)")


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


SegmenterConfig.PRESETS = PRESETS


def make_config(preset: str = "paper", **overrides: Any) -> SegmenterConfig:
    return SegmenterConfig.from_preset(preset, **overrides)
