"""The `dataset` output kind: one label PNG per camera frame and a JSON-lines manifest a user can query
(pandas.read_json(lines=True), DuckDB's read_json_auto, jq).

    OUT/<bag>/labels/<topic>/<stamp ns>.png    class ids (0 = background, k = classes[k-1]); 16-bit above 254
    OUT/<bag>/manifest.jsonl                   one row per frame (below)
    OUT/manifest.jsonl                         every complete bag's rows, rewritten at the end of each run
    OUT/classes.json                           the vocabulary: id k = classes[k-1]

A row: bag, topic, stamp (header stamp, ns), bag_time (ns), frame_id, labels (path under OUT), height,
width, classes (names present), pixels (name -> pixel count, "background" included)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..ros.bag_pipeline import FrameResult

MANIFEST = "manifest.jsonl"


def label_record(seg, res, rgb, header) -> FrameResult:
    """Worker side: the label image as PNG bytes and the pixels per class (small to send back)."""
    labels = res.labels
    ok, png = cv2.imencode(".png", labels)
    if not ok:   # pragma: no cover - cv2 encodes any uint8/uint16 single-channel array
        return FrameResult(False, "label PNG encoding failed")
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=len(res.class_names) + 1)
    pixels = {"background": int(counts[0])}
    pixels.update({name: int(counts[k]) for k, name in enumerate(res.class_names, start=1) if counts[k]})
    return FrameResult(True, data={
        "png": png.tobytes(), "stamp": header.stamp.sec * 10**9 + header.stamp.nanosec,
        "frame_id": header.frame_id, "height": int(labels.shape[0]), "width": int(labels.shape[1]),
        "classes": [n for n in res.class_names if n in pixels], "pixels": pixels})


def topic_dir(topic: str) -> str:
    """'/cam/image_raw' -> 'cam__image_raw' (one folder level per topic)."""
    return topic.strip("/").replace("/", "__") or "_"


class DatasetSink:
    """Driver side: writes one bag's PNGs and manifest under `root` (its temporary folder); `name` is the
    bag's final folder name, which the manifest's paths use."""

    copies = False   # keeps no original messages: run_bag reads only the camera topics

    def __init__(self, root, name: str):
        self.root, self.name = Path(root), name
        self.manifest = None
        self.used: set = set()

    def open(self, reader, cameras) -> None:
        self.root.mkdir(parents=True)
        self.manifest = open(self.root / MANIFEST, "w", encoding="utf-8")

    def copy(self, conn, stamp: int, raw) -> None:
        pass   # a dataset keeps only the labels

    def frame(self, conn, stamp: int, result: FrameResult) -> None:
        d = result.data
        rel = f"labels/{topic_dir(conn.topic)}/{d['stamp']}"
        n = 1
        while rel + (f"_{n}" if n > 1 else "") in self.used:   # two frames with one header stamp
            n += 1
        rel += f"_{n}" if n > 1 else ""
        self.used.add(rel)
        path = self.root / f"{rel}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(d["png"])
        row = {"bag": self.name, "topic": conn.topic, "stamp": d["stamp"], "bag_time": int(stamp),
               "frame_id": d["frame_id"], "labels": f"{self.name}/{rel}.png", "height": d["height"],
               "width": d["width"], "classes": d["classes"], "pixels": d["pixels"]}
        self.manifest.write(json.dumps(row) + "\n")

    def close(self) -> None:
        if self.manifest is not None:
            self.manifest.close()
            self.manifest = None


def write_manifest(out: Path, names: list[str], classes: list[str]) -> int:
    """OUT/manifest.jsonl from the complete bags' manifests (in `names` order) and OUT/classes.json; each
    written under a temporary name and renamed. Returns the number of rows."""
    rows = 0
    tmp = out / f".{MANIFEST}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for name in names:
            part = out / name / MANIFEST
            if part.is_file():
                text = part.read_text(encoding="utf-8")
                rows += text.count("\n")
                f.write(text)
    os.replace(tmp, out / MANIFEST)
    tmp = out / ".classes.json.tmp"
    tmp.write_text(json.dumps({"classes": list(classes), "background": 0}, indent=1))
    os.replace(tmp, out / "classes.json")
    return rows
