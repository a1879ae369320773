"""The node and the bag tools ask the engine for uint8 scores (quantised on its device before the copy) and
publish exactly the messages the float scores gave; an engine that does not offer them is used as it is."""
import numpy as np
import pytest
from std_msgs.msg import Header

from ovss_ros.engine.segmenter import Segmenter
from ovss_ros.ros import outputs
from ovss_ros.ros.batching import segment_each
from rostest_helpers import scene, stamp, to_array


def header():
    return Header(stamp=stamp(3, 1), frame_id="cam")


def test_mono8_levels_take_floats_and_pass_levels_through():
    x = np.array([[-0.2, 0.0, 0.5 / 255, 1.5 / 255], [0.5, 1.0, 1.7, 254.5 / 255]], np.float32)
    levels = outputs.mono8_levels(x)
    np.testing.assert_array_equal(levels, [[0, 0, 0, 2], [128, 255, 255, 254]])
    assert outputs.mono8_levels(levels) is levels
    assert to_array(outputs.confidence_image(levels, header())).tolist() == levels.tolist()


class Recording:
    """An engine that offers uint8 scores: records what it was asked for."""
    score_dtypes = ("float32", "uint8")

    def __init__(self):
        self.calls = []

    def segment_batch(self, images, presents=None, outputs=("labels",), score_dtype="float32"):
        self.calls.append(("batch", len(images), tuple(outputs), score_dtype))
        return [None] * len(images)

    def segment(self, image, present=None, outputs=("labels",), score_dtype="float32"):
        self.calls.append(("one", 1, tuple(outputs), score_dtype))


class Plain:
    def segment(self, image, present=None, outputs=("labels",)):
        return "plain"


def test_engines_that_offer_uint8_scores_are_asked_for_them():
    rec = Recording()
    segment_each(outputs.mono8_engine(rec), [1, 2], ("labels", "confidence"))
    segment_each(outputs.mono8_engine(rec), [1], ("labels",))
    assert rec.calls == [("batch", 2, ("labels", "confidence"), "uint8"), ("one", 1, ("labels",), "uint8")]
    plain = Plain()
    assert outputs.mono8_engine(plain) is plain and segment_each(plain, [1], ("labels",)) == ["plain"]


@pytest.fixture(scope="module")
def pgseg(tiny_pgseg_dir):
    seg = Segmenter.from_pretrained(str(tiny_pgseg_dir), preset="tiny", device="cpu", background_threshold=0.3)
    seg.set_vocabulary(["red", "green", "blue", "dog"])
    return seg


def test_messages_from_device_levels_equal_those_from_float_scores(pgseg):
    rgb = scene(48, 64)
    want = ("labels", "confidence", "class_maps")
    ref = pgseg.segment(rgb, outputs=want)
    res = segment_each(outputs.mono8_engine(pgseg), [rgb], want)[0]
    assert ref.confidence.dtype == np.float32 and res.confidence.dtype == res.class_maps.dtype == np.uint8
    assert len(res.class_ids) > 0
    h = header()
    assert outputs.confidence_image(res.confidence, h) == outputs.confidence_image(ref.confidence, h)
    assert outputs.masks_message(res, h, 1) == outputs.masks_message(ref, h, 1)
    assert outputs.labels_image(res.labels, h) == outputs.labels_image(ref.labels, h)


@pytest.mark.parametrize("size", [(32, 24), (96, 72)])
def test_resized_levels_stay_within_one_level_of_resized_floats(pgseg, size):
    """output_size resizes what the engine returned: levels now, floats before (then quantised): the
    published images differ by at most one level."""
    from ovss_ros.ros.output_size import resize_result

    rgb = scene(48, 64)
    want = ("labels", "confidence", "class_maps")
    ref = resize_result(pgseg.segment(rgb, outputs=want), size)
    res = resize_result(segment_each(outputs.mono8_engine(pgseg), [rgb], want)[0], size)
    assert res.confidence.dtype == res.class_maps.dtype == np.uint8
    for ours, theirs in ((res.confidence, ref.confidence), (res.class_maps, ref.class_maps)):
        gap = np.abs(ours.astype(int) - outputs.mono8_levels(theirs).astype(int))
        assert ours.shape == theirs.shape and gap.max() <= 1, gap.max()
    np.testing.assert_array_equal(res.labels, ref.labels)
