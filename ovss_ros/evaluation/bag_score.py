"""Scoring a segmented toy-world rosbag against the ground truth it carries (`ovss-toy-bag-score`).

    ovss-toy-bag write out/toy_bag --frames 30
    ovss-bag-segment out/toy_bag out/toy_seg --vocabulary "$(ovss-toy-bag vocabulary)" \\
        --topics /camera/image_raw --model ovss_ros/data/toy_blip --preset tiny
    ovss-toy-bag-score out/toy_seg          # mIoU of segmentation/labels vs ground truth, frames by header stamp

Here rather than in `ovss_ros.toy_world.bag`: evaluation builds on the toy world, the toy world never
imports evaluation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from ..toy_world.bag import GT_TOPIC, LABELS_TOPIC, read_classes, read_images
from .runner import Accumulator


def score_bag(seg_bag, gt_bag: Optional[str] = None, labels_topic: str = LABELS_TOPIC) -> dict:
    """mIoU etc. of the labels in `seg_bag` against the ground truth (in `gt_bag`, default: the same bag,
    since ovss-bag-segment copies the input topics), frames matched by header stamp."""
    gt_bag = gt_bag or seg_bag
    names = read_classes(gt_bag)
    gts = read_images(gt_bag, GT_TOPIC)
    preds = read_images(seg_bag, labels_topic)
    acc = Accumulator(names, background_is_class=True)
    matched = 0
    for stamp, gt in sorted(gts.items()):
        if stamp in preds:
            acc.update(gt, preds[stamp])
            matched += 1
    res = acc.results()
    res.pop("presence", None)
    res.update(frames_with_ground_truth=len(gts), frames_scored=matched)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ovss-toy-bag-score",
                                 description="Score a segmented toy-world bag against its ground truth.")
    ap.add_argument("seg_bag")
    ap.add_argument("--gt-bag", default=None, help="bag holding the ground truth (default: seg_bag)")
    ap.add_argument("--labels-topic", default=LABELS_TOPIC)
    ap.add_argument("--json", type=Path, default=None, help="also write the full results here")
    a = ap.parse_args(argv)
    res = score_bag(a.seg_bag, a.gt_bag, a.labels_topic)
    m = res["standard"]
    print(f"ovss-toy-bag-score: {res['frames_scored']}/{res['frames_with_ground_truth']} frames scored, "
          f"mIoU {m['mIoU']:.4f}, pixel accuracy {m['pixel_accuracy']:.4f}")
    if a.json:
        from .report import write_json
        write_json(res, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
