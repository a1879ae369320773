"""The one rosbags typestore of this package, for every bag it reads or writes (toy-world bags, the ROS
layer's bag tools, the demo).

Engine-side on purpose: the toy world writes bags without ROS, so this module imports neither rclpy nor
`ovss_ros.ros`, and `rosbags` (the optional `bags` extra) only when a typestore is asked for.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

MSG_PACKAGE = "ovss_ros"


def msg_dirs() -> list[Path]:
    """Where ovss_ros/msg/*.msg are installed (ament prefixes, this venv) or kept (source tree)."""
    dirs = [Path(p) / "share" / MSG_PACKAGE / "msg" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(":") if p]
    dirs.append(Path(sys.prefix) / "share" / MSG_PACKAGE / "msg")
    dirs.append(Path(__file__).resolve().parents[1] / "msg")
    return [d for d in dirs if d.is_dir() and any(d.glob("*.msg"))]


def typestore(own_messages: bool = True):
    """A rosbags typestore of ROS 2 Kilted's standard messages and, unless `own_messages` is false, also
    ovss_ros's own (ClassMap, SegmentationMasks, ...). Bags holding only standard types (the toy world's)
    pass False, so they need no ovss_ros/msg definitions (a plain `pip install` has none)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    if not own_messages:
        return store
    dirs = msg_dirs()
    if not dirs:
        raise FileNotFoundError("cannot find ovss_ros/msg/*.msg (build the package or run from the source tree)")
    types = {}
    for path in sorted(dirs[0].glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{MSG_PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store
