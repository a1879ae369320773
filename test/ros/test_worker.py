"""Newest-frame hand-off: drops are counted, nothing queues, cameras are served in turn, the worker
survives a failing frame."""
import threading

from ovss_ros.ros.worker import Frame, LatestFrames, Worker
from rostest_helpers import wait_until


def test_newer_frame_replaces_older_and_counts_the_drop():
    frames = LatestFrames()
    for i in range(100):
        frames.put(Frame("cam", i))
    assert frames.pending() == 1
    assert (frames.received["cam"], frames.dropped["cam"]) == (100, 99)
    assert frames.take(timeout=0).msg == 99
    assert frames.take(timeout=0.01) is None


def test_cameras_are_served_round_robin():
    frames = LatestFrames()
    frames.put(Frame("a", 1))
    frames.put(Frame("b", 1))
    first = frames.take(0).camera
    frames.put(Frame(first, 2))           # the camera just served has a new frame already
    assert frames.take(0).camera != first  # ... but the other one goes first


def test_clear_forgets_pending_without_counting_drops():
    frames = LatestFrames()
    frames.put(Frame("a", 1))
    assert frames.clear() == 1 and frames.dropped["a"] == 0 and frames.take(0) is None


def test_slow_worker_sees_only_the_newest_frames_and_survives_errors():
    frames, seen, errors = LatestFrames(), [], []
    gate = threading.Event()

    def process(frame):
        gate.wait(5)
        if frame.msg == "boom":
            raise RuntimeError("bad frame")
        seen.append(frame.msg)

    worker = Worker(frames, process, lambda f, e: errors.append(str(e)))
    worker.start()
    frames.put(Frame("cam", "boom"))
    assert wait_until(lambda: worker.busy.is_set(), 5)
    for i in range(50):                   # arrive while the worker is busy: only the last survives
        frames.put(Frame("cam", i))
    gate.set()
    assert wait_until(lambda: seen == [49], 5), seen
    assert errors == ["bad frame"] and frames.dropped["cam"] == 49
    frames.put(Frame("cam", "next"))
    assert wait_until(lambda: seen == [49, "next"], 5)
    worker.stop()
