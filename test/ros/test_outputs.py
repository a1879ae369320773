"""Result -> messages: label encodings (mono16 above 254 classes), masks agree with labels, class map ids
and colours, LabelInfo (the test-only vision_msgs that setup.sh builds stands in for ROS's)."""
import numpy as np
from std_msgs.msg import Header

from ovss_ros.engine.result import SegmentationResult
from ovss_ros.ros import outputs
from ovss_ros.engine.visualize import class_color
from rostest_helpers import assert_scores_agree_with_labels, stamp, to_array


def result(n_classes, labels):
    names = tuple(f"class {i}" for i in range(n_classes))
    ids = np.unique(labels[labels > 0]).astype(np.int64)
    present = np.zeros(n_classes, bool)
    present[ids - 1] = True
    scores = np.stack([np.where(labels == i, 0.9, 0.2 + 0.1 * k) for k, i in enumerate(ids)]).astype(np.float32)
    return SegmentationResult(labels=labels, class_names=names, class_ids=ids, present=present,
                              presence=np.linspace(0, 1, n_classes, dtype=np.float32), presence_kind="itm_probability",
                              class_maps=scores, confidence=np.full(labels.shape, 0.5, np.float32))


def header():
    return Header(stamp=stamp(7, 5), frame_id="cam")


def test_more_than_254_classes_gives_mono16_labels():
    labels = np.array([[0, 300], [255, 1]], np.uint16)
    msg = outputs.labels_image(labels, header())
    assert msg.encoding == "mono16" and msg.step == 4 and np.array_equal(to_array(msg), labels)
    assert outputs.labels_image(labels.astype(np.uint8) % 200, header()).encoding == "mono8"


def test_masks_and_class_map_agree_with_labels():
    labels = np.array([[0, 2, 2], [3, 3, 0]], np.uint8)
    res = result(4, labels)
    masks = outputs.masks_message(res, header(), version=3)
    assert list(masks.class_ids) == [2, 3] and list(masks.class_names) == ["class 1", "class 2"]
    assert np.allclose(masks.presence, [res.presence[1], res.presence[2]]) and masks.vocabulary_version == 3
    for k, (cid, m) in enumerate(zip(masks.class_ids, masks.masks)):   # each class's score, everywhere
        assert m.header.frame_id == "cam" and m.encoding == "mono8"
        assert np.array_equal(to_array(m), np.round(res.class_maps[k] * 255).astype(np.uint8))
    assert_scores_agree_with_labels(masks, labels)
    cmap = outputs.class_map_message(res.class_names, 3, header(), 0.4, "m")
    assert [c.class_id for c in cmap.classes] == [1, 2, 3, 4]
    assert all((c.r, c.g, c.b) == class_color(c.class_name) for c in cmap.classes)
    assert abs(cmap.presence_threshold - 0.4) < 1e-6 and cmap.model == "m"
    conf = outputs.confidence_image(res.confidence, header())
    assert conf.encoding == "mono8" and set(to_array(conf).ravel()) == {128}


def test_label_info_names_background_then_the_vocabulary():
    info = outputs.label_info_message(["a", "b"], header(), 0.5)
    assert type(info).__name__ == "LabelInfo" and outputs.LABEL_INFO_MISSING is None
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "background"), (1, "a"), (2, "b")]
    assert info.threshold == 0.5 and info.header.frame_id == "cam" and info.header.stamp.sec == 7
    # the ids a label image holds are the ones LabelInfo names, also past 255 (mono16 labels)
    many = [f"class {i}" for i in range(300)]
    ids = [c.class_id for c in outputs.label_info_message(many, header()).class_map]
    assert ids == list(range(301))
