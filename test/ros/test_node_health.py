"""What /diagnostics says now (recent window, silence, engine failures), stale and future-stamped frames,
distinct bad-input reasons logged once each, and clean, fast exits on SIGINT/SIGTERM in every state."""
import itertools
import signal
import time
from types import SimpleNamespace

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from rclpy.clock import Clock
from sensor_msgs.msg import Image

from ovss_ros.msg import ClassMap
from ovss_ros.ros import qos
from ovss_ros.ros.frame_pipeline import FramePipeline
from ovss_ros.ros.parts import Counters, Publishers, Runtime, Settings
from ovss_ros.ros.stats import CameraStats
from ovss_ros.ros.worker import Frame
from test_frame_pipeline import KeyLog
from rostest_helpers import (change_state, diagnostic_values, image_msg, raw_image, scene, set_params, stamp,
                             wait_until)

SECONDS = itertools.count(40000)


def camera_status(diag, ns, predicate, timeout=20.0):
    name = f"{ns}/ovss_node: camera '(default)'"
    arr = diag.wait_for(lambda a: any(s.name == name and predicate(s) for s in a.status), timeout)
    return next(s for s in arr.status if s.name == name) if arr is not None else None


def test_camera_status_is_about_the_recent_window(probe, start_node):
    ns, full = "/ovss_health", "/ovss_health/ovss_node"
    node = start_node(ns, vocabulary=["red circle", "dog"], diagnostics_window=1.5,
                      **{"engine.max_image_pixels": 5000})
    diag = probe.collect(DiagnosticArray, "/diagnostics", 200)
    labels = probe.collect(Image, f"{ns}/segmentation/labels", qos.reliable(50))
    class_map = probe.collect(ClassMap, f"{ns}/segmentation/class_map", qos.latched())
    assert class_map.wait_for(lambda m: m.vocabulary_version == 1, 120), node.log()
    # active and nothing received: the camera says so
    silent = camera_status(diag, ns, lambda s: s.level == DiagnosticStatus.WARN and "no frame" in s.message)
    assert silent is not None, node.log()

    cam = probe.node.create_publisher(Image, f"{ns}/image", qos.reliable(5))
    probe.wait_subscribers(cam)

    def good():
        sec = next(SECONDS)
        cam.publish(image_msg(scene(), "rgb8", sec))
        assert labels.wait_for(lambda m: m.header.stamp.sec == sec, 30), node.log()

    good()
    assert camera_status(diag, ns, lambda s: s.level == DiagnosticStatus.OK)
    # two bad frames of the same kind with different reasons: each reason is logged once
    for n, side in enumerate((100, 90, 100), start=1):
        cam.publish(raw_image(b"\0" * side * side * 3, "rgb8", side, side, side * 3, next(SECONDS)))
        # the worker must take it before a good frame replaces it (newest frame wins)
        assert camera_status(diag, ns, lambda s: diagnostic_values(s)["bad"] == str(n)), node.log()
        good()
    log = node.log()
    assert log.count("image of 100 x 100 pixels exceeds") == 1 and log.count("image of 90 x 90 pixels exceeds") == 1
    warn = camera_status(diag, ns, lambda s: s.level == DiagnosticStatus.WARN and diagnostic_values(s)["bad"] == "3"
                         and int(diagnostic_values(s)["recent_bad"]) > 0)
    assert warn is not None and "bad or stale" in warn.message
    # the window moves on while good frames keep coming: OK again, the total stays
    deadline = time.monotonic() + 20
    recovered = None
    while recovered is None and time.monotonic() < deadline:
        good()
        recovered = camera_status(diag, ns, lambda s: s.level == DiagnosticStatus.OK
                                  and diagnostic_values(s)["bad"] == "3", 0.5)
    assert recovered is not None, node.log()

    # frames stamped in the future are stale once max_frame_age is set; current ones are not
    assert set_params(probe, full, max_frame_age=5.0)[0].successful
    now = probe.node.get_clock().now().nanoseconds // 10**9
    future = image_msg(scene(), "rgb8", 0)
    future.header.stamp = stamp(now + 100)
    cam.publish(future)
    assert camera_status(diag, ns, lambda s: diagnostic_values(s)["stale"] == "1"), node.log()
    current = image_msg(scene(), "rgb8", 0)
    current.header.stamp = probe.node.get_clock().now().to_msg()
    cam.publish(current)
    assert labels.wait_for(lambda m: m.header.stamp == current.header.stamp, 30), node.log()
    assert labels.wait_for(lambda m: m.header.stamp.sec == now + 100, 0.1) is None
    assert "in the future" in node.log()


class FailingSegmenter:
    def segment(self, rgb, outputs=("labels",)):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_frames_failing_inside_the_engine_are_counted_and_reported():
    from ovss_ros.ros import diagnostics

    engine = SimpleNamespace(lock=__import__("threading").RLock(), segmenter=FailingSegmenter(), version=1)
    counters, warned = Counters(), []
    stats = counters.cameras
    settings = {"max_frame_age": 0.0, "future_stamp_tolerance": 0.5, "max_image_pixels": 10**6,
                "debug_extra_latency": 0.0}
    pipeline = FramePipeline(engine, Publishers(), Runtime(Settings(settings), KeyLog(warned), Clock()), counters)
    for _ in range(3):
        pipeline(Frame("cam", image_msg(scene(), "rgb8", 5)))
    st: CameraStats = stats["cam"]
    assert st.failed.total == 3 and st.failed.recent() == 3 and st.processed == 0
    assert len(set(warned)) == 1 and "illegal memory access" in st.failed.last_reason   # one reason, logged once
    status = diagnostics.camera_status("/n", "cam", {"recent_failed": st.failed.recent()}, 10.0, 0.0,
                                       st.failed.last_reason)
    assert status.level == DiagnosticStatus.ERROR and "illegal memory access" in status.message


def _stop_and_time(node, sig) -> float:
    t0 = time.monotonic()
    node.proc.send_signal(sig)
    node.proc.wait(30)
    return time.monotonic() - t0


@pytest.mark.parametrize("state", ["unconfigured", "inactive", "active", "mid_frame"])
def test_sigint_and_sigterm_exit_quickly_with_status_0(probe, start_node, state):
    ns = f"/ovss_exit_{state}"
    params = {"vocabulary": ["dog"], "autostart": state in ("active", "mid_frame")}
    if state == "mid_frame":
        params["debug_extra_latency"] = 60.0   # a frame that holds the engine for a minute
    for sig in (signal.SIGINT, signal.SIGTERM):
        node = start_node(ns, **params)
        diag = probe.collect(DiagnosticArray, "/diagnostics", 50)
        expected = {"unconfigured": "unconfigured", "inactive": "unconfigured"}.get(state, "active")
        assert diag.wait_for(lambda a: any(s.name == f"{ns}/ovss_node: segmentation"
                                           and diagnostic_values(s)["state"] == expected for s in a.status), 120), \
            node.log()
        if state == "inactive":
            assert change_state(probe, f"{ns}/ovss_node", Transition.TRANSITION_CONFIGURE)
        if state == "mid_frame":
            cam = probe.node.create_publisher(Image, f"{ns}/image", qos.reliable(5))
            probe.wait_subscribers(cam)
            cam.publish(image_msg(scene(), "rgb8", next(SECONDS)))
            assert wait_until(lambda: _in_frame(diag, ns), 30), node.log()
        seconds = _stop_and_time(node, sig)
        print(f"{state} {signal.Signals(sig).name}: exited in {seconds:.2f} s")
        assert node.proc.returncode == 0, node.log()
        assert seconds < 5.0, (seconds, node.log())   # the requirement is 2 s; the margin is for a loaded CI
        assert "Traceback" not in node.log(), node.log()


def _in_frame(diag, ns) -> bool:
    """The node's worker holds a frame: its camera has received one that is neither processed nor dropped."""
    for arr in reversed(diag.msgs):
        for s in arr.status:
            if s.name == f"{ns}/ovss_node: camera '(default)'":
                v = diagnostic_values(s)
                return int(v["received"]) >= 1 and int(v["processed"]) == 0
    return False
