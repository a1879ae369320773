"""The decisions of launch/ovss.launch.py as plain functions (no `launch` import), so they are tested here
even though launch/launch_ros are not installable on these machines."""
from __future__ import annotations

import os
import re
from typing import Mapping, Optional

# Fast DDS reads its default XML profile from this variable (Humble's Fast DDS 2.x from the older name too).
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")

# Topics in config/ovss.rviz, as the node publishes them with no namespace and the default camera. The labels
# are shown through the overlay (stable colours, legend): a mono8 image of class ids 0..N looks black in rviz.
RVIZ_TOPICS = {"camera": "/image", "overlay": "/segmentation/overlay"}
_FIXED_FRAME = re.compile(r"^(\s*Fixed Frame: ).*$", re.M)


def split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _join(*parts: str) -> str:
    return "/" + "/".join(p.strip("/") for p in parts if p.strip("/"))


def node_remappings(cameras: list[str], image_topics: list[str], input_transport: str = "raw") -> list[tuple]:
    """Remap each camera's relative input (`image`, `front/image`, or their `/compressed` twin) to the
    given topic; topics are matched to cameras in order. No topic = keep the relative name."""
    cams = cameras or [""]
    if image_topics and len(image_topics) != len(cams):
        raise ValueError(f"{len(image_topics)} image topic(s) for {len(cams)} camera(s): give one per camera")
    out = []
    for cam, src in zip(cams, image_topics):
        local = f"{cam.strip('/')}/image" if cam.strip("/") else "image"
        if input_transport == "compressed":
            out.append((f"{local}/compressed", src if src.endswith("/compressed") else f"{src}/compressed"))
        else:
            out.append((local, src))
    return out


def node_parameter_overrides(model: str = "", device: str = "", preset: str = "", vocabulary: str = "",
                             cameras: Optional[list[str]] = None, input_transport: str = "",
                             use_sim_time: bool = False, method: str = "") -> dict:
    """Launch arguments that were given override the params file; empty ones leave it alone."""
    out: dict = {"use_sim_time": use_sim_time}
    for key, value in (("model", model), ("method", method), ("device", device), ("preset", preset),
                       ("input_transport", input_transport)):
        if value:
            out[key] = value
    if vocabulary:
        out["vocabulary"] = split_list(vocabulary)
    if cameras:
        out["cameras"] = cameras
    return out


def check_frame_id(frame: str) -> str:
    """A TF frame id as rviz's fixed frame: no spaces, no leading '/' (tf2 refuses those)."""
    if not frame or frame.startswith("/") or any(ch.isspace() or ch in ":#'\"" for ch in frame):
        raise ValueError(f"fixed_frame {frame!r} is not a TF frame id (e.g. camera_link, base_link, map: "
                         "no spaces, no leading '/')")
    return frame


def rviz_config(template: str, namespace: str = "", camera: str = "", image_topic: str = "",
                fixed_frame: str = "") -> str:
    """config/ovss.rviz with its topics moved to where this launch puts them, and its fixed frame replaced
    when one is given (empty keeps the file's)."""
    cam = camera.strip("/")
    base = _join(namespace, cam)
    topics = {"camera": image_topic if image_topic.startswith("/") else _join(base, image_topic or "image"),
              "overlay": _join(base, "segmentation/overlay")}
    for key, default in RVIZ_TOPICS.items():
        template = template.replace(f"Value: {default}\n", f"Value: {topics[key]}\n")
    if fixed_frame.strip():
        frame = check_frame_id(fixed_frame.strip())
        template = _FIXED_FRAME.sub(lambda m: m.group(1) + frame, template, count=1)
    return template


def is_true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def node_environment(fastdds_profile: str, profile_file: str, environ: Optional[Mapping[str, str]] = None) -> dict:
    """Variables the launch adds to the node's environment: the large-frames Fast DDS profile
    (config/fastdds_large_frames.xml) unless turned off, or unless the environment already names a profile
    file, which the node then inherits (an operator's own profile wins)."""
    environ = environ if environ is not None else os.environ
    if not is_true(fastdds_profile) or any(environ.get(v) for v in PROFILE_VARIABLES):
        return {}
    return {v: profile_file for v in PROFILE_VARIABLES}
