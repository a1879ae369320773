"""Toy-world sequences as rosbag2, read back and scored by header stamp."""
import numpy as np
import pytest

pytest.importorskip("rosbags")

from ovss_ros.toy_world.bag import GT_TOPIC, IMAGE_TOPIC, read_images, typestore, read_classes, score_bag, write_toy_bag
from ovss_ros.toy_world.sequence import make_sequence
from ovss_ros.toy_world.world import class_names


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_round_trip_and_perfect_score(tmp_path, storage):
    path = tmp_path / "bag"
    info = write_toy_bag(path, seed=2, n_frames=4, storage=storage)
    assert info["frames"] == 4
    store = typestore()
    rgb = read_images(path, IMAGE_TOPIC, store)
    gt = read_images(path, GT_TOPIC, store)
    frames = make_sequence(2, 4)
    assert sorted(rgb) == sorted(gt) and len(gt) == 4
    for (stamp, img), f in zip(sorted(rgb.items()), frames):
        assert np.array_equal(img, f.rgb) and np.array_equal(gt[stamp], f.labels)
    assert read_classes(path) == list(class_names("pattern"))
    res = score_bag(path, labels_topic=GT_TOPIC)         # ground truth scored against itself
    assert res["frames_scored"] == 4 and res["standard"]["mIoU"] == 1.0
    with pytest.raises(FileExistsError):
        write_toy_bag(path)
