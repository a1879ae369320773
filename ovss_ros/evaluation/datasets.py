"""Readers for the toy world, the standard layouts of five benchmarks and a user's own folder, plus the two
scoring protocols.

Every reader yields `Sample`s whose ground truth is in the segmenter's label space: 0 = background /
unlabelled / "other", k = class_names[k - 1], 255 = void (VOC boundaries). `to_protocol` then maps ground
truth and prediction to the scored classes:

- "standard" (mmseg practice): void ignored; on datasets without a background class (Pascal Context 59,
  ADE20K, COCO-Stuff) pixel 0 is ignored too and a predicted background is a miss.
- "reference" (the PnP-OVSS code's Calculate_mIoU.py): background is always class 0 and scored; void and
  "unlabelled" pixels count as background.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from . import class_names as cn

VOID = 255
PROTOCOLS = ("standard", "reference")


@dataclass
class Sample:
    name: str
    rgb: np.ndarray      # H x W x 3 uint8
    gt: np.ndarray       # H x W uint8/uint16, segmenter label space (see module doc)


class Dataset:
    name = "dataset"
    class_names: tuple = ()
    background_is_class = False     # in the standard protocol

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample]:
        for item in self.items:
            yield self.load(item)

    def limit(self, n: Optional[int]) -> "Dataset":
        if n is not None:
            self.items = self.items[:n]
        return self


def to_protocol(gt: np.ndarray, pred: np.ndarray, n_fg: int, protocol: str, background_is_class: bool):
    """(gt, pred, n_classes, background scored?) in the protocol's class indices; VOID = ignored."""
    gt = gt.astype(np.int64)
    pred = pred.astype(np.int64)
    if protocol == "reference":
        return np.where((gt == VOID) | (gt > n_fg), 0, gt), pred, n_fg + 1, True
    if protocol != "standard":
        raise ValueError(f"protocol must be one of {PROTOCOLS}")
    if background_is_class:
        return gt, pred, n_fg + 1, True
    gt = np.where((gt == 0) | (gt == VOID) | (gt > n_fg), VOID, gt - 1)
    return gt, pred - 1, n_fg, False     # predicted background becomes -1: a miss, nobody's false positive


def scored_names(class_names, background_scored: bool) -> list[str]:
    return (["background"] if background_scored else []) + list(class_names)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _index_png(path: Path) -> np.ndarray:
    """Label PNG as stored indices (palette PNGs are read as indices, not colours)."""
    img = Image.open(path)
    if img.mode not in ("P", "L", "I", "I;16"):
        raise ValueError(f"{path}: expected a single-channel or palette label PNG, got mode {img.mode}")
    return np.asarray(img)


def _split_ids(split_file: Path, image_dir: Path) -> list[str]:
    if split_file.is_file():
        return [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
    return sorted(p.stem for p in image_dir.glob("*.jpg"))


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


class ToyWorld(Dataset):
    """Held-out toy-world scenes (seeds never used in training). version 1: `toy_world/world.py` (96 x 96,
    the shipped models' world), version 2: `toy_world/world_v2.py` (160 x 120, camera effects, clutter)."""
    name = "toy"
    background_is_class = True

    def __init__(self, n: int = 200, world: str = "pattern", start: int = 0, version: int = 1):
        from ..toy_world.scene_source import VERSIONS
        from ..toy_world.world import class_names, scene_seed
        if version not in VERSIONS:
            raise ValueError(f"toy world version must be one of {VERSIONS}, got {version!r}")
        self.world = world
        self.version = version
        self.class_names = class_names(world)
        self.items = [scene_seed("heldout", i) for i in range(start, start + n)]

    def load(self, seed: int) -> Sample:
        from ..toy_world.scene_source import make_scene
        s = make_scene(seed, self.world, self.version)
        return Sample(f"toy{'' if self.version == 1 else self.version}_{seed}", s.rgb, s.labels)


class _VOCLayout(Dataset):
    """The VOCdevkit layout shared by Pascal VOC and Pascal Context: JPEGImages/, one label-PNG folder and a
    split-list folder under ImageSets/."""
    labels_dir = split_dir = what = ""

    def __init__(self, root, split: str = "val"):
        self.root = _need(Path(root), f"{self.what} root")
        self.items = _split_ids(self.root / "ImageSets" / self.split_dir / f"{split}.txt", self.root / "JPEGImages")

    def load(self, item: str) -> Sample:
        gt = _index_png(self.root / self.labels_dir / f"{item}.png")
        return Sample(item, _rgb(self.root / "JPEGImages" / f"{item}.jpg"), gt.astype(np.uint8))


class PascalVOC(_VOCLayout):
    """root = VOCdevkit/VOC2012: JPEGImages/, SegmentationClass/ (palette PNG, 255 = void), ImageSets/Segmentation/."""
    name = "voc"
    class_names = cn.VOC
    background_is_class = True
    labels_dir, split_dir, what = "SegmentationClass", "Segmentation", "Pascal VOC"


class PascalContext59(_VOCLayout):
    """root = VOCdevkit/VOC2010 (mmseg layout): JPEGImages/, SegmentationClassContext/ (0 = background,
    1..59), ImageSets/SegmentationContext/."""
    name = "context59"
    class_names = cn.CONTEXT59
    labels_dir, split_dir, what = "SegmentationClassContext", "SegmentationContext", "Pascal Context"


class _ImagesAnnotationsLayout(Dataset):
    """The mmseg layout shared by ADE20K and COCO-Stuff: images/<split>/*.jpg beside annotations/<split>/."""
    what = default_split = ""

    def __init__(self, root, split: Optional[str] = None):
        self.root = _need(Path(root), f"{self.what} root")
        self.split = split or self.default_split
        self.items = sorted(p.stem for p in _need(self.root / "images" / self.split, f"{self.what} images").glob("*.jpg"))

    def _image(self, item: str) -> np.ndarray:
        return _rgb(self.root / "images" / self.split / f"{item}.jpg")


class ADE20K(_ImagesAnnotationsLayout):
    """root = ADEChallengeData2016: images/validation/*.jpg, annotations/validation/*.png (0 = other, 1..150)."""
    name = "ade20k"
    class_names = cn.ADE20K
    what, default_split = "ADE20K", "validation"

    def load(self, item: str) -> Sample:
        gt = _index_png(self.root / "annotations" / self.split / f"{item}.png")
        return Sample(item, self._image(item), gt.astype(np.uint8))


class COCOStuff(_ImagesAnnotationsLayout):
    """root = coco_stuff164k: images/val2017/*.jpg and annotations/val2017/ holding either mmseg's
    *_labelTrainIds.png (0..170, 255 = unlabelled) or raw stuffthingmaps *.png (COCO id - 1, 255 = unlabelled)."""
    name = "coco-stuff"
    class_names = cn.COCO_STUFF
    what, default_split = "COCO-Stuff", "val2017"

    def __init__(self, root, split: Optional[str] = None):
        super().__init__(root, split)
        raw = np.full(256, 0, np.uint8)          # raw value (COCO id - 1) -> segmenter label
        for k, cid in enumerate(cn.COCO_STUFF_IDS):
            raw[cid - 1] = k + 1
        self._raw_lut = raw

    def load(self, item: str) -> Sample:
        ann = self.root / "annotations" / self.split
        train_ids = ann / f"{item}_labelTrainIds.png"
        if train_ids.is_file():
            t = _index_png(train_ids).astype(np.int64)
            gt = np.where(t < len(cn.COCO_STUFF), t + 1, 0).astype(np.uint8)
        else:
            gt = self._raw_lut[_index_png(_need(ann / f"{item}.png", "COCO-Stuff label")).astype(np.uint8)]
        return Sample(item, self._image(item), gt)


class COCOObject(Dataset):
    """root = coco: val2017/*.jpg, annotations/instances_val2017.json. Masks are painted from the instance
    annotations (polygons or RLE, crowds included), the first annotation winning on overlap (as the
    reference does); 0 = no object."""
    name = "coco-object"
    background_is_class = True

    def __init__(self, root, split: str = "val2017"):
        self.root = _need(Path(root), "COCO root")
        self.split = split
        data = json.loads(_need(self.root / "annotations" / f"instances_{split}.json", "COCO instances").read_text())
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = tuple(c["name"] for c in cats)
        self._label = {c["id"]: k + 1 for k, c in enumerate(cats)}
        self._anns: dict[int, list] = {}
        for a in data["annotations"]:
            self._anns.setdefault(a["image_id"], []).append(a)
        self.items = sorted(data["images"], key=lambda im: im["id"])

    def load(self, item: dict) -> Sample:
        h, w = item["height"], item["width"]
        gt = np.zeros((h, w), np.uint8)
        for a in reversed(self._anns.get(item["id"], [])):    # paint last first: the first annotation wins
            m = segmentation_mask(a["segmentation"], h, w)
            gt[m] = self._label[a["category_id"]]
        return Sample(Path(item["file_name"]).stem, _rgb(self.root / self.split / item["file_name"]), gt)


def segmentation_mask(seg, h: int, w: int) -> np.ndarray:
    """COCO segmentation (polygon list, uncompressed or compressed RLE) -> bool mask."""
    import cv2

    if isinstance(seg, list):
        m = np.zeros((h, w), np.uint8)
        polys = [np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32) for p in seg if len(p) >= 6]
        if polys:
            cv2.fillPoly(m, polys, 1)
        return m.astype(bool)
    counts = seg["counts"]
    if isinstance(counts, str):
        counts = rle_string_to_counts(counts)
    flat = np.zeros(h * w, bool)
    pos, val = 0, False
    for c in counts:
        flat[pos:pos + c] = val
        pos += c
        val = not val
    return flat.reshape(w, h).T       # RLE runs are column-major


def rle_string_to_counts(s: str) -> list[int]:
    """Decode pycocotools' compressed RLE string (6-bit chunks, deltas from the count two back)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class Folder(Dataset):
    """A user's own data: root/images/*.{jpg,jpeg,png}, root/labels/<image stem>.png (pixel = class id,
    0 = background, 255 = ignored) and root/classes.txt (one class name per line, line k = id k). Each of the
    three can be given elsewhere (`images`, `labels`, `classes`)."""
    name = "folder"
    background_is_class = True

    def __init__(self, root=None, images=None, labels=None, classes=None):
        if root is None and None in (images, labels, classes):
            raise ValueError("dataset 'folder' needs --root, or all of --images, --labels and --classes-file")
        base = Path(root) if root is not None else None
        self.image_dir = _need(Path(images) if images else base / "images", "image folder")
        self.label_dir = _need(Path(labels) if labels else base / "labels", "label folder")
        self.class_names = read_class_list(_need(Path(classes) if classes else base / "classes.txt", "class list"))
        paths = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"no .jpg/.jpeg/.png images in {self.image_dir}")
        missing = [p.name for p in paths if not (self.label_dir / f"{p.stem}.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) without a label PNG in {self.label_dir}, e.g. "
                                    f"{missing[0]} (expected {Path(missing[0]).stem}.png)")
        self.items = paths

    def load(self, path: Path) -> Sample:
        rgb, gt = _rgb(path), _index_png(self.label_dir / f"{path.stem}.png")
        if gt.shape != rgb.shape[:2]:
            raise ValueError(f"{path.name}: label is {gt.shape[1]}x{gt.shape[0]}, image {rgb.shape[1]}x{rgb.shape[0]}")
        unknown = sorted(set(np.unique(gt).tolist()) - set(range(len(self.class_names) + 1)) - {VOID})
        if unknown:
            raise ValueError(f"{path.stem}.png: label id(s) {unknown[:5]} are not in the class list "
                             f"(ids 1..{len(self.class_names)}, 0 = background, {VOID} = ignored)")
        return Sample(path.stem, rgb, gt.astype(np.uint8))


def read_class_list(path: Path) -> tuple:
    """One class name per line; line k is label id k. Trailing blank lines are fine, inner ones are not
    (they would shift every id after them)."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError(f"{path}: no class names")
    if "" in lines:
        raise ValueError(f"{path}: line {lines.index('') + 1} is empty (line k names class id k)")
    if len(lines) >= VOID:
        raise ValueError(f"{path}: {len(lines)} classes, but ids stop at {VOID - 1} ({VOID} = ignored)")
    return tuple(lines)


READERS = {"folder": Folder, "toy": ToyWorld, "voc": PascalVOC, "context59": PascalContext59, "coco-object": COCOObject,
           "coco-stuff": COCOStuff, "ade20k": ADE20K}


def open_dataset(name: str, root: Optional[str] = None, **kwargs) -> Dataset:
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(READERS)}")
    if name == "toy":
        return ToyWorld(**kwargs)
    if name == "folder":
        return Folder(root, **kwargs)
    if root is None:
        raise ValueError(f"dataset {name!r} needs --root (its folder in the standard layout)")
    return READERS[name](root, **kwargs)
