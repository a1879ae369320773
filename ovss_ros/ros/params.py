"""Every node parameter in one table: name, default, meaning, when a change takes effect, allowed values.

The node declares from this table (descriptors carry the ranges, choices and read_only), docs/ros_node.md is
checked against it, and engine knobs (`engine.*`) are the fields of ovss_ros.config.SegmenterConfig with the
chosen preset's values as defaults and the engine's own limits as ranges. ROS parameters have no "None": the
few optional engine fields use a documented sentinel (0 or -1) instead."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Optional

from ovss_ros.config import (ENGINE_CHOICES, ENGINE_LIMITS, POSTPROCESS_MAX_SIDE_CAP, PRESETS, SegmenterConfig,
                             make_config)

# When a changed value is used: "start" (read once; read_only), "configure" (next configure transition;
# refused while configured), "activate" (next activation; refused while active), "runtime" (immediately).
START, CONFIGURE, ACTIVATE, RUNTIME = "start", "configure", "activate", "runtime"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    when: str
    description: str
    choices: tuple = ()                       # allowed strings, if a fixed set
    limits: Optional[tuple] = None            # (min, max) inclusive, for numbers


NODE_PARAMS = [
    ParamSpec("model", "Salesforce/blip-itm-large-flickr", CONFIGURE,
              "BLIP ITM checkpoint: Hugging Face Hub id (must be in the local cache when offline) or a local "
              "directory saved with save_pretrained"),
    ParamSpec("device", "auto", CONFIGURE, "auto (cuda:0 when available, else cpu), cpu, cuda, cuda:N"),
    ParamSpec("dtype", "float32", CONFIGURE, "model weights dtype", ("float32", "bfloat16", "float16")),
    ParamSpec("local_files_only", False, CONFIGURE,
              "never contact the Hub (also implied by HF_HUB_OFFLINE=1)"),
    ParamSpec("torch_threads", 0, CONFIGURE,
              "CPU threads for torch in this process; 0 = torch's default (all cores). Lower it when other "
              "torch processes share the CPU: two processes each using every core thrash", limits=(0, 1024)),
    ParamSpec("preset", "realtime", START,
              "engine preset giving the defaults of every engine.* parameter", tuple(PRESETS)),
    ParamSpec("autostart", True, START,
              "configure and activate by itself (like yolo_ros); false = wait for a lifecycle manager"),
    ParamSpec("cameras", [""], CONFIGURE,
              "camera prefixes sharing the one model: \"\" subscribes `image` and publishes `segmentation/*`; "
              "\"front\" uses `front/image` and `front/segmentation/*` (all relative names)"),
    ParamSpec("input_transport", "raw", ACTIVATE,
              "raw: subscribe `image` (sensor_msgs/Image); compressed: subscribe `image/compressed` "
              "(sensor_msgs/CompressedImage)", ("raw", "compressed")),
    ParamSpec("vocabulary", [""], RUNTIME,
              "class names: string array, or one string \"a, b\" (as on the topic); same path as the `vocabulary` "
              "topic and `set_vocabulary` service, and always shows the vocabulary in use; [\"\"] = none yet"),
    ParamSpec("max_frame_age", 0.0, RUNTIME,
              "skip frames whose header stamp is older than this many seconds, or newer than "
              "future_stamp_tolerance, when the worker takes them (node clock, so use_sim_time works with "
              "bags); 0 = never skip", limits=(0.0, 86400.0)),
    ParamSpec("future_stamp_tolerance", 0.5, RUNTIME,
              "with max_frame_age set, frames stamped more than this many seconds in the future are stale too",
              limits=(0.0, 3600.0)),
    ParamSpec("publish_labels", True, RUNTIME, "publish `segmentation/labels`"),
    ParamSpec("publish_confidence", True, RUNTIME, "publish `segmentation/confidence` (computed only while it has a subscriber)"),
    ParamSpec("publish_overlay", True, RUNTIME, "publish `segmentation/overlay` (drawn only while it has a subscriber, on its own thread)"),
    ParamSpec("publish_masks", True, RUNTIME, "publish `segmentation/masks` (computed only while it has a subscriber)"),
    ParamSpec("publish_class_map_per_frame", False, RUNTIME,
              "also publish `segmentation/class_map` (and label_info) with each result's header; they are always "
              "published, transient local, on every vocabulary change"),
    ParamSpec("overlay_alpha", 0.5, RUNTIME, "weight of the class colours in the overlay", limits=(0.0, 1.0)),
    ParamSpec("qos.input_reliability", "auto", ACTIVATE,
              "camera readers: auto (a best-effort reader, plus a reliable one unless every publisher known at "
              "activation is best effort; duplicates dropped: every publisher is heard from its first frame, and "
              "frames over 512 KB from reliable publishers survive Fast DDS), best_effort or reliable",
              ("auto", "best_effort", "reliable")),
    ParamSpec("diagnostics_period", 1.0, START, "seconds between /diagnostics messages", limits=(0.05, 3600.0)),
    ParamSpec("diagnostics_window", 10.0, START,
              "seconds of history behind a camera's diagnostic level (bad, stale or failed frames, silence)",
              limits=(0.5, 3600.0)),
    ParamSpec("debug_extra_latency", 0.0, RUNTIME,
              "test aid: seconds of artificial inference time added per engine pass (one batch: the newest frame of each "
              "camera; simulates a slow model)",
              limits=(0.0, 600.0)),
]

ENGINE_PREFIX = "engine."

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
                            f"{POSTPROCESS_MAX_SIDE_CAP} px",
    "crf_iterations": "DenseCRF iterations",
    "crf_gaussian_sxy": "DenseCRF Gaussian kernel spatial sigma",
    "crf_gaussian_compat": "DenseCRF Gaussian kernel weight",
    "crf_bilateral_sxy": "DenseCRF bilateral kernel spatial sigma",
    "crf_bilateral_srgb": "DenseCRF bilateral kernel colour sigma",
    "crf_bilateral_compat": "DenseCRF bilateral kernel weight",
    "vision_dtype": "ViT pass dtype: auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16",
    "compile": "none or torch_compile (ViT and text layers; the first frame of each shape compiles)",
    "max_classes": "maximum vocabulary size (more classes are refused)",
    "max_class_name_length": "maximum characters per class name",
    "max_image_pixels": "larger input frames are refused (logged and skipped)",
}

# Optional engine fields: ROS value meaning "None", and a value of 0/-1 is never a valid setting for them.
_NONE_SENTINEL = {"image_size": 0, "drop_fraction": -1.0, "presence_top_k": 0, "postprocess_max_side": 0}
_STRING_UNIONS = {"gradcam_layer", "gradcam_head"}   # int or keyword in the engine, string in ROS
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def engine_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(SegmenterConfig)]


def engine_to_ros(name: str, value: Any) -> Any:
    if name in _NONE_SENTINEL and value is None:
        return _NONE_SENTINEL[name]
    if name in _STRING_UNIONS:
        return str(value)
    if name == "drop_fraction":
        return float(value)
    return value


def ros_to_engine(name: str, value: Any) -> Any:
    if name in _NONE_SENTINEL and value == _NONE_SENTINEL[name]:
        return None
    if name in _STRING_UNIONS:
        text = str(value).strip()
        return int(text) if text.lstrip("-").isdigit() else text
    return value


def engine_defaults(preset: str) -> dict[str, Any]:
    """engine.* parameter defaults for a preset, as ROS values."""
    cfg = make_config(preset)
    return {name: engine_to_ros(name, getattr(cfg, name)) for name in engine_fields()}


def _engine_limits(name: str, default: Any) -> Optional[tuple]:
    if name not in ENGINE_LIMITS or isinstance(default, bool):
        return None
    lo, hi = ENGINE_LIMITS[name]
    if name in _NONE_SENTINEL:   # the sentinel must fit the descriptor's range too
        lo = _NONE_SENTINEL[name] if lo is None else min(lo, _NONE_SENTINEL[name])
    return lo, hi


def all_specs(preset: str) -> list[ParamSpec]:
    """NODE_PARAMS plus one engine.* spec per engine field (defaults from `preset`)."""
    defaults = engine_defaults(preset)
    return NODE_PARAMS + [ParamSpec(ENGINE_PREFIX + n, defaults[n], RUNTIME, ENGINE_DESCRIPTIONS.get(n, n),
                                    tuple(ENGINE_CHOICES.get(n, ())), _engine_limits(n, defaults[n]))
                          for n in engine_fields()]


def check_node_value(spec: ParamSpec, value: Any) -> Optional[str]:
    """The reason a node parameter value is refused, or None. Ranges are the descriptors' (rclpy enforces
    them before any callback); engine values are checked by the engine."""
    if spec.choices and value not in spec.choices:
        return f"{spec.name}={value!r}: expected one of {list(spec.choices)}"
    if spec.name == "device" and not _DEVICE.match(str(value)):
        return f"device={value!r}: expected auto, cpu, cuda or cuda:N"
    if spec.name == "model" and not str(value).strip():
        return "model must not be empty"
    if spec.name == "cameras":
        names = [str(c).strip("/") for c in value]
        if len(set(names)) != len(names):
            return f"cameras={list(value)}: each camera prefix must be unique"
    return None


def markdown_table(preset: str = "realtime") -> str:
    """The parameter table for docs/ros_node.md and the README."""
    when = {START: "start only", CONFIGURE: "next configure", ACTIVATE: "next activate", RUNTIME: "immediately"}
    rows = ["| parameter | default | change takes effect | meaning |", "|---|---|---|---|"]
    for s in all_specs(preset):
        default = s.default if not isinstance(s.default, bool) else str(s.default).lower()
        meaning = s.description
        if s.choices and not all(c in meaning for c in s.choices):
            meaning += f" ({', '.join(s.choices)})"
        if s.limits is not None:
            lo, hi = s.limits
            meaning += f"; range [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        rows.append(f"| `{s.name}` | `{default!r}` | {when[s.when]} | {meaning} |"
                    .replace("`'", "`").replace("'`", "`"))
    return "\n".join(rows)
