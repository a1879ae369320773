"""Over real DDS, one node with two cameras: confidence, masks and overlay are computed only while someone
subscribes to them (what the engine is asked for and what is published shows in /diagnostics), and frames
of both cameras that wait together go through the engine as one batch."""
import itertools

import pytest
from sensor_msgs.msg import Image

from ovss_ros.msg import SegmentationMasks
from ovss_ros.ros import qos
from rostest_helpers import diagnostic_values, image_msg, scene, set_params, two_camera_rig

NS = "/ovss_demand"
FULL = f"{NS}/ovss_node"
SECONDS = itertools.count(70000)


@pytest.fixture(scope="module")
def rig(probe, start_node):
    node = start_node(NS, cameras=["front", "rear"], vocabulary=["red circle", "dog"],
                      **{"engine.presence": "all"})
    r = two_camera_rig(probe, node, NS, depth=10, labels_depth=50, diag_depth=200)
    yield r
    assert node.alive(), node.log()


def send(rig, cam, size=(36, 48)):
    sec = next(SECONDS)
    rig["pub"][cam].publish(image_msg(scene(*size, seed=sec % 3), "rgb8", sec))
    return sec


def labelled(rig, cam, sec, timeout=60.0):
    return rig["labels"][cam].wait_for(lambda m: m.header.stamp.sec == sec, timeout) is not None


def answered(rig, cam, tries=5):
    """Sends frames of `cam` until one comes back labelled; its second. The first frames after start-up may
    go out before the node's labels writer has matched our reader (DDS discovery is one-sided), and such a
    result is lost for good."""
    for _ in range(tries):
        sec = send(rig, cam)
        if labelled(rig, cam, sec, timeout=15.0):
            return sec
    raise AssertionError(rig["node"].log())


def status(rig, suffix, predicate, timeout=20.0):
    """Values of the node's status `suffix` ("segmentation" or "camera 'front'") in the first /diagnostics
    message from now on that satisfies predicate(values), or None."""
    name = f"{FULL}: {suffix}"
    rig["diag"].clear()

    def values(arr):
        st = next((s for s in arr.status if s.name == name), None)
        return diagnostic_values(st) if st is not None else None

    arr = rig["diag"].wait_for(lambda a: values(a) is not None and predicate(values(a)), timeout)
    return values(arr) if arr is not None else None


def test_optional_outputs_are_computed_only_while_subscribed(rig):
    answered(rig, "front")
    cam = status(rig, "camera 'front'", lambda v: int(v["processed"]) >= 1)
    assert cam is not None, rig["node"].log()
    # nobody subscribes to confidence, masks or overlay: not computed, not encoded, not published
    assert (cam["published.labels"], cam["published.confidence"], cam["published.masks"],
            cam["published.overlay"]) == (cam["processed"], "0", "0", "0"), cam
    assert status(rig, "segmentation", lambda v: v["engine_outputs"] == "labels") is not None

    out = qos.reliable(50)
    confidence = rig["probe"].collect(Image, f"{NS}/front/segmentation/confidence", out)
    masks = rig["probe"].collect(SegmentationMasks, f"{NS}/front/segmentation/masks", out)
    overlay = rig["probe"].collect(Image, f"{NS}/front/segmentation/overlay", out)
    got = None
    for _ in range(20):   # until the node's publishers have matched the new readers
        sec = send(rig, "front")
        assert labelled(rig, "front", sec), rig["node"].log()
        got = [c.wait_for(lambda m: m.header.stamp.sec == sec, 2.0) for c in (confidence, masks, overlay)]
        if all(got):
            break
    assert all(got), (got, rig["node"].log())
    assert (got[0].encoding, got[2].encoding, list(got[1].class_ids)) == ("mono8", "rgb8", [1, 2])
    assert status(rig, "segmentation", lambda v: v["engine_outputs"] == "labels+class_maps+confidence")
    # the rear camera's topics still have no subscriber: nothing of it is encoded
    answered(rig, "rear")
    rear = status(rig, "camera 'rear'", lambda v: int(v["processed"]) >= 1)
    assert (rear["published.confidence"], rear["published.masks"], rear["published.overlay"]) == ("0", "0", "0")


def test_frames_of_both_cameras_waiting_together_run_as_one_batch(rig):
    assert set_params(rig["probe"], FULL, debug_extra_latency=1.5)[0].successful   # a slow engine pass
    try:
        before = status(rig, "camera 'front'", lambda v: True)
        first = send(rig, "front")
        # the worker holds the first frame (received, not yet processed): the next two wait together
        assert status(rig, "camera 'front'", lambda v: int(v["received"]) > int(before["received"])
                      and v["processed"] == before["processed"]) is not None, rig["node"].log()
        second, rear = send(rig, "front"), send(rig, "rear", size=(30, 40))
        assert labelled(rig, "front", first) and labelled(rig, "front", second) and labelled(rig, "rear", rear), \
            rig["node"].log()
        main = status(rig, "segmentation", lambda v: int(v["max_batch"]) == 2)
        assert main is not None, rig["node"].log()
        front = status(rig, "camera 'front'", lambda v: True)
        assert front["dropped"] == before["dropped"]   # nothing replaced: every frame was segmented
    finally:
        assert set_params(rig["probe"], FULL, debug_extra_latency=0.0)[0].successful
