"""ovss-bag-segment: segment the camera frames of a rosbag2 file offline into a new bag.

The new bag holds every original message unchanged plus, per camera, segmentation/labels, confidence,
overlay, masks and class_map, each written at its source frame's bag time with the source frame's header
(the same messages the node would publish)."""
from __future__ import annotations

import argparse
import functools
import sys
import time

from ovss_ros.engine.loading import MODEL_DTYPES
from ovss_ros.engine.methods import METHODS

from .bag_io import detect_storage
from .output_size import size_problem
from .bag_pipeline import OUTPUTS, BagOutputOptions, OutputBagSink, bag_messages, done, run_bag, segment_frames
from .vocabulary import parse_vocabulary_text

__all__ = ["OUTPUTS", "add_segmentation_args", "main", "parse_args"]


def add_segmentation_args(ap: argparse.ArgumentParser) -> None:
    """Model, vocabulary and output options; ovss-label-bags takes the same ones."""
    ap.add_argument("--vocabulary", required=True, help='class names: "red car, dog" or a JSON list')
    ap.add_argument("--topics", nargs="+", help="image topics to segment (default: every Image/CompressedImage)")
    ap.add_argument("--model", default="Salesforce/blip-itm-large-flickr", help="Hub id or local directory")
    ap.add_argument("--method", choices=METHODS,
                    help="segmentation method (default: what the checkpoint is: BLIP -> pnp_ovss, GroupViT -> pgseg)")
    ap.add_argument("--preset", default="realtime",
                    help="engine preset: realtime (default) or tiny, for either method; paper (pnp_ovss), "
                         "pgseg (pgseg)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=MODEL_DTYPES)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KNOB=VALUE",
                    help="engine knob of the method (repeatable), as for ovss-segment: dropout_rounds=1, "
                         "presence_top_k=none (pnp_ovss); top_k=none, crop_size=none (pgseg)")
    ap.add_argument("--storage", choices=["sqlite3", "mcap"], help="output format (default: the input's)")
    ap.add_argument("--bag-version", type=int, choices=[8, 9], default=9,
                    help="rosbag2 metadata version (8 for older readers)")
    ap.add_argument("--overlay-alpha", type=float, default=0.5)
    ap.add_argument("--no-overlay", action="store_true", help="do not write segmentation/overlay")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="ovss-bag-segment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="input bag directory (sqlite3 or mcap)")
    ap.add_argument("output", help="output bag directory (must not exist)")
    add_segmentation_args(ap)
    ap.add_argument("--output-size", type=size_argument, metavar="WIDTHxHEIGHT",
                    help="labels, confidence and masks at this size (labels nearest-neighbour), like the node's "
                         "output_size; the overlay keeps the frame's size (default: the frame's size)")
    return ap.parse_args(argv)


def size_argument(text: str) -> tuple:
    """'640x480' -> (640, 480), checked like the node's output_size."""
    try:
        size = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        size = ()
    problem = size_problem(list(size)) if len(size) == 2 else f"{text!r}: expected WIDTHxHEIGHT, e.g. 640x480"
    if problem or size == (0, 0):
        raise argparse.ArgumentTypeError(problem or "0x0: give a size, or leave --output-size out")
    return size


def output_options(args) -> BagOutputOptions:
    return BagOutputOptions(model=args.model, with_overlay=not args.no_overlay, overlay_alpha=args.overlay_alpha,
                            output_size=args.output_size)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ovss_ros.engine.config import parse_overrides
    from ovss_ros.engine.loading import ModelLoadError
    from ovss_ros.engine.vocabulary import VocabularyError
    from ovss_ros.engine.segmenter import Segmenter

    try:
        seg = Segmenter.from_pretrained(args.model, method=args.method, preset=args.preset, device=args.device,
                                        dtype=args.dtype, **parse_overrides(args.overrides))
        seg.set_vocabulary(parse_vocabulary_text(args.vocabulary))
    except (ModelLoadError, VocabularyError, ValueError) as exc:
        print(f"ovss-bag-segment: {exc}", file=sys.stderr)
        return 2
    storage = args.storage or detect_storage(args.input)
    render = functools.partial(bag_messages, opts=output_options(args))
    t0 = time.perf_counter()
    # frames one at a time, each written as soon as it is segmented (the fleet runs the same loop on Ray)
    stats = run_bag(args.input, OutputBagSink(args.output, storage, args.bag_version, not args.no_overlay),
                    args.topics, submit=lambda frames: done(segment_frames(seg, frames, render)))
    dt = time.perf_counter() - t0
    print(f"ovss-bag-segment: {stats.frames} frames segmented ({stats.skipped} skipped) from {stats.cameras} "
          f"camera topic(s) in {dt:.1f} s -> {args.output} ({storage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
