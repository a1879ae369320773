"""The node's `method` parameter: PGSeg segments camera frames and takes its pgseg.* parameters between frames
(a bad value refused with the reason); `method` is read at configure, refused while configured and used at the
next configure; a checkpoint of the wrong kind fails configure with one message naming both kinds."""
import itertools

import pytest

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from sensor_msgs.msg import Image

from ovss_ros.msg import ClassMap, SegmentationMasks
from ovss_ros.pgseg.config import make_pgseg_config
from ovss_ros.ros import qos
from rostest_helpers import (assert_scores_agree_with_labels, change_state, diagnostic_values, get_param, image_msg,
                             lifecycle_state, scene, set_params, to_array, wait_until)

SECONDS = itertools.count(30000)
WRONG_KIND = "method 'pnp_ovss' needs a BLIP image-text matching checkpoint"


def node_values(diag, ns, predicate, timeout=20.0):
    """Values of the first /diagnostics segmentation status of the node under `ns` satisfying predicate."""
    def match(arr):
        return any(s.name == f"{ns}/ovss_node: segmentation" and predicate(diagnostic_values(s), s)
                   for s in arr.status)
    return diag.wait_for(match, timeout)


def send(pub, labels, timeout=60.0):
    """Publish one frame (again while unanswered) and return the labels with its stamp, or None."""
    sec = next(SECONDS)
    msg = image_msg(scene(), "rgb8", sec)
    for _ in range(3):
        pub.publish(msg)
        got = labels.wait_for(lambda m: m.header.stamp.sec == sec, timeout / 3)
        if got is not None:
            return got
    return None


def test_pgseg_node_segments_and_applies_its_parameters_between_frames(probe, start_node, tiny_pgseg_dir):
    ns, full = "/ovss_pgseg", "/ovss_pgseg/ovss_node"
    node = start_node(ns, model=str(tiny_pgseg_dir), method="pgseg", vocabulary=["red circle", "dog"])
    class_map = probe.collect(ClassMap, f"{ns}/segmentation/class_map", qos.latched())
    labels = probe.collect(Image, f"{ns}/segmentation/labels", qos.reliable(10))
    diag = probe.collect(DiagnosticArray, "/diagnostics", 50)
    cam = probe.node.create_publisher(Image, f"{ns}/image", qos.reliable(5))
    got = class_map.wait_for(lambda m: m.vocabulary_version == 1, 120)
    assert got is not None, node.log()
    assert [c.class_name for c in got.classes] == ["red circle", "dog"]
    assert got.presence_threshold == pytest.approx(make_pgseg_config("tiny").background_threshold)
    probe.wait_subscribers(cam, timeout=60)
    first = send(cam, labels)
    assert first is not None and (first.width, first.height, first.encoding) == (64, 48, "mono8"), node.log()
    assert set(to_array(first).ravel()) <= {0, 1, 2}
    assert node_values(diag, ns, lambda v, s: v["method"] == "pgseg" and v["preset"] == "tiny"
                       and v["text_preparations"] == "1"), node.log()
    assert "(method pgseg, preset tiny)" in node.log()
    # per-class score masks from PGSeg's maps, once the node has seen the subscriber
    masks = probe.collect(SegmentationMasks, f"{ns}/segmentation/masks", qos.reliable(10))
    assert wait_until(lambda: probe.node.count_publishers(f"{ns}/segmentation/masks") == 1, 30)
    found = None
    for _ in range(5):
        got = send(cam, labels)
        found = got and masks.wait_for(lambda m: m.header.stamp == got.header.stamp, 5)
        if found:
            break
    assert found, node.log()
    assert set(found.class_names) <= {"red circle", "dog"} and len(found.masks) == len(found.class_ids)
    assert_scores_agree_with_labels(found, to_array(got))

    # refused with the reason, nothing changed: not a multiple of the model's patch size, stride past the window
    for name, value, words in (("pgseg.image_size", 100, "patch size"), ("pgseg.prompt_template", "a {} {}", "{}"),
                               ("pgseg.background", "sometimes", "background")):
        res = set_params(probe, full, **{name: value})[0]
        assert not res.successful and "pgseg parameter refused" in res.reason and words in res.reason, res.reason
    res = set_params(probe, full, **{"pgseg.crop_size": 16, "pgseg.crop_stride": 24}, atomically=True)
    assert not res.successful and "crop_stride" in res.reason
    assert get_param(probe, full, "pgseg.crop_size").integer_value == 0

    # applied between frames: no background class any more; a new template prepares the text once more
    assert set_params(probe, full, **{"pgseg.background": "never"})[0].successful
    assert set_params(probe, full, **{"pgseg.prompt_template": "a photo of {}"})[0].successful
    assert node_values(diag, ns, lambda v, s: v["text_preparations"] == "2"), node.log()
    later = send(cam, labels)
    assert later is not None and to_array(later).min() >= 1, node.log()
    # the PnP-OVSS knobs are checked as PnP-OVSS's and kept for a configure with that method
    res = set_params(probe, full, **{"engine.prompt_template": "a {} {}"})[0]
    assert not res.successful and "engine parameter refused" in res.reason
    assert set_params(probe, full, **{"engine.threshold": 0.3})[0].successful
    assert get_param(probe, full, "engine.threshold").double_value == 0.3
    assert node.alive(), node.log()


def test_method_is_used_at_configure_and_a_wrong_kind_checkpoint_fails_it(probe, start_node, tiny_pgseg_dir,
                                                                         tiny_model_dir):
    ns, full = "/ovss_method", "/ovss_method/ovss_node"
    node = start_node(ns, autostart=False, model=str(tiny_pgseg_dir), vocabulary=["red circle", "dog"])
    diag = probe.collect(DiagnosticArray, "/diagnostics", 50)
    labels = probe.collect(Image, f"{ns}/segmentation/labels", qos.reliable(10))
    cam = probe.node.create_publisher(Image, f"{ns}/image", qos.reliable(5))

    # method pnp_ovss (the default) on a PGSeg checkpoint: configure fails with the one clear message
    assert not change_state(probe, full, Transition.TRANSITION_CONFIGURE)
    assert lifecycle_state(probe, full) == State.PRIMARY_STATE_UNCONFIGURED and node.alive()
    assert node_values(diag, ns, lambda v, s: s.level == s.ERROR and WRONG_KIND in s.message
                       and "'groupvit' checkpoint (use method 'pgseg')" in s.message), node.log()
    assert node.log().count(WRONG_KIND) == 1 and "Traceback" not in node.log(), node.log()

    # unconfigured: method can be set; pgseg.* knobs too, checked as PGSeg's
    assert set_params(probe, full, method="pgseg")[0].successful
    assert change_state(probe, full, Transition.TRANSITION_CONFIGURE), node.log()
    res = set_params(probe, full, method="pnp_ovss")[0]
    assert not res.successful and "configure" in res.reason        # fixed while configured, like model
    assert change_state(probe, full, Transition.TRANSITION_ACTIVATE), node.log()
    probe.wait_subscribers(cam, timeout=60)
    assert send(cam, labels) is not None, node.log()
    assert node_values(diag, ns, lambda v, s: v["method"] == "pgseg" and v["state"] == "active")

    # cleanup, then the other method with its checkpoint at the next configure
    assert change_state(probe, full, Transition.TRANSITION_DEACTIVATE)
    assert change_state(probe, full, Transition.TRANSITION_CLEANUP)
    assert set_params(probe, full, atomically=True, method="pnp_ovss", model=tiny_model_dir).successful
    assert change_state(probe, full, Transition.TRANSITION_CONFIGURE), node.log()
    assert change_state(probe, full, Transition.TRANSITION_ACTIVATE), node.log()
    assert wait_until(lambda: cam.get_subscription_count() > 0, 60)
    assert send(cam, labels) is not None, node.log()
    assert "(method pnp_ovss, preset tiny)" in node.log() and "(method pgseg, preset tiny)" in node.log()
    assert node_values(diag, ns, lambda v, s: v["method"] == "pnp_ovss" and v["state"] == "active")
