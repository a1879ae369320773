"""The engine knobs of each method as ROS parameters: `engine.*` (PnP-OVSS, SegmenterConfig) and `pgseg.*`
(PGSeg, PGSegConfig), with the conversions between engine values and ROS values, and what the node needs to
build either method's checker and config.

ROS parameters have no "None": the optional fields use a documented sentinel (0 or -1), a value that is never a
valid setting of that field. One `preset` parameter serves both methods: `tiny` and `realtime` exist in both;
`paper` and `pgseg` each name a method's published protocol, so either one means "the published protocol" of
whichever method runs (PnP-OVSS: paper; PGSeg: pgseg)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ovss_ros.engine.methods import METHODS, REGISTRY, checker_class, config_class

# each method's settings class (an EngineConfig): its fields, presets, choices, limits and prompt fields
CONFIGS = {m: config_class(m) for m in METHODS}
# Every name the `preset` parameter takes, for either method.
PRESET_NAMES = tuple(sorted(set().union(*(c.preset_names() for c in CONFIGS.values()))))
_PUBLISHED = {m: REGISTRY[m].default_preset for m in METHODS}


def _shared(encoder: str) -> dict[str, str]:
    """The descriptions of the fields every method's settings have (EngineConfig's)."""
    return {
        "vision_dtype": f"{encoder} dtype: auto (bf16 on CUDA from compute capability 8.0, fp16 on older GPUs, "
                        "fp32 on CPU), float32, bfloat16, float16",
        "max_classes": "maximum vocabulary size (more classes are refused)",
        "max_class_name_length": "maximum characters per class name",
        "max_image_pixels": "larger input frames are refused (logged and skipped)",
    }


ENGINE_DESCRIPTIONS = {
    "image_size": "model input side in pixels (square warp), a multiple of the patch size; 0 = the checkpoint's "
                  "native size",
    "prompt_template": "caption template with exactly one {} for the class names",
    "prompt_mode": "single (one caption naming every class) or per_class",
    "gradcam_layer": "text layer for GradCAM: 0-based index as a string, or \"all\"",
    "gradcam_head": "cross-attention head: 0-based index as a string, or \"mean\"",
    "gradcam_rows": "class_tokens or first_token (per_class prompts only)",
    "dropout_rounds": "Salience Dropout passes including the first (1 = plain GradCAM)",
    "drop_patches": "patches removed per pass",
    "drop_fraction": "patches removed per pass as a fraction of the grid; -1 = use drop_patches",
    "dropout_mode": "pixel (re-run the ViT) or attention (mask image tokens, faster)",
    "double_count_first_pass": "add the first pass twice (as the reference does)",
    "presence": "itm (class-presence probability per class) or all (segment every class)",
    "presence_threshold": "classes with ITM probability below this are not segmented",
    "presence_top_k": "keep at most k classes after the threshold; 0 = no limit",
    "threshold": "per-class threshold on min-max normalised maps, 0..1",
    "background": "background channel: always, if_few_classes or never",
    "background_min_classes": "if_few_classes: background only below this many segmented classes",
    "postprocess": "none, blur, crf or blur+crf",
    "blur_sigma": "Gaussian blur sigma as a fraction of max(H, W)",
    "postprocess_max_side": "run blur/CRF at this long side and upsample labels; 0 = full resolution up to "
                            f"{CONFIGS['pnp_ovss'].LIMITS['postprocess_max_side'][1]} px",
    "crf_iterations": "DenseCRF iterations",
    "crf_gaussian_sxy": "DenseCRF Gaussian kernel spatial sigma",
    "crf_gaussian_compat": "DenseCRF Gaussian kernel weight",
    "crf_bilateral_sxy": "DenseCRF bilateral kernel spatial sigma",
    "crf_bilateral_srgb": "DenseCRF bilateral kernel colour sigma",
    "crf_bilateral_compat": "DenseCRF bilateral kernel weight",
    "compile": "none or torch_compile (ViT and text layers; compiled on its own thread, frames eager until then)",
    **_shared("ViT pass"),
}

PGSEG_DESCRIPTIONS = {
    "image_size": "model input size in pixels, a multiple of the patch size: the short side (resize short_side) "
                  "or the square's side (square); 0 = the checkpoint's native size",
    "resize": "short_side (keep the aspect ratio, as the authors) or square (warp)",
    "crop_size": "sliding-window side in pixels, a multiple of the patch size; 0 = the whole resized image in "
                 "one pass",
    "crop_stride": "sliding-window stride in pixels, at most crop_size",
    "prompt_template": "caption template with exactly one {} for the class name",
    "top_k": "image-level filter: only the k best-matching classes compete in a window; 0 = every class",
    "background": "threshold (pixels whose best class scores below background_threshold are background) or never",
    "background_threshold": "group-class score (0..1) below which a pixel is background",
    "npr": "run the checkpoint's NPR modules (false: GroupViT's plain forward)",
    **_shared("encoder pass"),
}


@dataclass(frozen=True)
class KnobTable:
    """One method's engine config as `<prefix>*` ROS parameters."""
    method: str
    prefix: str
    config_type: type                                 # the method's EngineConfig subclass
    descriptions: dict
    none_sentinel: dict = field(default_factory=dict)   # optional field -> ROS value meaning None
    string_unions: frozenset = frozenset()            # int or keyword in the engine, string in ROS

    @property
    def presets(self) -> tuple:
        return tuple(self.config_type.PRESETS)

    @property
    def choices(self) -> dict:
        return self.config_type.CHOICES

    @property
    def limits(self) -> dict:
        return self.config_type.LIMITS

    @property
    def prompt_fields(self) -> tuple:
        """A change to these means new text (embeddings)."""
        return tuple(self.config_type.PROMPT_FIELDS)

    def make(self, preset: str, **overrides: Any):
        return self.config_type.from_preset(preset, **overrides)

    def fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config_type)]

    def preset(self, name: str) -> str:
        """This method's preset for the node's `preset` value (paper/pgseg: the published protocol)."""
        return _PUBLISHED[self.method] if name in _PUBLISHED.values() else name

    def to_ros(self, name: str, value: Any) -> Any:
        if name in self.none_sentinel and value is None:
            return self.none_sentinel[name]
        if name in self.string_unions:
            return str(value)
        if isinstance(self.none_sentinel.get(name), float):
            return float(value)
        return value

    def from_ros(self, name: str, value: Any) -> Any:
        if name in self.none_sentinel and value == self.none_sentinel[name]:
            return None
        if name in self.string_unions:
            text = str(value).strip()
            return int(text) if text.lstrip("-").isdigit() else text
        return value

    def defaults(self, preset: str) -> dict[str, Any]:
        """Parameter defaults (ROS values) for the node's `preset`."""
        cfg = self.make(self.preset(preset))
        return {n: self.to_ros(n, getattr(cfg, n)) for n in self.fields()}

    def config(self, preset: str, **overrides: Any):
        return self.make(self.preset(preset), **overrides)

    def range(self, name: str, default: Any) -> Optional[tuple]:
        """Descriptor range: the engine's limits, widened to take the None sentinel."""
        if name not in self.limits or isinstance(default, bool):
            return None
        lo, hi = self.limits[name]
        if name in self.none_sentinel:
            lo = self.none_sentinel[name] if lo is None else min(lo, self.none_sentinel[name])
        return lo, hi

    def checker(self, model: str, local_files_only: Optional[bool], dtype: str = "float32"):
        """What the model accepts (config and tokenizer, no weights; `dtype`: what the weights will be loaded
        as); a checkpoint of the other method's kind is one ModelLoadError naming both."""
        return checker_class(self.method).from_pretrained(model, local_files_only=local_files_only, dtype=dtype)


ENGINE = KnobTable("pnp_ovss", "engine.", CONFIGS["pnp_ovss"], ENGINE_DESCRIPTIONS,
                   {"image_size": 0, "drop_fraction": -1.0, "presence_top_k": 0, "postprocess_max_side": 0},
                   frozenset({"gradcam_layer", "gradcam_head"}))
PGSEG = KnobTable("pgseg", "pgseg.", CONFIGS["pgseg"], PGSEG_DESCRIPTIONS, {"image_size": 0, "crop_size": 0, "top_k": 0})
KNOBS = {"pnp_ovss": ENGINE, "pgseg": PGSEG}


def knobs_of(config) -> KnobTable:
    """The table of a config object (SegmenterConfig or PGSegConfig)."""
    return PGSEG if isinstance(config, CONFIGS["pgseg"]) else ENGINE


def knob_of(name: str) -> Optional[tuple[KnobTable, str]]:
    """(table, field) of a parameter name such as `pgseg.top_k`, or None for a node parameter."""
    for table in KNOBS.values():
        if name.startswith(table.prefix):
            return table, name[len(table.prefix):]
    return None


def class_map_threshold(method: str, value: Callable[[str], Any]) -> float:
    """ClassMap.presence_threshold / LabelInfo.threshold: PnP-OVSS's class-presence threshold; PGSeg has none
    (top-k decides), so its background threshold, the score a pixel needs to get a class (0 without one).
    `value(field)` gives the method's knob."""
    if method == "pgseg":
        return float(value("background_threshold")) if value("background") == "threshold" else 0.0
    return float(value("presence_threshold"))


def config_threshold(config) -> float:
    return class_map_threshold(knobs_of(config).method, lambda n: getattr(config, n))


def load_help(method: str) -> str:
    kind = {"pnp_ovss": "BLIP ITM", "pgseg": "GroupViT/PGSeg"}[method]
    return (f"What to do: set the `model` parameter to a {kind} checkpoint (method {method}) that is in the local "
            "Hugging Face cache or to a local directory (--ros-args -p model:=/path/to/checkpoint), or `method` to "
            "the kind of checkpoint it is, and `device` to one that exists (auto, cpu, cuda:0)")
