"""rosbag2 (sqlite3 or mcap) access through `rosbags`, shared by the play and offline commands.

rosbag2_py is not on PyPI; rosbags reads and writes the same files. Payloads stay CDR bytes: rclpy's
serialization (de)serialises them, rosbags only needs the type definitions to describe the connections."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STORAGE = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


def message_class(msgtype: str):
    """rclpy class from a rosbag2 type name such as 'sensor_msgs/msg/Image'."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _msg_dirs() -> list[Path]:
    """Where ovss_ros/msg/*.msg are installed (ament prefixes, this venv) or kept (source tree)."""
    dirs = [Path(p) / "share" / "ovss_ros" / "msg" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(":") if p]
    dirs.append(Path(sys.prefix) / "share" / "ovss_ros" / "msg")
    dirs.append(Path(__file__).resolve().parents[2] / "msg")
    return [d for d in dirs if d.is_dir() and any(d.glob("*.msg"))]


def typestore():
    """A rosbags typestore that also knows ovss_ros's own messages."""
    store = get_typestore(Stores.ROS2_KILTED)
    dirs = _msg_dirs()
    if not dirs:
        raise FileNotFoundError("cannot find ovss_ros/msg/*.msg (build the package or run from the source tree)")
    types = {}
    for path in sorted(dirs[0].glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"ovss_ros/msg/{path.stem}"))
    store.register(types)
    return store


def detect_storage(path: str) -> str:
    """'mcap' or 'sqlite3', from the files of an existing bag directory."""
    p = Path(path)
    if any(p.glob("*.mcap")):
        return "mcap"
    return "sqlite3"


def image_connections(reader: Reader, topics: Optional[Iterable[str]] = None) -> list:
    """Connections carrying camera frames: the named topics, or every Image/CompressedImage topic."""
    wanted = set(topics or [])
    conns = [c for c in reader.connections if c.msgtype in IMAGE_TYPES and (not wanted or c.topic in wanted)]
    missing = wanted - {c.topic for c in conns}
    if missing:
        raise SystemExit(f"topic(s) {sorted(missing)} not in the bag or not sensor_msgs Image/CompressedImage; "
                         f"image topics there: {sorted(c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES)}")
    return conns


def output_namespace(image_topic: str) -> str:
    """'/cam/image_raw' -> '/cam', '/cam/image/compressed' -> '/cam': where the node, run in the camera's
    namespace, would publish its segmentation/* topics."""
    t = image_topic.rstrip("/")
    if t.endswith("/compressed"):
        t = t[: -len("/compressed")]
    parent = t.rsplit("/", 1)[0]
    return parent if parent else ""


def copy_connection(writer: Writer, conn):
    """Same topic, type, definition and QoS in the new bag."""
    ext = conn.ext
    return writer.add_connection(conn.topic, conn.msgtype, msgdef=conn.msgdef.data, rihs01=conn.digest,
                                 serialization_format=getattr(ext, "serialization_format", "cdr"),
                                 offered_qos_profiles=getattr(ext, "offered_qos_profiles", ()))


def open_writer(path: str, storage: str, version: int = 9) -> Writer:
    if storage not in STORAGE:
        raise SystemExit(f"storage {storage!r}: expected one of {sorted(STORAGE)}")
    return Writer(path, version=version, storage_plugin=STORAGE[storage])
