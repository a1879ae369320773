"""rosbag2 (sqlite3 or mcap) access through `rosbags`, shared by the play and offline commands.

rosbag2_py is not on PyPI; rosbags reads and writes the same files. Payloads stay CDR bytes: rclpy's
serialization (de)serialises them, rosbags only needs the type definitions to describe the connections."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Iterable, Optional

from rosbags.rosbag2 import Reader, StoragePlugin, Writer


IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STORAGE = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


def message_class(msgtype: str):
    """rclpy class from a rosbag2 type name such as 'sensor_msgs/msg/Image'."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def detect_storage(path: str) -> str:
    """'mcap' or 'sqlite3', from the files of an existing bag directory or a bare .mcap/.db3 file."""
    p = Path(path)
    if p.is_file():
        return "mcap" if p.suffix == ".mcap" else "sqlite3"
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
