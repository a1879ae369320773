"""ovss-eval: score the engine on the toy world or a standard benchmark.

    ovss-eval --dataset toy --n 200                                  # embedded toy model, "tiny" preset
    ovss-eval --dataset toy --method pgseg                           # the embedded toy PGSeg model
    ovss-eval --dataset voc --root VOCdevkit/VOC2012 --model out/pgseg_converted --method pgseg
    ovss-eval --dataset voc --root VOCdevkit/VOC2012 --model Salesforce/blip-itm-large-flickr --preset paper
    ovss-eval --dataset ade20k --root ADEChallengeData2016 --presence gt --set dropout_rounds=2 --out out/ade
    ovss-eval --dataset folder --root my_data --model M    # my_data/images/*.jpg, labels/*.png, classes.txt

Writes <out>/<stem>.json and one per-class IoU bar chart PNG per protocol.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..engine.config import parse_overrides
from ..engine.methods import METHODS
from .datasets import PROTOCOLS, READERS, open_dataset
from .report import save, summary_line
from .runner import baselines, evaluate


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ovss-eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="toy", choices=sorted(READERS))
    ap.add_argument("--root", default=None, help="dataset folder in its standard layout (not for toy); for "
                    "folder: images/*.{jpg,png}, labels/<stem>.png (pixel = class id, 0 = background, "
                    "255 = ignored) and classes.txt (one name per line, line k = id k)")
    ap.add_argument("--images", default=None, help="folder: image folder (default: ROOT/images)")
    ap.add_argument("--labels", default=None, help="folder: label PNG folder (default: ROOT/labels)")
    ap.add_argument("--classes-file", default=None, help="folder: class list (default: ROOT/classes.txt)")
    ap.add_argument("--split", default=None, help="dataset split (default: the validation split)")
    ap.add_argument("--world", default="pattern", choices=["pattern", "shape"], help="toy world kind")
    ap.add_argument("--toy-version", type=int, default=1, choices=[1, 2],
                    help="toy world: 1 = world.py (the shipped models' world), 2 = world_v2.py (160x120, camera "
                    "effects, clutter, distractors)")
    ap.add_argument("--n", type=int, default=200, help="toy world: number of held-out scenes")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N images")
    ap.add_argument("--method", default=None, choices=METHODS,
                    help="segmentation method (default: what --model is; pnp_ovss when no model is given)")
    ap.add_argument("--model", default=None, help="checkpoint (default: the method's embedded toy model for "
                    "--dataset toy, Salesforce/blip-itm-large-flickr otherwise)")
    ap.add_argument("--preset", default=None, help="engine preset (default: tiny for toy, the method's published "
                    "protocol otherwise: paper / pgseg, with PGSeg's per-dataset background threshold)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="engine parameter override (repeatable)")
    ap.add_argument("--presence", default="itm", choices=["itm", "gt"],
                    help="itm: end to end; gt: ground-truth classes forced (localization alone)")
    ap.add_argument("--protocol", default="both", choices=[*PROTOCOLS, "both"])
    ap.add_argument("--baselines", action="store_true", help="also score all-background and uniform-random")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("out/eval"))
    ap.add_argument("--stem", default=None, help="output file stem (default: <dataset>_<presence>)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    import torch

    from ..engine.loading import ModelLoadError
    from ..engine.segmenter import Segmenter
    from ..pgseg.config import BACKGROUND_THRESHOLDS
    from ..toy_world import MODEL_DIRS

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.dataset == "toy":
        kwargs = {"n": a.n, "world": a.world, "version": a.toy_version}
    elif a.dataset == "folder":
        kwargs = {"images": a.images, "labels": a.labels, "classes": a.classes_file}
    else:
        kwargs = {"split": a.split} if a.split else {}
    if a.model is None and a.dataset != "toy" and a.method == "pgseg":
        print("ovss-eval: error: --method pgseg needs --model (a GroupViT checkpoint, or a PGSeg one converted "
              "with ovss-convert-pgseg)", file=sys.stderr)
        return 2
    model = a.model or (str(MODEL_DIRS[a.method or "pnp_ovss"]) if a.dataset == "toy"
                        else "Salesforce/blip-itm-large-flickr")
    preset = a.preset or ("tiny" if a.dataset == "toy" else None)
    try:   # bad data, parameters, model or vocabulary: one line, exit 2
        dataset = open_dataset(a.dataset, a.root, **kwargs).limit(a.limit)
        overrides = parse_overrides(a.set)
        seg = Segmenter.from_pretrained(model, method=a.method, preset=preset, device=a.device, **overrides)
        if (seg.method == "pgseg" and a.preset is None and a.dataset in BACKGROUND_THRESHOLDS
                and "background_threshold" not in overrides):       # the authors' threshold for this dataset
            seg.update_config(background_threshold=BACKGROUND_THRESHOLDS[a.dataset])
        seg.set_vocabulary(dataset.class_names)
    except (OSError, ValueError, TypeError, ModelLoadError) as exc:
        print(f"ovss-eval: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    protocols = PROTOCOLS if a.protocol == "both" else (a.protocol,)
    res = evaluate(seg, dataset, presence=a.presence, progress=not a.no_progress, protocols=protocols)
    res["setup"] = {"dataset": a.dataset, "root": a.root, "model": model, "method": seg.method,
                    "preset": preset or ("pgseg" if seg.method == "pgseg" else "paper"),
                    "presence": a.presence, "config": seg.config.to_dict(),
                    **({"world": a.world, "toy_version": a.toy_version, "heldout_scenes": a.n}
                       if a.dataset == "toy" else {})}
    if a.baselines:
        res["baselines"] = baselines(dataset, protocols=protocols)
    stem = a.stem or f"{a.dataset}_{a.presence}"
    paths = save(res, a.out, stem)
    for p in protocols:
        print(summary_line(res, p))
    if a.baselines:
        for name, b in res["baselines"].items():
            print(f"baseline {name}: " + "  ".join(f"{p} mIoU {b[p]['mIoU']:.4f}" for p in protocols))
    print(json.dumps(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
