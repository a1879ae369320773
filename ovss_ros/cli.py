"""ovss-segment: segment image files for a vocabulary; writes an overlay PNG with a legend, the label PNG
and a JSON summary per image."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .engine.config import parse_overrides
from .engine.loading import DEFAULT_MODEL, MODEL_DTYPES
from .engine.methods import METHODS, REGISTRY, config_class


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovss-segment", description=__doc__)
    p.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    voc = p.add_mutually_exclusive_group(required=True)
    voc.add_argument("--classes", help='comma-separated class names, e.g. "person,chair,floor"')
    voc.add_argument("--vocabulary-file", type=Path, help="one class name per line")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face id or local directory (default: %(default)s)")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="segmentation method (default: what the checkpoint is: BLIP -> pnp_ovss, GroupViT -> pgseg)")
    presets = "; ".join(f"{', '.join(config_class(m).preset_names())} for {m}" for m in METHODS)
    published = " / ".join(REGISTRY[m].default_preset for m in METHODS)
    p.add_argument("--preset", default=None, help=f"engine preset: {presets} (default: the method's published "
                   f"protocol, {published})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=MODEL_DTYPES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="engine parameter override, repeatable (e.g. --set dropout_rounds=2)")
    p.add_argument("--present", help="comma-separated classes to segment, bypassing class presence")
    p.add_argument("--out", type=Path, default=Path("ovss_out"), help="output folder (default: %(default)s)")
    return p


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def write_outputs(res, rgb: np.ndarray, stem: str, out: Path, meta: dict) -> dict:
    from PIL import Image

    from .engine.visualize import overlay

    out.mkdir(parents=True, exist_ok=True)
    files = {"overlay": out / f"{stem}_overlay.png", "labels": out / f"{stem}_labels.png",
             "summary": out / f"{stem}.json"}
    Image.fromarray(overlay(rgb, res.labels, res.class_names)).save(files["overlay"])
    Image.fromarray(res.labels).save(files["labels"])   # 8- or 16-bit gray, value = class id
    summary = {**meta, **res.summary(), "files": {k: str(v) for k, v in files.items()}}
    files["summary"].write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .engine.image_io import ImageError
    from .engine.loading import ModelLoadError
    from .engine.vocabulary import VocabularyError
    from .engine.segmenter import Segmenter

    present = [c.strip() for c in args.present.split(",")] if args.present else None
    try:   # every bad input (parameter, preset, model, vocabulary) is one line, not a traceback
        if args.classes is not None:
            classes = args.classes.split(",")
        else:
            classes = [ln for ln in args.vocabulary_file.read_text().splitlines() if ln.strip()]
        overrides = parse_overrides(args.overrides)
        seg = Segmenter.from_pretrained(args.model, method=args.method, preset=args.preset, device=args.device,
                                        dtype=args.dtype, **overrides)
        seg.set_vocabulary(classes)
    except (ModelLoadError, VocabularyError, ValueError, TypeError, OSError) as exc:
        print(f"ovss-segment: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    meta = {"model": args.model, "method": seg.method, "preset": args.preset, "device": str(seg.device),
            "config": seg.config.to_dict()}
    failures = 0
    for path in args.images:
        try:
            rgb = read_rgb(path)
            res = seg.segment(rgb, present=present)
        except (ValueError, ImageError, VocabularyError) as exc:
            print(f"ovss-segment: skipping {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        s = write_outputs(res, rgb, path.stem, args.out, {**meta, "image": str(path)})
        found = ", ".join(f"{c['name']} {c['pixel_fraction']:.0%}" for c in s["classes"] if c["pixel_fraction"] > 0)
        print(f"{path}: {res.labels.shape[1]}x{res.labels.shape[0]} in {res.timings['total'] * 1000:.0f} ms; "
              f"{found or 'background only'} -> {s['files']['overlay']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
