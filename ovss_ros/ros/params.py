"""Every node parameter in one table: name, default, meaning, when a change takes effect, allowed values.

The node declares from this table (descriptors carry the ranges, choices and read_only), docs/ros_node.md is
checked against it, and engine knobs are the fields of each method's config (`engine.*`: PnP-OVSS's
SegmenterConfig, `pgseg.*`: PGSegConfig; knobs.py) with the chosen preset's values as defaults and the
engine's own limits as ranges. ROS parameters have no "None": the few optional engine fields use a documented
sentinel (0 or -1) instead."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from ovss_ros.engine.loading import MODEL_DTYPES

from .knobs import ENGINE, KNOBS, METHODS, PRESET_NAMES, KnobTable
from .output_size import MAX_SIDE, size_problem, source_problem

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
              "BLIP ITM checkpoint (method pnp_ovss) or GroupViT/PGSeg checkpoint (method pgseg): Hugging Face Hub "
              "id (must be in the local cache when offline) or a local directory saved with save_pretrained"),
    ParamSpec("method", "pnp_ovss", CONFIGURE,
              "segmentation method: pnp_ovss (PnP-OVSS, engine.* knobs) or pgseg (PGSeg, pgseg.* knobs); a "
              "checkpoint of the other kind fails configure, naming both", METHODS),
    ParamSpec("device", "auto", CONFIGURE, "auto (cuda:0 when available, else cpu), cpu, cuda, cuda:N"),
    ParamSpec("dtype", "float32", CONFIGURE, "model weights dtype", MODEL_DTYPES),
    ParamSpec("local_files_only", False, CONFIGURE,
              "never contact the Hub (also implied by HF_HUB_OFFLINE=1)"),
    ParamSpec("torch_threads", 0, CONFIGURE,
              "CPU threads for torch in this process; 0 = torch's default (all cores). Lower it when other "
              "torch processes share the CPU: two processes each using every core thrash", limits=(0, 1024)),
    ParamSpec("preset", "realtime", START,
              "engine preset giving the defaults of every engine.* and pgseg.* parameter: realtime and tiny exist "
              "for both methods; paper and pgseg both name the published protocol (PnP-OVSS's paper preset, "
              "PGSeg's pgseg preset)", PRESET_NAMES),
    ParamSpec("autostart", True, START,
              "configure and activate by itself (like yolo_ros); false = wait for a lifecycle manager"),
    ParamSpec("cameras", [""], CONFIGURE,
              "camera prefixes sharing the one model: \"\" subscribes `image` and publishes `segmentation/*`; "
              "\"front\" uses `front/image` and `front/segmentation/*`; relative names only, each listed once "
              "(an absolute \"/front\" is refused)"),
    ParamSpec("input_transport", "raw", ACTIVATE,
              "raw: subscribe `image` (sensor_msgs/Image); compressed: subscribe `image/compressed` "
              "(sensor_msgs/CompressedImage)", ("raw", "compressed")),
    ParamSpec("vocabulary", [""], RUNTIME,
              "class names: string array, or one string \"a, b\" (as on the topic); same path as the `vocabulary` "
              "topic and `set_vocabulary` service, and always shows the vocabulary in use; [\"\"] = none yet"),
    ParamSpec("max_frame_age", 0.0, RUNTIME,
              "skip frames whose header stamp is older than this many seconds, or newer than "
              "future_stamp_tolerance, when the worker takes them (node clock, so use_sim_time works with "
              "bags); a frame stamped zero (stamp never set) has no age and is always segmented, and its "
              "stamp_to_output_s is not measured; 0 = never skip", limits=(0.0, 86400.0)),
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
    ParamSpec("output_size", [0, 0], RUNTIME,
              "[width, height] of labels, confidence and masks (labels nearest-neighbour, scores area/bilinear; "
              "headers stay the frame's; the overlay keeps the camera's size); [0, 0] = the camera's size; each "
              f"side 1..{MAX_SIDE}; exclusive with output_size_from"),
    ParamSpec("output_size_from", "", ACTIVATE,
              "follow the size of this topic, relative to each camera's prefix: a name ending in `camera_info` is "
              "read as sensor_msgs/CameraInfo (e.g. `aligned_depth_to_color/camera_info`), any other as "
              "sensor_msgs/Image (e.g. a depth image); the latest message's size applies, the camera's size until "
              "the first; \"\" = off; exclusive with output_size"),
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

ENGINE_PREFIX = ENGINE.prefix
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_CAMERA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def engine_fields() -> list[str]:
    return ENGINE.fields()


def engine_to_ros(name: str, value: Any) -> Any:
    return ENGINE.to_ros(name, value)


def ros_to_engine(name: str, value: Any) -> Any:
    return ENGINE.from_ros(name, value)


def engine_defaults(preset: str) -> dict[str, Any]:
    """engine.* parameter defaults for a preset, as ROS values."""
    return ENGINE.defaults(preset)


def knob_specs(table: KnobTable, preset: str) -> list[ParamSpec]:
    """One runtime spec per field of a method's config, defaults from the node's `preset`."""
    defaults = table.defaults(preset)
    return [ParamSpec(table.prefix + n, defaults[n], RUNTIME, table.descriptions.get(n, n),
                      tuple(table.choices.get(n, ())), table.range(n, defaults[n])) for n in table.fields()]


def all_specs(preset: str) -> list[ParamSpec]:
    """NODE_PARAMS plus one engine.* spec per PnP-OVSS field and one pgseg.* spec per PGSeg field."""
    return NODE_PARAMS + [s for table in KNOBS.values() for s in knob_specs(table, preset)]


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
        return camera_names_problem(list(value))
    if spec.name == "output_size":
        return size_problem(value)
    if spec.name == "output_size_from":
        return source_problem(str(value))
    return None


def camera_names_problem(cameras: list) -> Optional[str]:
    """Why a `cameras` list is refused, or None. Names are relative ROS names (tokens of letters, digits and
    '_', not starting with a digit, joined by '/'), resolved in the node's namespace; "" is the node's own
    `image`. An absolute name ('/front') is refused rather than silently made relative (in a namespace it
    would not be the topic it names)."""
    if not cameras:
        return "cameras=[]: name at least one camera ([\"\"] for the node's own `image` topic)"
    seen: dict = {}
    for cam in cameras:
        if not isinstance(cam, str):
            return f"cameras: {cam!r} is not a string"
        if cam.startswith(("/", "~")):
            return (f"cameras: {cam!r} is not a relative name; camera names are resolved in the node's namespace "
                    f"(use {cam.lstrip('/~')!r}, and a namespace or remapping for other places)")
        if cam and not _CAMERA.match(cam):
            return (f"cameras: {cam!r} is not a valid name: tokens of letters, digits and '_' (not starting with a "
                    "digit) joined by single '/'")
        if cam in seen:
            return f"cameras: {cam!r} is listed twice; each camera prefix must be unique"
        seen[cam] = True
    return None


def markdown_table(preset: str = "realtime") -> str:
    """The parameter table for docs/ros_node.md and the README."""
    when = {START: "start only", CONFIGURE: "next configure", ACTIVATE: "next activate", RUNTIME: "immediately"}
    rows = ["| parameter | default | change takes effect | meaning |", "|---|---|---|---|"]
    for s in all_specs(preset):
        default = s.default if not isinstance(s.default, bool) else str(s.default).lower()
        default = '""' if default == "" else default   # an empty code span would not render
        meaning = s.description
        if s.choices and not all(c in meaning for c in s.choices):
            meaning += f" ({', '.join(s.choices)})"
        if s.limits is not None:
            lo, hi = s.limits
            meaning += f"; range [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        rows.append(f"| `{s.name}` | `{default!r}` | {when[s.when]} | {meaning} |"
                    .replace("`'", "`").replace("'`", "`"))
    return "\n".join(rows)
