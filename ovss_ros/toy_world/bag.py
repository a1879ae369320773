"""Toy-world sequences as rosbag2 (via `rosbags`, no ROS install needed), and reading them back.

    ovss-toy-bag write out/toy_bag --frames 30 --seed 0          # camera + ground-truth topics
    ovss-bag-segment out/toy_bag out/toy_seg --vocabulary "$(ovss-toy-bag vocabulary)" \
        --topics /camera/image_raw --model <toy model> --preset tiny
    ovss-toy-bag-score out/toy_seg                                # mIoU of segmentation/labels vs ground truth

Scoring lives in `ovss_ros.evaluation.bag_score` (evaluation builds on the toy world, never the reverse).

The ground truth travels in the bag as a mono8 Image (0 = background, k = class k) with the same header
stamp as its camera frame, and the vocabulary as a std_msgs/String (JSON) on /toy_world/classes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..bag_types import typestore
from .sequence import make_sequence
from .world import SIZE, class_names

IMAGE_TOPIC = "/camera/image_raw"
GT_TOPIC = "/camera/ground_truth/labels"
CLASSES_TOPIC = "/toy_world/classes"
LABELS_TOPIC = "/camera/segmentation/labels"


def _image(store, arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    T = store.types
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                                                                nanosec=stamp_ns % 10**9),
                                      frame_id=frame_id)
    return T["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                                      step=w * ch, data=np.ascontiguousarray(arr).reshape(-1).astype(np.uint8))


def write_toy_bag(path, seed: int = 0, n_frames: int = 30, world: str = "pattern", size: int = SIZE,
                  fps: float = 10.0, storage: str = "sqlite3", start_ns: int = 1_700_000_000 * 10**9) -> dict:
    """Write a toy-world sequence; returns {"frames", "classes", "path"}."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists (rosbag2 writes a new directory)")
    store = typestore(own_messages=False)
    frames = make_sequence(seed, n_frames, world, size)
    names = list(class_names(world))
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as w:
        cam = w.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        gt = w.add_connection(GT_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        cls = w.add_connection(CLASSES_TOPIC, "std_msgs/msg/String", typestore=store)
        info = json.dumps({"classes": names, "world": world, "seed": seed})
        w.write(cls, start_ns, store.serialize_cdr(store.types["std_msgs/msg/String"](data=info),
                                                   "std_msgs/msg/String"))
        for t, f in enumerate(frames):
            stamp = start_ns + int(round(t * 1e9 / fps))
            w.write(cam, stamp, store.serialize_cdr(_image(store, f.rgb, "rgb8", stamp, "camera"),
                                                    "sensor_msgs/msg/Image"))
            w.write(gt, stamp, store.serialize_cdr(_image(store, f.labels, "mono8", stamp, "camera"),
                                                   "sensor_msgs/msg/Image"))
    return {"frames": n_frames, "classes": names, "path": str(path)}


def read_images(path, topic: str, store=None) -> dict[int, np.ndarray]:
    """header stamp (ns) -> H x W array, for a mono8/rgb8 Image topic."""
    from rosbags.rosbag2 import Reader

    store = store or typestore(own_messages=False)
    out = {}
    with Reader(path) as r:
        conns = [c for c in r.connections if c.topic == topic]
        if not conns:
            raise SystemExit(f"{path}: no topic {topic}; topics: {sorted(c.topic for c in r.connections)}")
        for conn, _t, raw in r.messages(connections=conns):
            m = store.deserialize_cdr(raw, conn.msgtype)
            ch = 3 if m.encoding == "rgb8" else 1
            arr = np.asarray(m.data, np.uint8).reshape(m.height, m.width, ch)
            out[m.header.stamp.sec * 10**9 + m.header.stamp.nanosec] = arr[..., 0] if ch == 1 else arr
    return out


def read_classes(path) -> list[str]:
    from rosbags.rosbag2 import Reader

    store = typestore(own_messages=False)
    with Reader(path) as r:
        conns = [c for c in r.connections if c.topic == CLASSES_TOPIC]
        for conn, _t, raw in r.messages(connections=conns):
            return json.loads(store.deserialize_cdr(raw, conn.msgtype).data)["classes"]
    raise SystemExit(f"{path}: no {CLASSES_TOPIC} topic (not a toy-world bag?)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ovss-toy-bag", description="Toy-world rosbags: write one, list the vocabulary "
                                 "(scoring a segmented one: ovss-toy-bag-score).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write a toy-world sequence bag")
    w.add_argument("out")
    w.add_argument("--frames", type=int, default=30)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--world", default="pattern", choices=["pattern", "shape"])
    w.add_argument("--size", type=int, default=SIZE, help="frame side in pixels")
    w.add_argument("--fps", type=float, default=10.0)
    w.add_argument("--storage", default="sqlite3", choices=["sqlite3", "mcap"])
    v = sub.add_parser("vocabulary", help="print the toy world's class names as a JSON list")
    v.add_argument("--world", default="pattern", choices=["pattern", "shape"])
    a = ap.parse_args(argv)
    if a.cmd == "write":
        info = write_toy_bag(a.out, a.seed, a.frames, a.world, a.size, a.fps, a.storage)
        print(f"ovss-toy-bag: wrote {info['frames']} frames ({a.size}x{a.size}) to {info['path']}")
    else:
        print(json.dumps(list(class_names(a.world))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
