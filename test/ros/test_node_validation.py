"""Parameters that need no model are checked when they are set (on-set refusal with a reason) or at configure
(values given at start, which the on-set callback never sees), in one line and before the model is read;
camera names are relative and unique; a zero stamp is never stale; a same-name node that appears and leaves is
a warning naming its DDS participant, not an error."""
import math
import re
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition

from ovss_ros.ros import params
from rostest_helpers import change_state, lifecycle_state, set_params, stamp, wait_until
from test_frame_pipeline import Rig, frame

SPECS = {s.name: s for s in params.NODE_PARAMS}
SAME_NAME_NODE = Path(__file__).with_name("same_name_node.py")


@pytest.mark.parametrize("cameras,words", [
    (["front", "front"], "'front' is listed twice"), (["/abs"], "'/abs' is not a relative name"),
    (["~/cam"], "not a relative name"), (["front cam"], "not a valid name"), (["1st"], "not a valid name"),
    (["a//b"], "not a valid name"), ([], "at least one camera"),
])
def test_camera_names_refused_with_one_reason(cameras, words):
    reason = params.check_node_value(SPECS["cameras"], cameras)
    assert reason and words in reason and "\n" not in reason


def test_good_camera_names_pass():
    for cameras in ([""], ["front", "rear"], ["", "robot1/front_left"], ["_x"]):
        assert params.check_node_value(SPECS["cameras"], cameras) is None, cameras


@pytest.mark.parametrize("name,value", [("input_transport", "carrier_pigeon"), ("qos.input_reliability", "sometimes"),
                                        ("cameras", ["front", "front"]), ("cameras", ["/abs"])])
def test_bad_start_values_fail_configure_in_one_line_before_the_model(start_node, name, value):
    """autostart: configure refuses, the process ends with status 1, the model was never read or loaded."""
    node = start_node(f"/ovss_badvalue_{abs(hash((name, str(value)))) % 10**6}", **{name: value})
    assert wait_until(lambda: not node.alive(), 90), node.log()
    log = node.log()
    assert node.proc.returncode == 1, log
    refused = [line for line in log.splitlines() if "parameter refused" in line and "[ERROR]" in line]
    assert len(refused) == 1 and name in refused[0], log    # and the exit line (stderr) repeats the reason
    assert "exiting with status 1: parameter refused" in log, log
    assert "Traceback" not in log and "loaded on" not in log, log


def test_managed_node_refuses_bad_values_then_configures_once_fixed(probe, start_node):
    ns = "/ovss_validation"
    full = f"{ns}/ovss_node"
    node = start_node(ns, autostart=False, input_transport="carrier_pigeon", vocabulary=["dog"])
    diag = probe.collect(DiagnosticArray, "/diagnostics", 50)
    assert not change_state(probe, full, Transition.TRANSITION_CONFIGURE)
    assert lifecycle_state(probe, full) == State.PRIMARY_STATE_UNCONFIGURED and node.alive()
    assert wait_until(lambda: "parameter refused: input_transport='carrier_pigeon'" in node.log(), 10), node.log()
    # set while unconfigured: refused by the on-set callback, one reason each
    for name, value, words in (("cameras", ["front", "front"], "listed twice"),
                               ("cameras", ["/abs"], "not a relative name"),
                               ("qos.input_reliability", "sometimes", "expected one of"),
                               ("input_transport", "smoke", "expected one of")):
        res = set_params(probe, full, **{name: value})[0]
        assert not res.successful and words in res.reason and "\n" not in res.reason, (name, res.reason)
    assert set_params(probe, full, input_transport="raw", cameras=["front", "rear"])[0].successful
    assert change_state(probe, full, Transition.TRANSITION_CONFIGURE), node.log()
    assert wait_until(lambda: probe.node.count_publishers(f"{ns}/rear/segmentation/labels") == 1, 10)
    # cleanup forgets the cameras: after configuring with another list, /diagnostics names only those
    assert change_state(probe, full, Transition.TRANSITION_CLEANUP)
    assert set_params(probe, full, cameras=["side"])[0].successful
    assert change_state(probe, full, Transition.TRANSITION_CONFIGURE), node.log()
    # the first report naming the new camera comes after configure; one sent before it may still be in flight
    arr = diag.wait_for(lambda a: any(s.name == f"{full}: camera 'side'" for s in a.status), 20)
    assert arr is not None and [s.name for s in arr.status if s.name.startswith(f"{full}: camera")] == [
        f"{full}: camera 'side'"], [s.name for s in arr.status]
    assert "Traceback" not in node.log(), node.log()


def test_a_zero_stamp_is_never_stale_and_has_no_age():
    rig = Rig(("cam",))
    try:
        rig.settings["max_frame_age"] = 1.0
        old = frame(5)                                # 5 s after the epoch: far older than 1 s
        zero = frame(7)
        zero.header.stamp = stamp(0)
        rig.run(("cam", old))
        rig.run(("cam", zero))
        st = rig.stats["cam"]
        assert st.stale.total == 1 and st.processed == 1
        assert len(rig.pubs["cam"].labels.msgs) == 1 and rig.pubs["cam"].labels.msgs[0].header.stamp.sec == 0
        assert math.isnan(st.last_age)
        assert "stamped zero" in SPECS["max_frame_age"].description
    finally:
        assert rig.overlays.stop(5)


def test_a_same_name_node_that_appears_and_leaves_is_a_warning_naming_it(probe, start_node):
    """The node that was there first keeps serving: one warning naming the twin's DDS participant, a line when
    it left, no error. Then a second ovss_node started with the same name leaves by itself."""
    from ovss_ros.msg import ClassMap
    from ovss_ros.ros import qos
    from ovss_ros.ros.node import DUPLICATE_WINDOW

    ns = "/ovss_twin_warn"
    first = start_node(ns, vocabulary=["dog"], diagnostics_period=0.05)
    class_map = probe.collect(ClassMap, f"{ns}/segmentation/class_map", qos.latched())
    assert class_map.wait_for(lambda m: m.vocabulary_version == 1, 120), first.log()
    # past its own start window, in which a twin makes it leave too (it started before its class map came)
    assert wait_until(lambda: time.monotonic() - class_map.times[0] > DUPLICATE_WINDOW, DUPLICATE_WINDOW + 5)
    # a twin the test holds until the first has seen it: an ovss_node leaves as soon as it sees the first,
    # at times before the first's graph shows it
    twin = start_node(ns, program=(str(SAME_NAME_NODE),))
    assert wait_until(lambda: "appeared" in first.log() or not twin.alive(), 60), (first.log(), twin.log())
    assert twin.alive(), twin.log()
    assert twin.stop() == 0, twin.log()
    # it may stay in the graph for the DDS participant lease (Fast DDS: 20 s) if it left without a word
    assert wait_until(lambda: "has left" in first.log(), 45), first.log()
    log = first.log()
    warned = [line for line in log.splitlines() if "another node named" in line]
    assert len(warned) == 1 and warned[0].startswith("[WARN]"), log
    assert re.search(rf"named {ns}/ovss_node appeared \(DDS participant ([0-9a-f]{{2}}\.){{11}}[0-9a-f]{{2}}\)",
                     warned[0]), warned[0]
    assert "[ERROR]" not in log and first.alive(), log

    second = start_node(ns, vocabulary=["dog"])
    assert wait_until(lambda: not second.alive(), 90), second.log()
    assert second.proc.returncode == 1 and "already running" in second.log(), second.log()
    assert "[ERROR]" not in first.log() and first.alive(), first.log()


def test_a_bad_output_qos_override_fails_configure_in_one_line(start_node):
    ns = "/ovss_badqos"
    node = start_node(ns, extra_args=["-p", f"qos_overrides.{ns}/segmentation/labels.publisher.reliability:=bogus"])
    assert wait_until(lambda: not node.alive(), 90), node.log()
    log = node.log()
    assert node.proc.returncode == 1 and "parameter refused: qos_overrides for camera ''" in log, log
    assert "bogus" in log and "Traceback" not in log and "loaded on" not in log, log
