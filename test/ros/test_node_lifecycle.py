"""Managed mode (autostart:=false) with the compressed twin as input: configure checks the model, activate
loads it and subscribes, deactivate unsubscribes and releases the model, activate again reloads it. Model load
failure: non-zero exit (autostart) or a failed transition (managed) with a message that says what to do."""
import itertools

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CompressedImage, Image

from ovss_ros.ros import qos
from rostest_helpers import change_state, diagnostic_values, lifecycle_state, scene, stamp, wait_until

SECONDS = itertools.count(9000)


def change(probe, ns, transition_id):
    return change_state(probe, f"{ns}/ovss_node", transition_id)


def state(probe, ns):
    return lifecycle_state(probe, f"{ns}/ovss_node")


def compressed(fmt, sec, data=None):
    if data is None:
        data = cv2.imencode(f".{fmt}", scene(40, 56)[:, :, ::-1])[1].tobytes()
    msg = CompressedImage(format=fmt, data=data)
    msg.header.stamp, msg.header.frame_id = stamp(sec), "cam_lc"
    return msg


def test_managed_lifecycle_with_compressed_input(probe, start_node):
    ns = "/ovss_lc"
    node = start_node(ns, autostart=False, input_transport="compressed", vocabulary=["red circle", "dog"])
    pub = probe.node.create_publisher(CompressedImage, f"{ns}/image/compressed", qos.reliable(10))
    labels = probe.collect(Image, f"{ns}/segmentation/labels", qos.reliable(20))
    diag = probe.collect(DiagnosticArray, "/diagnostics", 50)
    assert state(probe, ns) == State.PRIMARY_STATE_UNCONFIGURED
    assert pub.get_subscription_count() == 0

    assert change(probe, ns, Transition.TRANSITION_CONFIGURE), node.log()
    assert state(probe, ns) == State.PRIMARY_STATE_INACTIVE
    assert pub.get_subscription_count() == 0            # inactive: not subscribed to the camera

    def send(fmt, data=None):
        sec = next(SECONDS)
        msg = compressed(fmt, sec, data)
        for _ in range(4):
            pub.publish(msg)
            got = labels.wait_for(lambda m: m.header.stamp.sec == sec, 5)
            if got:
                return got
        return None

    for cycle in range(2):   # the second activation reloads the model released by deactivate
        assert change(probe, ns, Transition.TRANSITION_ACTIVATE), node.log()
        assert state(probe, ns) == State.PRIMARY_STATE_ACTIVE
        probe.wait_subscribers(pub)
        got = send("jpg")
        assert got is not None and (got.width, got.height, got.header.frame_id) == (56, 40, "cam_lc"), node.log()
        pub.publish(compressed("jpeg", next(SECONDS), b"\xff\xd8 not really a jpeg"))
        # the worker must see it before the next good frame replaces it (newest frame wins)
        assert diag.wait_for(lambda a: any(s.name == f"{ns}/ovss_node: camera '(default)'"
                                           and int(diagnostic_values(s)["bad"]) >= cycle + 1 for s in a.status), 10)
        assert send("png") is not None, node.log()
        assert change(probe, ns, Transition.TRANSITION_DEACTIVATE)
        assert wait_until(lambda: pub.get_subscription_count() == 0, 10)
        released = diag.wait_for(lambda a: any(diagnostic_values(s).get("device") == "released"
                                               and s.name.startswith(ns) for s in a.status), 10)
        assert released is not None
    assert node.log().count("cannot decode compressed frame") == 1
    assert node.log().count("loaded on cpu") == 2
    assert change(probe, ns, Transition.TRANSITION_CLEANUP)
    assert state(probe, ns) == State.PRIMARY_STATE_UNCONFIGURED
    assert node.alive()


def test_model_load_failure_exits_non_zero_with_advice(start_node, tmp_path):
    node = start_node("/ovss_fail", model=str(tmp_path / "no_such_model"))
    assert wait_until(lambda: not node.alive(), 90), "node kept running without a model"
    assert node.proc.returncode != 0
    log = node.log()
    assert "cannot load model" in log and "What to do" in log and "-p model:=" in log


def test_managed_configure_fails_then_succeeds_after_fixing_the_model(probe, start_node, tiny_model_dir,
                                                                      tmp_path):
    ns = "/ovss_fail_managed"
    node = start_node(ns, autostart=False, model=str(tmp_path / "missing"))
    assert not change(probe, ns, Transition.TRANSITION_CONFIGURE)
    assert state(probe, ns) == State.PRIMARY_STATE_UNCONFIGURED and node.alive()
    assert "cannot load model" in node.log()
    req = SetParameters.Request(parameters=[Parameter(name="model", value=ParameterValue(
        type=ParameterType.PARAMETER_STRING, string_value=tiny_model_dir))])
    assert probe.call(SetParameters, f"{ns}/ovss_node/set_parameters", req).results[0].successful
    assert change(probe, ns, Transition.TRANSITION_CONFIGURE), node.log()
    refused = probe.call(SetParameters, f"{ns}/ovss_node/set_parameters", req).results[0]
    assert not refused.successful and "configure" in refused.reason   # model is fixed while configured
