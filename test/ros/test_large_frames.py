"""Large frames over best effort (docs/ros_node.md, "Large frames and best-effort cameras"), over real DDS:
a matched best-effort camera that delivers nothing is reported on /diagnostics with the cause and the fix,
once per camera; with config/fastdds_large_frames.xml on both sides, the node's VGA rgb8 overlay
(921,600 bytes, published reliable) reaches a best-effort subscriber in another process."""
import json
import os
import subprocess
import sys

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image

from ovss_ros.ros import qos
from ovss_ros.ros.camera_inputs import BEST_EFFORT_SILENCE
from rostest_helpers import diagnostic_values, image_msg, scene, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROFILE = os.path.join(REPO, "config", "fastdds_large_frames.xml")
HINT = "a best-effort publisher is matched"


def _status(diag, ns, predicate, timeout):
    name = f"{ns}/ovss_node: camera '(default)'"
    arr = diag.wait_for(lambda a: any(s.name == name and predicate(s) for s in a.status), timeout)
    return next(s for s in arr.status if s.name == name) if arr is not None else None


def _active(diag, ns):
    return diag.wait_for(lambda a: any(s.name == f"{ns}/ovss_node: segmentation"
                                       and diagnostic_values(s)["state"] == "active" for s in a.status), 120)


def test_silent_best_effort_camera_is_reported_with_cause_and_fix(probe, start_node):
    """A best-effort publisher that is matched and never publishes stands in for large frames lost as UDP
    fragments: the node sees exactly that (a matched publisher, no frame), deterministically."""
    ns = "/ovss_be_silent"
    node = start_node(ns, vocabulary=["dog"], diagnostics_period=0.2, diagnostics_window=60.0)   # generic WARN later
    diag = probe.collect(DiagnosticArray, "/diagnostics", 500)
    assert _active(diag, ns), node.log()
    cam = probe.node.create_publisher(Image, f"{ns}/image", qos.inputs("best_effort", 1))
    probe.wait_subscribers(cam, timeout=60)
    warn = _status(diag, ns, lambda s: s.level == DiagnosticStatus.WARN and HINT in s.message,
                   BEST_EFFORT_SILENCE + 20)
    assert warn is not None, node.log()
    assert "FASTDDS_DEFAULT_PROFILES_FILE=" in warn.message and "fastdds_large_frames.xml" in warn.message
    assert "UDP fragments" in warn.message
    # a small frame gets through best effort (it fits the default segment): the report is cleared
    diag.clear()
    frame = image_msg(scene(), "rgb8", 123)

    def cleared():
        cam.publish(frame)
        return _status(diag, ns, lambda s: HINT not in s.message and int(diagnostic_values(s)["received"]) > 0, 0.3)

    assert wait_until(cleared, 30), node.log()
    assert node.log().count(HINT) == 1, node.log()   # logged once, not per /diagnostics period
    probe.node.destroy_publisher(cam)


CLIENT = r"""
import array, json, sys, time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

ns, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rclpy.init()
node = rclpy.create_node("best_effort_client")
got = []
node.create_subscription(Image, ns + "/segmentation/overlay",
                         lambda m: got.append([m.width, m.height, m.encoding, len(m.data)]), qos_profile_sensor_data)
pub = node.create_publisher(Image, ns + "/image", qos_profile_sensor_data)
pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
data = array.array("B")
data.frombytes(pixels.tobytes())
msg.data = data
published, deadline, last = 0, time.monotonic() + timeout, 0.0
while len(got) < want and time.monotonic() < deadline:
    if pub.get_subscription_count() and time.monotonic() - last > 0.3:
        published += 1
        msg.header.stamp.sec, last = published, time.monotonic()
        pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.05)
print(json.dumps({"overlays": got, "published": published}), flush=True)
"""


def test_overlay_reaches_a_best_effort_subscriber_with_the_profile(start_node, monkeypatch, tmp_path):
    """Node and client both run with the profile (what the launch file and the docs set up). The client sends
    VGA frames best effort and subscribes to the overlay best effort; the node publishes it reliable, which a
    best-effort reader matches."""
    ns = "/ovss_be_overlay"
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", PROFILE)   # inherited by the node process
    node = start_node(ns, vocabulary=["dog"])
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE")
    env = {**os.environ, "FASTDDS_DEFAULT_PROFILES_FILE": PROFILE}
    out = subprocess.run([sys.executable, "-c", CLIENT, ns, "3", "120"], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"overlays received: {len(result['overlays'])} for {result['published']} frames sent")
    assert len(result["overlays"]) >= 3, (result["published"], node.log())
    assert result["overlays"][0] == [640, 480, "rgb8", 640 * 480 * 3]


def test_silent_publisher_is_a_warn_of_its_own_below_engine_errors():
    from ovss_ros.ros import diagnostics

    warn = diagnostics.camera_status("/n", "", {}, 10.0, 60.0, "", "a best-effort publisher is matched ...")
    assert (warn.level, warn.message) == (DiagnosticStatus.WARN, "a best-effort publisher is matched ...")
    failing = diagnostics.camera_status("/n", "", {"recent_failed": 1}, 10.0, 60.0, "boom", "a best-effort ...")
    assert failing.level == DiagnosticStatus.ERROR and "boom" in failing.message
    assert diagnostics.camera_status("/n", "", {}, 10.0, 0.5).level == DiagnosticStatus.OK
