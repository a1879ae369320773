"""ovss-bag-segment: segment the camera frames of a rosbag2 file offline into a new bag.

The new bag holds every original message unchanged plus, per camera, segmentation/labels, confidence,
overlay, masks and class_map, each written at its source frame's bag time with the source frame's header
(the same messages the node would publish)."""
from __future__ import annotations

import argparse
import sys
import time

from rclpy.serialization import deserialize_message, serialize_message

from ..bag_types import typestore
from . import outputs
from .bag_io import (Reader, copy_connection, detect_storage, image_connections, message_class, open_writer,
                     output_namespace)
from .image_codec import BadFrame, compressed_to_rgb, image_to_rgb
from .vocabulary import parse_vocabulary_text

OUTPUTS = {"labels": "sensor_msgs/msg/Image", "confidence": "sensor_msgs/msg/Image",
           "overlay": "sensor_msgs/msg/Image", "masks": "ovss_ros/msg/SegmentationMasks",
           "class_map": "ovss_ros/msg/ClassMap"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="ovss-bag-segment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="input bag directory (sqlite3 or mcap)")
    ap.add_argument("output", help="output bag directory (must not exist)")
    ap.add_argument("--vocabulary", required=True, help='class names: "red car, dog" or a JSON list')
    ap.add_argument("--topics", nargs="+", help="image topics to segment (default: every Image/CompressedImage)")
    ap.add_argument("--model", default="Salesforce/blip-itm-large-flickr", help="Hub id or local directory")
    ap.add_argument("--preset", default="realtime", help="engine preset: paper, realtime, tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KNOB=VALUE",
                    help="engine knob (repeatable), as for ovss-segment: dropout_rounds=1, presence_top_k=none")
    ap.add_argument("--storage", choices=["sqlite3", "mcap"], help="output format (default: the input's)")
    ap.add_argument("--bag-version", type=int, choices=[8, 9], default=9,
                    help="rosbag2 metadata version (8 for older readers)")
    ap.add_argument("--overlay-alpha", type=float, default=0.5)
    ap.add_argument("--no-overlay", action="store_true", help="do not write segmentation/overlay")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ovss_ros.config import parse_overrides
    from ovss_ros.model_loading import ModelLoadError
    from ovss_ros.prompts import VocabularyError
    from ovss_ros.segmenter import Segmenter

    try:
        seg = Segmenter.from_pretrained(args.model, preset=args.preset, device=args.device, dtype=args.dtype,
                                        **parse_overrides(args.overrides))
        seg.set_vocabulary(parse_vocabulary_text(args.vocabulary))
    except (ModelLoadError, VocabularyError, ValueError) as exc:
        print(f"ovss-bag-segment: {exc}", file=sys.stderr)
        return 2
    store = typestore()
    storage = args.storage or detect_storage(args.input)
    n_frames = n_bad = 0
    t0 = time.perf_counter()
    with Reader(args.input) as reader:
        cams = {c.topic: c for c in image_connections(reader, args.topics)}
        writer = open_writer(args.output, storage, args.bag_version)
        with writer:
            copied = {c.id: copy_connection(writer, c) for c in reader.connections}
            out = {}
            for topic, conn in cams.items():
                ns = output_namespace(topic)
                out[topic] = {k: writer.add_connection(f"{ns}/segmentation/{k}", t, typestore=store)
                              for k, t in OUTPUTS.items() if not (k == "overlay" and args.no_overlay)}
            for conn, stamp, raw in reader.messages():
                writer.write(copied[conn.id], stamp, raw)
                if conn.topic not in cams:
                    continue
                msg = deserialize_message(bytes(raw), message_class(conn.msgtype))
                try:
                    decode = compressed_to_rgb if hasattr(msg, "format") else image_to_rgb
                    rgb = decode(msg, seg.config.max_image_pixels)
                    res = seg.segment(rgb)
                except (BadFrame, ValueError) as exc:
                    n_bad += 1
                    print(f"skipping frame of {conn.topic} at {stamp}: {exc}", file=sys.stderr)
                    continue
                conns, header = out[conn.topic], msg.header
                msgs = {"labels": outputs.labels_image(res.labels, header),
                        "confidence": outputs.confidence_image(res.confidence, header),
                        "masks": outputs.masks_message(res, header, 1),
                        "class_map": outputs.class_map_message(res.class_names, 1, header,
                                                               seg.config.presence_threshold, args.model)}
                if "overlay" in conns:
                    msgs["overlay"] = outputs.overlay_image(rgb, res.labels, res.class_names, header,
                                                            args.overlay_alpha)
                for key, m in msgs.items():
                    writer.write(conns[key], stamp, serialize_message(m))
                n_frames += 1
    dt = time.perf_counter() - t0
    print(f"ovss-bag-segment: {n_frames} frames segmented ({n_bad} skipped) from {len(cams)} camera topic(s) "
          f"in {dt:.1f} s -> {args.output} ({storage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
