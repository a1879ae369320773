"""Dataset readers on tiny synthetic folders laid out like the real benchmarks."""
import json

import numpy as np
import pytest
from PIL import Image

from ovss_ros.evaluation import class_names as cn
from ovss_ros.evaluation.datasets import open_dataset, rle_string_to_counts, segmentation_mask


def _jpg(path, h=6, w=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _png(path, arr, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if palette:
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)])
    img.save(path)


def _label(values):
    a = np.zeros((6, 8), np.uint8)
    for k, v in enumerate(values):
        a[k] = v
    return a


def test_voc_reads_palette_indices_and_keeps_void(tmp_path):
    root = tmp_path / "VOCdevkit/VOC2012"
    _jpg(root / "JPEGImages/2007_000001.jpg")
    _jpg(root / "JPEGImages/2007_000002.jpg")
    _png(root / "SegmentationClass/2007_000001.png", _label([0, 15, 255]), palette=True)
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000001\n")
    ds = open_dataset("voc", str(root))
    assert len(ds) == 1 and ds.class_names[14] == "person" and ds.background_is_class
    s = next(iter(ds))
    assert s.rgb.shape == (6, 8, 3) and set(np.unique(s.gt)) == {0, 15, 255}


def test_context59_and_ade20k_keep_zero_as_other(tmp_path):
    ctx = tmp_path / "VOC2010"
    _jpg(ctx / "JPEGImages/a.jpg")
    _png(ctx / "SegmentationClassContext/a.png", _label([0, 59, 1]))
    ds = open_dataset("context59", str(ctx))          # no split file: every image
    assert len(ds) == 1 and len(ds.class_names) == 59 and not ds.background_is_class
    assert set(np.unique(next(iter(ds)).gt)) == {0, 1, 59}
    ade = tmp_path / "ADEChallengeData2016"
    _jpg(ade / "images/validation/ADE_val_00000001.jpg")
    _png(ade / "annotations/validation/ADE_val_00000001.png", _label([0, 150, 3]))
    ds = open_dataset("ade20k", str(ade))
    assert ds.class_names[2] == "sky" and set(np.unique(next(iter(ds)).gt)) == {0, 3, 150}


def test_coco_stuff_both_label_formats(tmp_path):
    root = tmp_path / "coco_stuff164k"
    _jpg(root / "images/val2017/000000000001.jpg")
    _jpg(root / "images/val2017/000000000002.jpg")
    _png(root / "annotations/val2017/000000000001_labelTrainIds.png", _label([255, 0, 170]))
    # raw stuffthingmaps: COCO id - 1; id 1 person, id 92 banner (train id 80), 255 unlabelled
    _png(root / "annotations/val2017/000000000002.png", _label([255, 0, 91]))
    ds = open_dataset("coco-stuff", str(root))
    a, b = list(ds)
    assert set(np.unique(a.gt)) == {0, 1, 171}
    assert set(np.unique(b.gt)) == {0, 1, 81} and ds.class_names[80] == "banner"


def _encode_rle(mask):
    """pycocotools' compressed RLE, written out here to check the decoder independently."""
    flat = mask.T.reshape(-1)
    counts, val, run = [], 0, 0
    for v in flat:
        if v != val:
            counts.append(run)
            run, val = 0, v
        run += 1
    counts.append(run)
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_compressed_rle_round_trip():
    rng = np.random.default_rng(0)
    mask = np.zeros((23, 31), bool)
    mask[3:15, 4:20] = True
    mask[rng.random(mask.shape) < 0.1] ^= True
    s = _encode_rle(mask.astype(np.uint8))
    assert np.array_equal(segmentation_mask({"counts": s, "size": [23, 31]}, 23, 31), mask)
    counts = rle_string_to_counts(s)
    assert np.array_equal(segmentation_mask({"counts": counts, "size": [23, 31]}, 23, 31), mask)


def test_coco_object_paints_instances_first_annotation_wins(tmp_path):
    root = tmp_path / "coco"
    _jpg(root / "val2017/000000000009.jpg", 10, 10)
    crowd = np.zeros((10, 10), np.uint8)
    crowd[:, 8:] = 1
    data = {"images": [{"id": 9, "file_name": "000000000009.jpg", "height": 10, "width": 10}],
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
            "annotations": [
                {"image_id": 9, "category_id": 18, "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]},
                {"image_id": 9, "category_id": 1, "iscrowd": 0, "segmentation": [[4, 4, 9, 4, 9, 9, 4, 9]]},
                {"image_id": 9, "category_id": 1, "iscrowd": 1,
                 "segmentation": {"counts": _encode_rle(crowd), "size": [10, 10]}}]}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/instances_val2017.json").write_text(json.dumps(data))
    ds = open_dataset("coco-object", str(root))
    assert ds.class_names == ("person", "dog") and ds.background_is_class
    gt = next(iter(ds)).gt
    assert gt[2, 2] == 2 and gt[5, 5] == 2          # the dog (first annotation) wins the overlap
    assert gt[8, 5] == 1 and gt[0, 9] == 1 and gt[0, 0] == 0


def test_missing_folders_and_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_dataset("ade20k", str(tmp_path / "nope"))
    with pytest.raises(ValueError):
        open_dataset("cityscapes", str(tmp_path))
    with pytest.raises(ValueError):
        open_dataset("voc", None)
    assert len(cn.COCO_STUFF_IDS) == 171


# -- a user's own folder ---------------------------------------------------------------------------------
def _own_folder(root, classes="dog\ncat\n\n"):
    _jpg(root / "images/a.jpg")
    img = np.zeros((6, 8, 3), np.uint8)
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / "images/b.PNG")
    (root / "images/notes.txt").write_text("not an image")
    _png(root / "labels/a.png", _label([0, 1, 2, 255]))
    _png(root / "labels/b.png", _label([2, 2]))
    (root / "classes.txt").write_text(classes)
    return root


def test_folder_reads_images_labels_and_class_list(tmp_path):
    ds = open_dataset("folder", str(_own_folder(tmp_path / "mine")))
    assert ds.class_names == ("dog", "cat") and ds.background_is_class and len(ds) == 2
    a, b = list(ds)
    assert (a.name, b.name) == ("a", "b") and a.rgb.shape == (6, 8, 3)
    assert set(np.unique(a.gt)) == {0, 1, 2, 255} and set(np.unique(b.gt)) == {0, 2}


def test_folder_paths_can_be_given_one_by_one(tmp_path):
    root = _own_folder(tmp_path / "mine")
    (tmp_path / "names.txt").write_text("person\ncar\n")
    ds = open_dataset("folder", None, images=str(root / "images"), labels=str(root / "labels"),
                      classes=str(tmp_path / "names.txt"))
    assert ds.class_names == ("person", "car") and len(ds) == 2
    with pytest.raises(ValueError, match="--root"):
        open_dataset("folder", None, images=str(root / "images"))


@pytest.mark.parametrize("classes,match", [("dog\n\ncat\n", "line 2 is empty"), ("\n", "no class names"),
                                           ("".join(f"c{i}\n" for i in range(255)), "ids stop at 254")])
def test_folder_class_list_problems(tmp_path, classes, match):
    with pytest.raises(ValueError, match=match):
        open_dataset("folder", str(_own_folder(tmp_path / "mine", classes)))


def test_folder_missing_label_and_unknown_ids(tmp_path):
    root = _own_folder(tmp_path / "mine")
    (root / "labels/b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"without a label PNG.*b\.PNG \(expected b\.png\)"):
        open_dataset("folder", str(root))
    _png(root / "labels/b.png", _label([7]))
    with pytest.raises(ValueError, match=r"label id\(s\) \[7\] are not in the class list"):
        list(open_dataset("folder", str(root)))
    (root / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="class list not found"):
        open_dataset("folder", str(root))
