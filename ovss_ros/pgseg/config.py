"""PGSeg's engine settings: the authors' test protocol as defaults, presets as named bundles.

Checked by the same `EngineConfig` rules as PnP-OVSS's `SegmenterConfig` (same messages, same limits on
vocabularies and images);
`PGSEG_CHOICES` / `PGSEG_LIMITS` are the tables the ROS layer builds its parameter descriptors from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..engine.config import INPUT_LIMITS, MAX_IMAGE_SIZE, VISION_DTYPES, EngineConfig

RESIZE_MODES = ("short_side", "square")
PGSEG_BACKGROUND = ("threshold", "never")

PGSEG_CHOICES: dict[str, tuple[str, ...]] = {
    "resize": RESIZE_MODES,
    "background": PGSEG_BACKGROUND,
    "vision_dtype": VISION_DTYPES,
}
PGSEG_LIMITS: dict[str, tuple[Optional[float], Optional[float]]] = {
    "image_size": (16, MAX_IMAGE_SIZE),
    "crop_size": (16, MAX_IMAGE_SIZE),
    "crop_stride": (16, MAX_IMAGE_SIZE),
    "top_k": (1, None),
    "background_threshold": (0.0, 1.0),     # on Q x P group-class scores, which lie in [0, 1]
    **INPUT_LIMITS,
}

# The authors' per-dataset background thresholds (their test_cfg.bg_thresh); ovss-eval uses them.
BACKGROUND_THRESHOLDS = {"voc": 0.95, "context": 0.36, "coco_object": 0.85, "lvis": 0.35, "imagenet_s": 0.11}


@dataclass
class PGSegConfig(EngineConfig):
    """All knobs of PGSeg inference. Defaults: the authors' protocol (github.com/Ferenas/PGSeg, mmseg test
    config of Pascal VOC): short side 448, 448 x 448 windows at stride 224, "a photo of a {}.", top-5 image-level
    filter, background below 0.95."""

    image_size: Optional[int] = 448          # short side ("short_side") or square side ("square"); None = native
    resize: str = "short_side"               # keep the aspect ratio (authors) or warp to a square
    crop_size: Optional[int] = 448           # sliding-window side; None = the whole resized image in one pass
    crop_stride: int = 224
    prompt_template: str = "a photo of a {}."
    top_k: Optional[int] = 5                 # image-level filter: only the k best classes compete; None = all
    background: str = "threshold"            # "threshold": pixels whose best class scores below it; "never"
    background_threshold: float = 0.95
    npr: bool = True                         # run the checkpoint's NPR modules (False: GroupViT's forward)
    vision_dtype: str = "float32"            # auto (CUDA: bf16 from sm80, else fp16; CPU: fp32) / float32 / bfloat16 / float16
    max_classes: int = 256
    max_class_name_length: int = 64
    max_image_pixels: int = 4096 * 4096

    method = "pgseg"
    CHOICES = PGSEG_CHOICES
    LIMITS = PGSEG_LIMITS
    PROMPT_FIELDS = ("prompt_template", "max_classes", "max_class_name_length")   # a change means new text
    WHAT = "PGSeg"

    def extra_checks(self) -> None:
        if self.crop_size is not None and self.crop_stride > self.crop_size:
            raise ValueError(f"crop_stride={self.crop_stride} is larger than crop_size={self.crop_size}: "
                             "windows would leave gaps")


PGSEG_PRESETS: dict[str, dict[str, Any]] = {
    # The authors' test protocol (Pascal VOC's background threshold; see BACKGROUND_THRESHOLDS).
    "pgseg": {},
    # Throughput: the frame warped to one window at the checkpoint's native size (224 for the released models),
    # one encoder pass per frame; image_size=448 gives the authors' window size at about 3x the cost.
    "realtime": dict(image_size=None, resize="square", crop_size=None, vision_dtype="auto"),
    # The embedded toy-world model (docs/pgseg.md): its native 96 px, one pass, its training template.
    # background threshold and top-k chosen on validation scenes for the shipped model
    # (benchmarks/pgseg_toy_figures.py; docs/pgseg.md)
    "tiny": dict(image_size=None, resize="square", crop_size=None, prompt_template="a picture of {}",
                 background_threshold=0.2, top_k=8),
}
# "paper" names each method's published protocol, so one preset name works for both methods.
PGSEG_PRESET_ALIASES = {"paper": "pgseg"}


PGSegConfig.PRESETS = PGSEG_PRESETS
PGSegConfig.PRESET_ALIASES = PGSEG_PRESET_ALIASES


def make_pgseg_config(preset: str = "pgseg", **overrides: Any) -> PGSegConfig:
    return PGSegConfig.from_preset(preset, **overrides)
