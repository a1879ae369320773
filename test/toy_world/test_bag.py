"""Toy-world sequences as rosbag2, read back and scored by header stamp."""
import json

import numpy as np
import pytest

pytest.importorskip("rosbags")

from ovss_ros.bag_types import typestore
from ovss_ros.evaluation import bag_score
from ovss_ros.toy_world.bag import GT_TOPIC, IMAGE_TOPIC, main as toy_bag_main, read_classes, read_images, write_toy_bag
from ovss_ros.toy_world.sequence import make_sequence
from ovss_ros.toy_world.world import class_names


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_round_trip_and_perfect_score(tmp_path, storage):
    path = tmp_path / "bag"
    info = write_toy_bag(path, seed=2, n_frames=4, storage=storage)
    assert info["frames"] == 4
    rgb = read_images(path, IMAGE_TOPIC)
    gt = read_images(path, GT_TOPIC, typestore(own_messages=False))
    frames = make_sequence(2, 4)
    assert sorted(rgb) == sorted(gt) and len(gt) == 4
    for (stamp, img), f in zip(sorted(rgb.items()), frames):
        assert np.array_equal(img, f.rgb) and np.array_equal(gt[stamp], f.labels)
    assert read_classes(path) == list(class_names("pattern"))
    res = bag_score.score_bag(path, labels_topic=GT_TOPIC)         # ground truth scored against itself
    assert res["frames_scored"] == 4 and res["standard"]["mIoU"] == 1.0
    with pytest.raises(FileExistsError):
        write_toy_bag(path)


def test_score_cli_and_write_cli(tmp_path, capsys):
    path = tmp_path / "bag"
    assert toy_bag_main(["write", str(path), "--frames", "2", "--size", "48"]) == 0
    assert bag_score.main([str(path), "--labels-topic", GT_TOPIC, "--json", str(tmp_path / "s.json")]) == 0
    assert "2/2 frames scored, mIoU 1.0000" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["frames_scored"] == 2


def test_one_typestore_knows_the_package_messages_on_request():
    assert "ovss_ros/msg/ClassMap" in typestore().types
    plain = typestore(own_messages=False).types
    assert "sensor_msgs/msg/Image" in plain and "ovss_ros/msg/ClassMap" not in plain
