"""ovss-eval end to end on the toy world and on a synthetic VOC folder: JSON + bar charts."""
import json

import numpy as np
from PIL import Image

from ovss_ros.engine.config import parse_overrides
from ovss_ros.evaluation.cli import main


def test_toy_eval_writes_json_and_charts(tmp_path, random_toy_dir, capsys):
    rc = main(["--dataset", "toy", "--n", "3", "--model", str(random_toy_dir), "--out", str(tmp_path),
               "--baselines", "--no-progress", "--set", "postprocess=none", "--presence", "gt"])
    assert rc == 0
    res = json.loads((tmp_path / "toy_gt.json").read_text())
    assert res["images"] == 3 and res["setup"]["config"]["postprocess"] == "none"
    for p in ("standard", "reference"):
        assert 0.0 <= res[p]["mIoU"] <= 1.0 and len(res[p]["per_class_iou"]) == 13
        img = Image.open(tmp_path / f"toy_gt_{p}_iou.png")
        assert img.size[0] > 100 and img.size[1] > 13 * 10
    assert res["presence"]["recall"] == 1.0            # ground-truth presence finds every class
    assert res["baselines"]["all_background"]["standard"]["mIoU"] < 0.1
    assert "mIoU" in capsys.readouterr().out


def test_voc_layout_through_the_cli(tmp_path, random_toy_dir):
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(root / "JPEGImages/x.jpg")
    gt = np.zeros((20, 24), np.uint8)
    gt[5:15, 5:15] = 12
    gt[0, :] = 255
    Image.fromarray(gt).save(root / "SegmentationClass/x.png")
    out = tmp_path / "out"
    assert main(["--dataset", "voc", "--root", str(root), "--model", str(random_toy_dir), "--preset", "tiny",
                 "--out", str(out), "--no-progress", "--protocol", "standard"]) == 0
    res = json.loads((out / "voc_itm.json").read_text())
    assert list(res) [:1] == ["standard"] and "reference" not in res
    assert len(res["standard"]["per_class_iou"]) == 21


def test_own_folder_through_the_cli(tmp_path, random_toy_dir, capsys):
    from ovss_ros.toy_world.world import class_names, make_scene, scene_seed

    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    names = class_names("pattern")
    for i in range(2):                          # toy scenes as a user's own data: jpg/png + label PNGs
        scene = make_scene(scene_seed("heldout", i), "pattern")
        Image.fromarray(scene.rgb).save(root / "images" / (f"s{i}.jpg" if i else f"s{i}.png"))
        Image.fromarray(scene.labels.astype(np.uint8)).save(root / "labels" / f"s{i}.png")
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "out"
    assert main(["--dataset", "folder", "--root", str(root), "--model", str(random_toy_dir), "--preset", "tiny",
                 "--out", str(out), "--no-progress", "--presence", "gt", "--set", "postprocess=none"]) == 0
    res = json.loads((out / "folder_gt.json").read_text())
    assert res["images"] == 2 and list(res["standard"]["per_class_iou"]) == ["background", *names]
    assert res["presence"]["recall"] == 1.0
    (root / "classes.txt").write_text("zebra\n")          # a class the model cannot read: one line, status 2
    assert main(["--dataset", "folder", "--root", str(root), "--model", str(random_toy_dir), "--preset", "tiny",
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ovss-eval: error: ") and "zebra" in err and err.count("\n") == 1


def test_bad_parameter_is_one_line(tmp_path, random_toy_dir, capsys):
    assert main(["--dataset", "toy", "--n", "1", "--model", str(random_toy_dir), "--set", "threshold=abc",
                 "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ovss-eval: error: threshold='abc'") and err.count("\n") == 1


def test_missing_dataset_is_a_clean_error(tmp_path, capsys):
    assert main(["--dataset", "ade20k", "--root", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_override_parsing():
    assert parse_overrides(["dropout_rounds=3", "drop_fraction=0.05", "presence_top_k=none",
                            "postprocess=none", "double_count_first_pass=false"]) == {
        "dropout_rounds": 3, "drop_fraction": 0.05, "presence_top_k": None, "postprocess": "none",
        "double_count_first_pass": False}
