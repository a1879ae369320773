"""Every node parameter in one table: name, default, meaning and when a change takes effect.

The node declares from this table, docs/ros_node.md is checked against it, and engine knobs (`engine.*`) are
the fields of ovss_ros.config.SegmenterConfig with the chosen preset's values as defaults. ROS parameters have
no "None": the few optional engine fields use a documented sentinel (0 or -1) instead."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ovss_ros.config import SegmenterConfig, make_config

# When a changed value is used: "start" (read once), "configure" (next configure transition; refused while
# configured), "activate" (next activation; refused while active), "runtime" (immediately).
START, CONFIGURE, ACTIVATE, RUNTIME = "start", "configure", "activate", "runtime"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    when: str
    description: str


NODE_PARAMS = [
    ParamSpec("model", "Salesforce/blip-itm-large-flickr", CONFIGURE,
              "BLIP ITM checkpoint: Hugging Face Hub id (must be in the local cache when offline) or a local "
              "directory saved with save_pretrained"),
    ParamSpec("device", "auto", CONFIGURE, "auto (cuda:0 when available, else cpu), cpu, cuda, cuda:N"),
    ParamSpec("dtype", "float32", CONFIGURE, "model weights dtype: float32, bfloat16 or float16"),
    ParamSpec("local_files_only", False, CONFIGURE,
              "never contact the Hub (also implied by HF_HUB_OFFLINE=1)"),
    ParamSpec("torch_threads", 0, CONFIGURE,
              "CPU threads for torch in this process; 0 = torch's default (all cores). Lower it when other "
              "torch processes share the CPU: two processes each using every core thrash"),
    ParamSpec("preset", "realtime", START,
              "engine preset (paper, realtime, tiny) giving the defaults of every engine.* parameter"),
    ParamSpec("autostart", True, START,
              "configure and activate by itself (like yolo_ros); false = wait for a lifecycle manager"),
    ParamSpec("cameras", [""], ACTIVATE,
              "camera prefixes sharing the one model: \"\" subscribes `image` and publishes `segmentation/*`; "
              "\"front\" uses `front/image` and `front/segmentation/*` (all relative names)"),
    ParamSpec("input_transport", "raw", ACTIVATE,
              "raw: subscribe `image` (sensor_msgs/Image); compressed: subscribe `image/compressed` "
              "(sensor_msgs/CompressedImage)"),
    ParamSpec("vocabulary", [""], RUNTIME,
              "class names: string array, or one string \"a, b\" (as on the topic); same path as the `vocabulary` "
              "topic and `set_vocabulary` service; [\"\"] = none yet"),
    ParamSpec("max_frame_age", 0.0, RUNTIME,
              "skip frames whose header stamp is older than this many seconds when the worker takes them "
              "(node clock, so use_sim_time works with bags); 0 = never skip"),
    ParamSpec("publish_labels", True, RUNTIME, "publish `segmentation/labels`"),
    ParamSpec("publish_confidence", True, RUNTIME, "publish `segmentation/confidence`"),
    ParamSpec("publish_overlay", True, RUNTIME, "publish `segmentation/overlay`"),
    ParamSpec("publish_masks", True, RUNTIME, "publish `segmentation/masks`"),
    ParamSpec("publish_class_map_per_frame", True, RUNTIME,
              "also publish `segmentation/class_map` with each result's header (it is always published on "
              "vocabulary change)"),
    ParamSpec("overlay_alpha", 0.5, RUNTIME, "weight of the class colours in the overlay, 0..1"),
    ParamSpec("qos.input_reliability", "auto", ACTIVATE,
              "camera subscription reliability: auto (best effort = sensor data, switched to reliable while every "
              "publisher of the topic is reliable, so frames over 512 KB survive Fast DDS), best_effort or reliable"),
    ParamSpec("qos.input_depth", 1, ACTIVATE, "camera subscription depth"),
    ParamSpec("qos.output_reliability", "reliable", CONFIGURE, "image/mask output reliability"),
    ParamSpec("qos.output_depth", 1, CONFIGURE, "image/mask output depth"),
    ParamSpec("diagnostics_period", 1.0, CONFIGURE, "seconds between /diagnostics messages"),
    ParamSpec("debug_extra_latency", 0.0, RUNTIME,
              "test aid: seconds of artificial inference time added per frame (simulates a slow model)"),
]

ENGINE_PREFIX = "engine."

ENGINE_DESCRIPTIONS = {
    "image_size": "model input side in pixels (square warp); 0 = the checkpoint's native size",
    "prompt_template": "caption template, must contain {}",
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
    "postprocess_max_side": "run blur/CRF at this long side and upsample labels; 0 = full resolution",
    "crf_iterations": "DenseCRF iterations",
    "crf_gaussian_sxy": "DenseCRF Gaussian kernel spatial sigma",
    "crf_gaussian_compat": "DenseCRF Gaussian kernel weight",
    "crf_bilateral_sxy": "DenseCRF bilateral kernel spatial sigma",
    "crf_bilateral_srgb": "DenseCRF bilateral kernel colour sigma",
    "crf_bilateral_compat": "DenseCRF bilateral kernel weight",
    "vision_dtype": "ViT pass dtype: auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16",
    "max_classes": "maximum vocabulary size (more classes are refused)",
    "max_class_name_length": "maximum characters per class name",
    "max_image_pixels": "larger input frames are refused (logged and skipped)",
}

# Optional engine fields: ROS value meaning "None", and a value of 0/-1 is never a valid setting for them.
_NONE_SENTINEL = {"image_size": 0, "drop_fraction": -1.0, "presence_top_k": 0, "postprocess_max_side": 0}
_STRING_UNIONS = {"gradcam_layer", "gradcam_head"}   # int or keyword in the engine, string in ROS


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


def all_specs(preset: str) -> list[ParamSpec]:
    """NODE_PARAMS plus one engine.* spec per engine field (defaults from `preset`)."""
    defaults = engine_defaults(preset)
    return NODE_PARAMS + [ParamSpec(ENGINE_PREFIX + n, defaults[n], RUNTIME, ENGINE_DESCRIPTIONS.get(n, n))
                          for n in engine_fields()]


def markdown_table(preset: str = "realtime") -> str:
    """The parameter table for docs/ros_node.md and the README."""
    when = {START: "start only", CONFIGURE: "next configure", ACTIVATE: "next activate", RUNTIME: "immediately"}
    rows = ["| parameter | default | change takes effect | meaning |", "|---|---|---|---|"]
    for s in all_specs(preset):
        default = s.default if not isinstance(s.default, bool) else str(s.default).lower()
        rows.append(f"| `{s.name}` | `{default!r}` | {when[s.when]} | {s.description} |"
                    .replace("`'", "`").replace("'`", "`"))
    return "\n".join(rows)
