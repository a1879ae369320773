"""Outputs at another resolution (ovss_ros/ros/output_size.py): nearest-neighbour labels never gain ids, scores
keep their range, sizes, dtypes and steps are right, parameters are validated, a CameraInfo's size follows
REP 104, and the worker's pipeline publishes labels, confidence and masks at the output size with the frame's
header while the overlay keeps the camera's size."""
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.clock import Clock
from sensor_msgs.msg import CameraInfo, Image

from ovss_ros.engine.result import SegmentationResult
from ovss_ros.ros import output_size as osz
from ovss_ros.ros import outputs, params
from ovss_ros.ros.frame_pipeline import FramePipeline
from ovss_ros.ros.parts import CameraOutputs, Counters, PublishGate, Publishers, Runtime, Settings
from ovss_ros.ros.worker import Frame
from rostest_helpers import image_msg, scene, to_array

SIZES = [(32, 24), (48, 36), (17, 11), (100, 7), (5, 60), (64, 48)]


def random_labels(h=48, w=64, ids=(0, 3, 7, 200), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(ids, dtype)[rng.integers(0, len(ids), (h, w))]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype,ids", [(np.uint8, (0, 3, 7, 200)), (np.uint16, (0, 1, 300, 65535))])
def test_nearest_labels_keep_ids_dtype_and_size(size, dtype, ids):
    labels = random_labels(ids=ids, dtype=dtype, seed=size[0])
    out = osz.resize_labels(labels, size)
    assert out.shape == (size[1], size[0]) and out.dtype == dtype
    assert set(np.unique(out)) <= set(np.unique(labels))   # no blended ids between neighbours
    msg = outputs.labels_image(out, None)
    assert (msg.width, msg.height) == size and msg.encoding == ("mono16" if dtype == np.uint16 else "mono8")
    assert msg.step == size[0] * np.dtype(dtype).itemsize and len(msg.data) == msg.step * size[1]


def test_nearest_samples_pixel_centres_like_the_scores():
    """Class 1 in columns 0-3, class 2 in 4-8, shrunk to a third: output pixel 1 covers columns 3-5, its centre
    is column 4 (class 2), and class 2 also has the higher area-averaged score there (2/3). Sampling the first
    column of each cell instead (OpenCV's plain INTER_NEAREST) would shift the labels against the scores."""
    labels = np.ones((4, 9), np.uint8)
    labels[:, 4:] = 2
    out = osz.resize_labels(labels, (3, 4))
    assert out[0].tolist() == [1, 2, 2]
    score2 = osz.resize_scores((labels == 2).astype(np.float32), (3, 4))
    assert np.allclose(score2[0], [0, 2 / 3, 1])
    # and on the way up, a half/half split stays at the middle
    labels = np.ones((8, 16), np.uint8)
    labels[:, 8:] = 2
    up = osz.resize_labels(labels, (40, 20))
    assert (up[:, :20] == 1).all() and (up[:, 20:] == 2).all()


def test_integer_scale_up_repeats_each_label():
    labels = random_labels(6, 5)
    assert np.array_equal(osz.resize_labels(labels, (15, 18)), np.repeat(np.repeat(labels, 3, 0), 3, 1))


def test_scores_keep_range_dtype_and_shape():
    rng = np.random.default_rng(1)
    conf = rng.random((48, 64), dtype=np.float32)
    maps = rng.random((5, 48, 64), dtype=np.float32)
    for size in SIZES:
        c, m = osz.resize_scores(conf, size), osz.resize_scores(maps, size)
        assert c.shape == (size[1], size[0]) and m.shape == (5, size[1], size[0])
        assert c.dtype == m.dtype == np.float32
        assert 0 <= c.min() and c.max() <= 1 and 0 <= m.min() and m.max() <= 1
        for k in range(5):   # every map with the same interpolation as the confidence
            assert np.allclose(m[k], osz.resize_scores(maps[k], size))
    # shrinking averages (area): a constant stays that constant, a 2x2 block becomes its mean
    assert np.allclose(osz.resize_scores(np.full((10, 10), 0.25, np.float32), (5, 5)), 0.25)
    block = np.array([[0, 1], [1, 0]], np.float32)
    assert np.allclose(osz.resize_scores(np.tile(block, (4, 4)), (4, 4)), 0.5)


def test_more_class_maps_than_opencv_channels():
    maps = np.random.default_rng(2).random((300, 12, 16), dtype=np.float32)
    assert osz.resize_scores(maps, (8, 6)).shape == (300, 6, 8)


def result_of(labels, with_extras=True):
    maps = np.stack([(labels == 1), (labels == 2)]).astype(np.float32) if with_extras else None
    return SegmentationResult(labels=labels, class_names=("a", "b"), class_ids=np.array([1, 2]),
                              present=np.array([True, True]), presence=np.array([0.9, 0.8], np.float32),
                              presence_kind="itm_probability", class_maps=maps,
                              confidence=maps.max(axis=0) if with_extras else None)


def test_resize_result_skips_same_size_and_keeps_missing_extras():
    labels = random_labels(12, 16, ids=(0, 1, 2))
    res = result_of(labels)
    assert osz.resize_result(res, None) is res and osz.resize_result(res, (16, 12)) is res
    out = osz.resize_result(res, (8, 6))
    assert out.labels.shape == out.confidence.shape == out.class_maps.shape[1:] == (6, 8)
    assert out.class_names == res.class_names and list(out.class_ids) == [1, 2]
    assert res.labels.shape == (12, 16)   # the engine's result is not changed (the overlay still uses it)
    bare = osz.resize_result(result_of(labels, with_extras=False), (8, 6))
    assert bare.confidence is None and bare.class_maps is None and bare.labels.shape == (6, 8)


@pytest.mark.parametrize("value,ok", [([0, 0], True), ([640, 480], True), ([1, 1], True), ([8192, 8192], True),
                                      ([0, 480], False), ([640, 0], False), ([-640, 480], False),
                                      ([8193, 10], False), ([640], False), ([640, 480, 3], False),
                                      (["a", "b"], False)])
def test_size_validation(value, ok):
    reason = osz.size_problem(value)
    assert (reason is None) == ok, reason
    if not ok:
        assert reason.startswith("output_size=")
    spec = next(s for s in params.NODE_PARAMS if s.name == "output_size")
    assert params.check_node_value(spec, value) == reason


@pytest.mark.parametrize("name,ok", [("", True), ("aligned_depth_to_color/camera_info", True),
                                     ("depth/image_rect_raw", True),
                                     ("/camera/depth/camera_info", False), ("~/depth", False), ("depth//info", False),
                                     ("1depth/camera_info", False), ("depth/camera info", False)])
def test_source_validation(name, ok):
    spec = next(s for s in params.NODE_PARAMS if s.name == "output_size_from")
    reason = params.check_node_value(spec, name)
    assert (reason is None) == ok, reason
    if not ok:
        assert "output_size_from" in reason


def test_size_and_source_are_exclusive():
    assert osz.conflict([0, 0], "") is None and osz.conflict([640, 480], "") is None
    assert osz.conflict([0, 0], "depth/camera_info") is None
    reason = osz.conflict([640, 480], "depth/camera_info")
    assert "output_size" in reason and "output_size_from" in reason and "choose one" in reason


def test_topic_type_from_name_and_message_sizes():
    assert osz.follows_camera_info("aligned_depth_to_color/camera_info")
    assert osz.follows_camera_info("camera_info")
    assert not osz.follows_camera_info("aligned_depth_to_color/image_raw")
    assert not osz.follows_camera_info("camera_info/other")
    info = CameraInfo(width=1280, height=720)
    assert osz.message_size(info) == (1280, 720)
    info.binning_x = info.binning_y = 2
    assert osz.message_size(info) == (640, 360)
    info.roi.width, info.roi.height = 400, 300
    assert osz.message_size(info) == (200, 150)
    assert osz.message_size(Image(width=848, height=480)) == (848, 480)
    assert osz.target_size([0, 0], None) is None and osz.target_size([0, 0], (8, 6)) == (8, 6)
    assert osz.target_size([10, 20], None) == (10, 20)


# -- the worker's pipeline --------------------------------------------------------------------------------
class Engine:
    """Labels 1 on the left half, 2 on the right; scores and confidence when asked."""

    def segment(self, image, present=None, outputs=("labels",)):
        h, w = image.shape[:2]
        labels = np.full((h, w), 2, np.uint8)
        labels[:, : w // 2] = 1
        res = result_of(labels)
        return SegmentationResult(labels=labels, class_names=res.class_names, class_ids=res.class_ids,
                                  present=res.present, presence=res.presence, presence_kind=res.presence_kind,
                                  class_maps=res.class_maps if "class_maps" in outputs else None,
                                  confidence=res.confidence if "confidence" in outputs else None)


class Pub:
    def __init__(self):
        self.msgs = []

    def get_subscription_count(self):
        return 1

    def publish(self, msg):
        self.msgs.append(msg)


SETTINGS = {"max_frame_age": 0.0, "future_stamp_tolerance": 0.5, "max_image_pixels": 10**6,
            "debug_extra_latency": 0.0, "publish_labels": True, "publish_confidence": True,
            "publish_overlay": True, "publish_masks": True, "publish_class_map_per_frame": False,
            "overlay_alpha": 0.5, "presence_threshold": 0.5, "model": "test", "output_size": [0, 0]}


class OnceLog:
    """The parts' Log as the node's: one line per key."""

    def __init__(self) -> None:
        self.warned: dict = {}

    def info(self, text: str) -> None:
        pass

    def warn_once(self, key: tuple, text: str) -> None:
        self.warned.setdefault(key, text)


class FollowedSizes:
    """output_size_from's sizes (SizeFollower.size), from a dict camera -> (width, height) or None."""

    def __init__(self, sizes: dict) -> None:
        self.sizes = sizes

    def size(self, camera: str):
        return self.sizes.get(camera)


def pipeline(settings, followed=None):
    pubs = CameraOutputs(*(Pub() for _ in range(5)))
    log = OnceLog()
    engine = SimpleNamespace(lock=threading.RLock(), segmenter=Engine(), version=1)
    sizes = FollowedSizes(followed) if followed is not None else None
    pipe = FramePipeline(engine, Publishers(PublishGate(), {"": pubs}), Runtime(Settings(settings), log, Clock()),
                         Counters(), None, sizes)
    return pipe, pubs, log.warned


def sizes(pubs):
    return {"labels": [(m.width, m.height) for m in pubs.labels.msgs],
            "confidence": [(m.width, m.height) for m in pubs.confidence.msgs],
            "masks": [(m.width, m.height) for msg in pubs.masks.msgs for m in msg.masks],
            "overlay": [(m.width, m.height) for m in pubs.overlay.msgs]}


def test_pipeline_publishes_at_explicit_size_with_the_frame_header():
    settings = {**SETTINGS, "output_size": [16, 12]}
    pipe, pubs, warned = pipeline(settings)
    msg = image_msg(scene(24, 32), "rgb8", 41, frame_id="color_optical")
    pipe([Frame("", msg)])
    assert sizes(pubs) == {"labels": [(16, 12)], "confidence": [(16, 12)], "masks": [(16, 12)] * 2,
                           "overlay": [(32, 24)]}
    for m in (pubs.labels.msgs[0], pubs.confidence.msgs[0], pubs.masks.msgs[0], *pubs.masks.msgs[0].masks,
              pubs.overlay.msgs[0]):
        assert (m.header.stamp.sec, m.header.frame_id) == (41, "color_optical")
    labels = to_array(pubs.labels.msgs[0])
    assert (labels[:, :8] == 1).all() and (labels[:, 8:] == 2).all()
    assert not warned   # same aspect ratio: nothing stretched
    settings["output_size"] = [0, 0]   # runtime change: back to the camera's size
    pipe([Frame("", image_msg(scene(24, 32), "rgb8", 42))])
    assert sizes(pubs)["labels"][-1] == (32, 24) and sizes(pubs)["confidence"][-1] == (32, 24)


def test_pipeline_follows_the_latest_size_and_warns_once_when_stretched():
    followed = {"": None}
    pipe, pubs, warned = pipeline(dict(SETTINGS), followed)
    for sec, size in enumerate([None, (64, 48), (20, 10), (20, 10)]):
        followed[""] = size
        pipe([Frame("", image_msg(scene(24, 32), "rgb8", sec))])
        assert sizes(pubs)["labels"][-1] == (size or (32, 24))
        assert sizes(pubs)["masks"][-2:] == [size or (32, 24)] * 2
    assert len(warned) == 1, warned
    text = next(iter(warned.values()))
    assert "stretched" in text and "20 x 10" in text


# -- the offline bag command ------------------------------------------------------------------------------
def test_bag_outputs_at_the_given_size_with_the_frame_header():
    from rclpy.serialization import deserialize_message

    from ovss_ros.pnp_ovss.config import make_config
    from ovss_ros.msg import SegmentationMasks
    from ovss_ros.ros.bag_pipeline import BagOutputOptions, bag_messages

    labels = np.full((24, 32), 2, np.uint8)
    labels[:, :16] = 1
    header = image_msg(scene(24, 32), "rgb8", 77, frame_id="color_optical").header
    seg = SimpleNamespace(config=make_config("tiny"))
    got = bag_messages(seg, result_of(labels), scene(24, 32), header, BagOutputOptions(output_size=(16, 12)))
    msgs = {k: deserialize_message(v, SegmentationMasks if k == "masks" else Image)
            for k, v in got.messages.items() if k != "class_map"}
    images = [msgs["labels"], msgs["confidence"], *msgs["masks"].masks]
    assert [(m.width, m.height) for m in images] == [(16, 12)] * 4
    assert (msgs["overlay"].width, msgs["overlay"].height) == (32, 24)
    assert all(m.header == header for m in (*images, msgs["masks"], msgs["overlay"]))
    assert (to_array(msgs["labels"])[:, :8] == 1).all() and (to_array(msgs["labels"])[:, 8:] == 2).all()


def test_bag_command_size_argument():
    import argparse

    from ovss_ros.ros.bag_segment import parse_args, size_argument

    assert size_argument("640x480") == (640, 480) and size_argument("848X480") == (848, 480)
    for bad in ("640", "640x0", "0x0", "x480", "640x480x3", "-1x5", "9000x10"):
        with pytest.raises(argparse.ArgumentTypeError):
            size_argument(bad)
    args = parse_args(["in", "out", "--vocabulary", "a", "--output-size", "320x240"])
    assert args.output_size == (320, 240)
    assert parse_args(["in", "out", "--vocabulary", "a"]).output_size is None
