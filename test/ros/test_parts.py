"""The node's parts with stand-in collaborators (ovss_ros/ros/parts.py), for what moved out of the node: a batch
that raises past the pipeline is counted and logged once per reason, a failing overlay is logged once and the
thread goes on, frames count only for configured cameras, warnings are logged once per key, and cleanup
forgets every camera's publishers before destroying them."""
import threading
import time

import numpy as np

from ovss_ros.ros.frame_pipeline import FramePipeline
from ovss_ros.ros.overlay_thread import OverlayJob, OverlayPublisher
from ovss_ros.ros.parts import CameraOutputs, Counters, NodeLog, PublishGate, Publishers, Runtime, Settings
from ovss_ros.ros.stats import CameraStats
from ovss_ros.ros.worker import Frame
from rclpy.clock import Clock
from rostest_helpers import image_msg, scene, wait_until


class TextLog:
    def __init__(self) -> None:
        self.warnings: list = []

    def info(self, text: str) -> None:
        pass

    def warn_once(self, key: tuple, text: str) -> None:
        self.warnings.append((key, text))


class Recorder:
    def __init__(self) -> None:
        self.msgs: list = []

    def get_subscription_count(self) -> int:
        return 1

    def publish(self, msg) -> None:
        self.msgs.append(msg)


def test_a_batch_failing_past_the_pipeline_is_counted_per_camera_and_logged_once():
    counters, log = Counters(), TextLog()
    counters.cameras["front"] = CameraStats()
    pipeline = FramePipeline(None, Publishers(), Runtime(Settings({}), log, Clock()), counters)
    batch = [Frame("front", None), Frame("unknown", None)]
    pipeline.on_error(batch, MemoryError("out of memory"))
    assert counters.cameras["front"].failed.total == 1
    assert counters.cameras["front"].failed.last_reason == "MemoryError: out of memory"
    assert "unknown" not in counters.cameras   # not configured: logged, not counted
    assert [k for k, _ in log.warnings] == [("front", "error", "MemoryError"), ("unknown", "error", "MemoryError")]
    assert log.warnings[0][1] == "camera 'front': frame failed and was skipped: MemoryError: out of memory"


class BrokenOverlay:
    def publish(self, msg) -> None:
        raise RuntimeError("publisher gone")


def test_a_failing_overlay_is_logged_and_the_thread_goes_on():
    log, good = TextLog(), Recorder()
    pubs = {"a": CameraOutputs(None, None, BrokenOverlay(), None, None),
            "b": CameraOutputs(None, None, good, None, None)}
    overlays = OverlayPublisher(Publishers(PublishGate(), pubs), log=log)
    overlays.start()
    try:
        header = image_msg(scene(8, 8), "rgb8", 3).header
        for cam in ("a", "b"):
            overlays.submit(OverlayJob(cam, scene(8, 8), np.ones((8, 8), np.uint8), ("dog",), header, 0.5,
                                       time.monotonic()))
            assert wait_until(overlays.idle, 5)
        assert len(good.msgs) == 1 and overlays.published == {"b": 1}
        assert log.warnings == [(("a", "overlay", "RuntimeError"),
                                 "camera 'a': overlay not published: RuntimeError: publisher gone")]
    finally:
        assert overlays.stop(5)


def test_frames_count_only_for_configured_cameras():
    counters = Counters()
    counters.cameras["front"] = CameraStats()
    assert not counters.received("rear") and "rear" not in counters.cameras
    before = time.monotonic()
    assert counters.received("front")
    assert counters.cameras["front"].last_received >= before


class FakeLogger:
    def __init__(self) -> None:
        self.lines: list = []

    def info(self, text) -> None:
        self.lines.append(("info", text))

    def warning(self, text) -> None:
        self.lines.append(("warning", text))


def test_node_log_warns_once_per_key_from_any_thread():
    logger = FakeLogger()
    log = NodeLog(logger)
    threads = [threading.Thread(target=lambda: [log.warn_once(("k",), "once") for _ in range(100)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    log.warn_once(("other",), "another reason")
    log.info("hello")
    assert logger.lines == [("warning", "once"), ("warning", "another reason"), ("info", "hello")]


def test_release_forgets_the_publishers_before_destroying_each():
    publishers = Publishers()
    publishers.cameras["front"] = CameraOutputs("labels", "confidence", "overlay", "masks", "class_map", None)
    destroyed = []

    def destroy(pub):
        assert publishers.of("front") is None   # a part looking now finds none, not a destroyed one
        destroyed.append(pub)

    publishers.release(destroy)
    assert destroyed == ["labels", "confidence", "overlay", "masks", "class_map"] and publishers.all() == []
