"""Newest-frame hand-off: drops are counted, nothing queues, every camera's newest frame is taken as one
batch, the worker survives a failing batch."""
import threading

from ovss_ros.ros.worker import Frame, LatestFrames, Worker
from rostest_helpers import wait_until


def test_newer_frame_replaces_older_and_counts_the_drop():
    frames = LatestFrames()
    for i in range(100):
        frames.put(Frame("cam", i))
    assert frames.pending() == 1
    assert (frames.received["cam"], frames.dropped["cam"]) == (100, 99)
    assert [f.msg for f in frames.take(timeout=0)] == [99]
    assert frames.take(timeout=0.01) is None


def test_the_newest_frame_of_every_camera_is_taken_as_one_batch():
    frames = LatestFrames()
    frames.put(Frame("a", 1))
    frames.put(Frame("b", 1))
    frames.put(Frame("a", 2))             # replaces a's first frame before the worker took it: a drop
    assert [(f.camera, f.msg) for f in frames.take(0)] == [("a", 2), ("b", 1)]
    assert frames.dropped == {"a": 1, "b": 0} and frames.pending() == 0
    frames.put(Frame("b", 2))             # only b has a frame now: a batch of one
    assert [(f.camera, f.msg) for f in frames.take(0)] == [("b", 2)]


def test_clear_forgets_pending_without_counting_drops():
    frames = LatestFrames()
    frames.put(Frame("a", 1))
    assert frames.clear() == 1 and frames.dropped["a"] == 0 and frames.take(0) is None


def test_slow_worker_sees_only_the_newest_frames_and_survives_errors():
    frames, seen, errors = LatestFrames(), [], []
    gate = threading.Event()

    def process(batch):
        gate.wait(5)
        if batch[0].msg == "boom":
            raise RuntimeError("bad frame")
        seen.extend(f.msg for f in batch)

    worker = Worker(frames, process, lambda batch, e: errors.append(str(e)))
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


def test_changes_run_before_frames_and_only_the_newest_of_a_kind_runs():
    from ovss_ros.ros.worker import Change

    frames, applied = LatestFrames(), []
    frames.put(Frame("cam", 1))
    first = frames.put_change(Change("vocabulary", lambda: applied.append("v1")))
    engine = frames.put_change(Change("engine", lambda: applied.append("e")))
    last = frames.put_change(Change("vocabulary", lambda: applied.append("v2")))
    assert first.done.is_set() and first.superseded          # replaced before the worker took it
    assert [frames.take(0), frames.take(0)] == [engine, last]  # in arrival order, before the frame
    assert [f.msg for f in frames.take(0)] == [1]


def test_worker_applies_changes_between_frames_and_reports_their_outcome():
    from ovss_ros.ros.worker import Change

    frames, seen = LatestFrames(), []
    worker = Worker(frames, lambda batch: seen.extend(f.msg for f in batch), lambda batch, e: None)
    worker.start()
    ok = frames.put_change(Change("vocabulary", lambda: "applied"))
    assert ok.done.wait(5) and ok.outcome == "applied" and not ok.superseded

    def refuse():
        raise ValueError("refused")

    bad = frames.put_change(Change("vocabulary", refuse))
    assert bad.done.wait(5) and isinstance(bad.outcome, ValueError)
    frames.put(Frame("cam", "after"))
    assert wait_until(lambda: seen == ["after"], 5)        # the worker goes on after a failed change
    assert worker.stop(5)
