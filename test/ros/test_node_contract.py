"""The lifecycle contract transition by transition, and parameter semantics: checks without side effects,
refusals with one reason, descriptors, start-up errors in one line."""
import itertools

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from rcl_interfaces.srv import DescribeParameters
from sensor_msgs.msg import Image

from ovss_ros.msg import ClassMap
from ovss_ros.ros import qos
from ovss_ros.srv import SetVocabulary
from rostest_helpers import (change_state, diagnostic_values, get_param, image_msg, lifecycle_state, scene,
                             set_params, wait_until)

SECONDS = itertools.count(20000)


def node_status(diag, ns, predicate, timeout=20.0):
    """The first /diagnostics segmentation status of the node under `ns` whose values satisfy predicate."""
    def match(arr):
        return any(s.name == f"{ns}/ovss_node: segmentation" and predicate(diagnostic_values(s), s)
                   for s in arr.status)
    return diag.wait_for(match, timeout)


def test_lifecycle_contract_transition_by_transition(probe, start_node):
    ns, full = "/ovss_contract", "/ovss_contract/ovss_node"
    node = start_node(ns, autostart=False, vocabulary=["red circle", "dog"], diagnostics_window=2.0)
    diag = probe.collect(DiagnosticArray, "/diagnostics", 50)
    class_map = probe.collect(ClassMap, f"{ns}/segmentation/class_map", qos.latched())
    labels = probe.collect(Image, f"{ns}/segmentation/labels", qos.reliable(10))
    cam = probe.node.create_publisher(Image, f"{ns}/image", qos.reliable(5))

    # unconfigured: /diagnostics already reports the node; no outputs, no vocabulary service
    assert node_status(diag, ns, lambda v, s: v["state"] == "unconfigured"), node.log()
    assert probe.node.count_publishers(f"{ns}/segmentation/labels") == 0

    # configure: publishers and the vocabulary service exist; no model, no camera subscription
    assert change_state(probe, full, Transition.TRANSITION_CONFIGURE), node.log()
    assert lifecycle_state(probe, full) == State.PRIMARY_STATE_INACTIVE
    assert wait_until(lambda: probe.node.count_publishers(f"{ns}/segmentation/labels") == 1, 10)
    assert cam.get_subscription_count() == 0
    assert node_status(diag, ns, lambda v, s: v["state"] == "inactive" and v["device"] == "released")
    # while inactive a vocabulary is checked exactly as while active (the tokenizer is known from configure)
    res = probe.call(SetVocabulary, f"{ns}/set_vocabulary", SetVocabulary.Request(classes=["plain zebra"]))
    assert not res.success and "does not know" in res.message and "zebra" in res.message
    res = probe.call(SetVocabulary, f"{ns}/set_vocabulary", SetVocabulary.Request(classes=["blue square", "car"]))
    assert res.success and res.vocabulary_version == 2 and list(res.class_names) == ["blue square", "car"]
    assert list(get_param(probe, full, "vocabulary").string_array_value) == ["blue square", "car"]
    # lifecycle publishers: an inactive node publishes nothing, not even the latched class map ...
    assert class_map.wait_for(lambda m: True, 1.0) is None

    # activate: the model is loaded, the class map published (latched), the camera subscribed
    assert change_state(probe, full, Transition.TRANSITION_ACTIVATE), node.log()
    got = class_map.wait_for(lambda m: m.vocabulary_version == 2, 20)   # ... the same reader gets it now
    assert got is not None and [c.class_name for c in got.classes] == ["blue square", "car"]
    assert node.log().count("loaded on cpu") == 1
    probe.wait_subscribers(cam)
    sec = next(SECONDS)
    cam.publish(image_msg(scene(), "rgb8", sec))
    assert labels.wait_for(lambda m: m.header.stamp.sec == sec, 30), node.log()

    # deactivate: unsubscribed, model released; the vocabulary and its version are kept
    assert change_state(probe, full, Transition.TRANSITION_DEACTIVATE)
    assert wait_until(lambda: cam.get_subscription_count() == 0, 10)
    diag.clear()
    assert node_status(diag, ns, lambda v, s: v["state"] == "inactive" and v["device"] == "released"
                       and v["vocabulary_version"] == "2")

    # cleanup: everything released, back to unconfigured; configure works again
    assert change_state(probe, full, Transition.TRANSITION_CLEANUP)
    assert lifecycle_state(probe, full) == State.PRIMARY_STATE_UNCONFIGURED
    assert wait_until(lambda: probe.node.count_publishers(f"{ns}/segmentation/labels") == 0, 10)
    assert change_state(probe, full, Transition.TRANSITION_CONFIGURE), node.log()

    # shutdown ends the process, which owns the node, with status 0
    assert change_state(probe, full, Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert wait_until(lambda: not node.alive(), 20), node.log()
    assert node.proc.returncode == 0, node.log()


def test_failed_configure_is_visible_in_diagnostics(probe, start_node, tmp_path):
    ns = "/ovss_contract_fail"
    node = start_node(ns, autostart=False, model=str(tmp_path / "no_model"))
    diag = probe.collect(DiagnosticArray, "/diagnostics", 50)
    assert not change_state(probe, f"{ns}/ovss_node", Transition.TRANSITION_CONFIGURE)
    status = node_status(diag, ns, lambda v, s: s.level == s.ERROR and "cannot load model" in s.message)
    assert status is not None, node.log()
    assert node.alive()


def test_parameter_checks_have_no_side_effects_and_one_reason(probe, start_node):
    ns, full = "/ovss_params", "/ovss_params/ovss_node"
    node = start_node(ns, vocabulary=["red circle", "dog"])
    class_map = probe.collect(ClassMap, f"{ns}/segmentation/class_map", qos.latched())
    assert class_map.wait_for(lambda m: m.vocabulary_version == 1, 120), node.log()
    threshold = get_param(probe, full, "engine.threshold").double_value

    # a refused atomic set changes nothing, also the part that alone would pass
    res = set_params(probe, full, atomically=True, **{"engine.threshold": 0.9, "vocabulary": ["dog", "dog"]})
    assert not res.successful and "duplicate" in res.reason
    assert get_param(probe, full, "engine.threshold").double_value == threshold

    refusals = {
        "engine.prompt_template": ["a {} {}", "a {} {x}", "a {}}", "no field"],
        "engine.image_size": [100, 2048, -8],            # not a multiple of the patch size 8; too large; < 0
        "engine.dropout_rounds": [0], "engine.max_classes": [0], "engine.blur_sigma": [-0.1],
        "engine.postprocess": ["sharpen"], "input_transport": ["carrier_pigeon"], "device": ["gpu7"],
        "vocabulary": [[""], "", " , "], "diagnostics_period": [0.0], "preset": ["paper"],
        "overlay_alpha": [1.5], "max_frame_age": [-1.0], "torch_threads": [-2],
    }
    for name, values in refusals.items():
        for value in values:
            res = set_params(probe, full, **{name: value})[0]
            assert not res.successful and res.reason, (name, value)
            assert "\n" not in res.reason and "Traceback" not in res.reason, res.reason
    assert node.alive(), node.log()
    # the node still works: a vocabulary change and a valid engine change are applied
    assert set_params(probe, full, **{"engine.prompt_template": "a photo of {}"})[0].successful
    assert set_params(probe, full, vocabulary=["blue square", "car"])[0].successful
    got = class_map.wait_for(lambda m: [c.class_name for c in m.classes] == ["blue square", "car"], 20)
    assert got is not None and got.vocabulary_version == 2

    described = probe.call(DescribeParameters, f"{full}/describe_parameters", DescribeParameters.Request(
        names=["engine.threshold", "preset", "input_transport", "engine.dropout_rounds"])).descriptors
    threshold_d, preset_d, transport_d, rounds_d = described
    assert (threshold_d.floating_point_range[0].from_value, threshold_d.floating_point_range[0].to_value) == (0, 1)
    assert preset_d.read_only and "tiny" in preset_d.additional_constraints
    assert "compressed" in transport_d.additional_constraints and not transport_d.read_only
    assert rounds_d.integer_range[0].from_value == 1


def test_bad_start_parameters_end_with_one_line(start_node):
    for params, words in (({"preset": "fancy"}, "preset='fancy'"),
                          ({"engine.threshold": 2.0}, "engine.threshold"),
                          ({"engine.prompt_template": "a {} {x}"}, "prompt_template")):
        node = start_node("/ovss_badstart", **params)
        assert wait_until(lambda: not node.alive(), 90), node.log()
        log = node.log()
        assert node.proc.returncode == 1 and words in log and "Traceback" not in log, log


def test_output_qos_takes_the_standard_overrides(probe, start_node):
    from rclpy.qos import ReliabilityPolicy

    ns = "/ovss_qos"
    node = start_node(ns, vocabulary=["dog"], extra_args=[
        "-p", f"qos_overrides.{ns}/segmentation/labels.publisher.reliability:=best_effort"])
    class_map = probe.collect(ClassMap, f"{ns}/segmentation/class_map", qos.latched())
    assert class_map.wait_for(lambda m: m.vocabulary_version == 1, 120), node.log()

    def reliability(name):
        infos = probe.node.get_publishers_info_by_topic(f"{ns}/segmentation/{name}")
        return infos[0].qos_profile.reliability if infos else None

    assert wait_until(lambda: reliability("labels") is not None and reliability("confidence") is not None, 10)
    assert reliability("labels") == ReliabilityPolicy.BEST_EFFORT
    assert reliability("confidence") == ReliabilityPolicy.RELIABLE
