"""Outputs at another resolution, on the wire (one ovss_node process, tiny model, CPU): an explicit
output_size gives labels, confidence and masks of that size with the camera frame's header; output_size_from
follows the latest CameraInfo (or Image) on a topic of the camera, at the camera's size until the first one;
nonsense and the two modes together are refused with the reason."""
import itertools

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters, SetParametersAtomically
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ovss_ros.msg import SegmentationMasks
from ovss_ros.ros import qos
from rostest_helpers import change_state, image_msg, scene, stamp, to_array, wait_until

NS = "/ovss_output_size"
NODE = f"{NS}/ovss_node"
SECONDS = itertools.count(5000)
CAMERA = (64, 48)   # width, height of the frames sent


def value(v):
    if isinstance(v, list):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)


class Rig:
    def __init__(self, probe, node):
        self.probe, self.node = probe, node
        n = probe.node
        self.pub = n.create_publisher(Image, f"{NS}/image", qos.reliable(10))
        out = qos.reliable(50)
        self.labels = probe.collect(Image, f"{NS}/segmentation/labels", out)
        self.confidence = probe.collect(Image, f"{NS}/segmentation/confidence", out)
        self.masks = probe.collect(SegmentationMasks, f"{NS}/segmentation/masks", out)
        self.overlay = probe.collect(Image, f"{NS}/segmentation/overlay", out)

    def set(self, **values):
        req = SetParameters.Request(parameters=[Parameter(name=k, value=value(v)) for k, v in values.items()])
        return self.probe.call(SetParameters, f"{NODE}/set_parameters", req).results

    def set_atomically(self, **values):
        req = SetParametersAtomically.Request(
            parameters=[Parameter(name=k, value=value(v)) for k, v in values.items()])
        return self.probe.call(SetParametersAtomically, f"{NODE}/set_parameters_atomically", req).result

    def frame(self, timeout=30.0):
        """One colour frame; its labels, confidence and masks (matched by stamp)."""
        sec = next(SECONDS)
        msg = image_msg(scene(CAMERA[1], CAMERA[0], seed=sec % 3), "rgb8", sec, frame_id="color_optical")
        self.probe.wait_subscribers(self.pub, timeout=60)
        self.pub.publish(msg)
        got = [c.wait_for(lambda m: m.header.stamp.sec == sec, timeout)
               for c in (self.labels, self.confidence, self.masks)]
        assert all(g is not None for g in got), self.node.log()
        return got

    def frames_until(self, size, before, attempts=20):
        """Frames, each after `before()` (publishing the size message, as a driver does with every frame),
        until the labels have `size`: the size message reaches the node on its own path, so the frame sent
        right after it may still be processed at the old size."""
        for _ in range(attempts):
            before()
            got = self.frame()
            if (got[0].width, got[0].height) == size:
                return got
        raise AssertionError(f"no labels of {size} after {attempts} frames: {self.node.log()}")


def check(got, size, sec=None):
    """Labels, confidence and every score mask at `size`, each with the colour frame's header."""
    labels, confidence, masks = got
    images = [labels, confidence, *masks.masks]
    assert masks.masks, "no score masks"
    for img in images:
        assert (img.width, img.height) == size
        assert img.step == img.width * (2 if img.encoding == "mono16" else 1)
    for m in (*images, masks):
        assert m.header.frame_id == "color_optical" and m.header.stamp.sec == labels.header.stamp.sec
    ids = set(np.unique(to_array(labels)).tolist())
    assert ids <= {0, *masks.class_ids}, ids   # nearest-neighbour: only ids the engine gave


@pytest.fixture(scope="module")
def rig(probe, start_node):
    vocab = probe.node.create_publisher(String, f"{NS}/vocabulary", qos.latched())
    vocab.publish(String(data="red circle, blue square"))
    r = Rig(probe, None)
    r.node = start_node(NS, **{"engine.presence": "all", "torch_threads": 1, "output_size": "[32, 24]"})
    yield r
    assert r.node.alive(), r.node.log()


def test_explicit_size_at_start_and_at_runtime(rig):
    got = rig.frame()
    check(got, (32, 24))
    overlay = rig.overlay.wait_for(lambda m: m.header.stamp.sec == got[0].header.stamp.sec, 20)
    assert overlay is not None and (overlay.width, overlay.height) == CAMERA   # the overlay keeps the camera's
    assert all(r.successful for r in rig.set(output_size=[96, 72]))   # immediately, larger than the camera
    check(rig.frame(), (96, 72))
    assert all(r.successful for r in rig.set(output_size=[0, 0]))
    check(rig.frame(), CAMERA)


@pytest.mark.parametrize("values,words", [
    ({"output_size": [0, 24]}, "must both be positive"),
    ({"output_size": [-5, 24]}, "must both be positive"),
    ({"output_size": [100000, 24]}, "at most"),
    ({"output_size": [32]}, "[width, height]"),
])
def test_nonsense_is_refused_with_the_reason(rig, values, words):
    (result,) = rig.set(**values)
    assert not result.successful and words in result.reason, result.reason


def test_follow_a_camera_info_then_a_depth_image(rig):
    probe, log = rig.probe, rig.node.log
    assert all(r.successful for r in rig.set(output_size=[0, 0]))
    assert change_state(probe, NODE, Transition.TRANSITION_DEACTIVATE), log()
    both = rig.set_atomically(output_size=[40, 30], output_size_from="aligned_depth_to_color/camera_info")
    assert not both.successful and "choose one" in both.reason, both.reason
    (absolute,) = rig.set(output_size_from="/camera/aligned_depth_to_color/camera_info")
    assert not absolute.successful and "relative" in absolute.reason, absolute.reason
    assert all(r.successful for r in rig.set(output_size_from="aligned_depth_to_color/camera_info"))
    assert change_state(probe, NODE, Transition.TRANSITION_ACTIVATE), log()

    check(rig.frame(), CAMERA)   # no size seen yet: the camera's
    (explicit,) = rig.set(output_size=[40, 30])   # the other mode while following
    assert not explicit.successful and "choose one" in explicit.reason, explicit.reason

    info_pub = probe.node.create_publisher(CameraInfo, f"{NS}/aligned_depth_to_color/camera_info", qos.reliable(1))
    probe.wait_subscribers(info_pub, timeout=30)
    info = CameraInfo(width=80, height=60)
    info.header.stamp, info.header.frame_id = stamp(1), "depth_optical"   # never copied to the outputs
    check(rig.frames_until((80, 60), before=lambda: info_pub.publish(info)), (80, 60))
    check(rig.frame(), (80, 60))   # stays
    info.width, info.height, info.binning_x, info.binning_y = 96, 72, 2, 2   # the driver changes: 48 x 36
    check(rig.frames_until((48, 36), before=lambda: info_pub.publish(info)), (48, 36))
    assert "outputs now 80 x 60" in log() and "outputs now 48 x 36" in log()

    # a depth image instead (any name not ending in camera_info), from a sensor-data (best-effort) publisher
    assert change_state(probe, NODE, Transition.TRANSITION_DEACTIVATE), log()
    assert all(r.successful for r in rig.set(output_size_from="depth/image_rect_raw"))
    assert change_state(probe, NODE, Transition.TRANSITION_ACTIVATE), log()
    depth_pub = probe.node.create_publisher(Image, f"{NS}/depth/image_rect_raw", qos.inputs("best_effort", 1))
    probe.wait_subscribers(depth_pub, timeout=30)
    depth = image_msg(np.full((18, 24), 1500, np.uint16), "16UC1", 2, frame_id="depth_optical")
    check(rig.frames_until((24, 18), before=lambda: depth_pub.publish(depth)), (24, 18))
    # a best-effort depth driver meets the node's reliable reader too: expected, not logged as a problem
    assert "incompatible" not in log().lower(), log()


def test_both_modes_at_start_fail_configure_before_the_model(start_node):
    """Values given at start never meet the on-set check: configure refuses the pair, the process ends with 1
    (each value alone is checked at configure with the other node parameters, as test_node_validation shows)."""
    node = start_node("/ovss_output_size_both", output_size="[32, 24]", output_size_from="depth/camera_info")
    assert wait_until(lambda: not node.alive(), 90), node.log()
    log = node.log()
    assert node.proc.returncode == 1 and "exiting with status 1: parameter refused" in log, log
    assert "choose one" in log and "Traceback" not in log and "loaded on" not in log, log
