"""The worker's pipeline in process, with a spy engine and fake publishers: optional outputs are computed only
while their topic has a subscriber, every camera's newest frame goes through one batched engine pass, a
frame the engine refuses costs only itself, and the overlay thread is bounded, gated and stoppable."""
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from ovss_ros.engine.image_io import ImageError
from ovss_ros.engine.result import SegmentationResult
from ovss_ros.ros import outputs
from rclpy.clock import Clock

from ovss_ros.ros.frame_pipeline import FramePipeline
from ovss_ros.ros.overlay_thread import OverlayJob, OverlayPublisher
from ovss_ros.ros.parts import CameraOutputs, Counters, PublishGate, Publishers, Runtime, Settings
from ovss_ros.ros.stats import StageLatency
from ovss_ros.ros.worker import Frame
from rostest_helpers import image_msg, scene, stamp, to_array, wait_until

NAMES = ("red circle", "dog")
BAD_HEIGHT = 7   # frames this tall are refused by the spy engine, as the real one refuses unusable images


class SpyEngine:
    """Records every call with the outputs it was asked for; returns labels 1 on the left half."""

    def __init__(self):
        self.calls = []

    def _one(self, rgb, outputs):
        if rgb.shape[0] == BAD_HEIGHT:
            raise ImageError(f"image of height {BAD_HEIGHT} is refused")
        h, w = rgb.shape[:2]
        labels = np.zeros((h, w), np.uint8)
        labels[:, : w // 2] = 1
        maps = np.stack([np.where(labels == 1, 0.9, 0.1)]).astype(np.float32)
        return SegmentationResult(labels=labels, class_names=NAMES, class_ids=np.array([1]),
                                  present=np.array([True, False]), presence=np.array([0.9, 0.1], np.float32),
                                  presence_kind="itm_probability", class_maps=maps if "class_maps" in outputs else None,
                                  confidence=maps[0] if "confidence" in outputs else None,
                                  timings={"total": 0.001})

    def segment_batch(self, images, presents=None, outputs=("labels",)):
        self.calls.append(("batch", len(images), frozenset(outputs)))
        return [self._one(im, outputs) for im in images]

    def segment(self, image, present=None, outputs=("labels",)):
        self.calls.append(("one", 1, frozenset(outputs)))
        return self._one(image, outputs)


class FakePublisher:
    def __init__(self, subscribers=0):
        self.subscribers, self.msgs = subscribers, []
        self.lock = threading.Lock()

    def get_subscription_count(self):
        return self.subscribers

    def publish(self, msg):
        with self.lock:
            self.msgs.append(msg)


def camera_outputs(**subscribers):
    return CameraOutputs(**{k: FakePublisher(subscribers.get(k, 0)) for k in
                            ("labels", "confidence", "overlay", "masks", "class_map")})


class KeyLog:
    """The parts' Log: notes the key of every warning (the node logs each key once)."""

    def __init__(self, keys: list) -> None:
        self.keys = keys

    def info(self, text: str) -> None:
        pass

    def warn_once(self, key: tuple, text: str) -> None:
        self.keys.append(key)


SETTINGS = {"max_frame_age": 0.0, "future_stamp_tolerance": 0.5, "max_image_pixels": 10**6,
            "debug_extra_latency": 0.0, "publish_labels": True, "publish_confidence": True,
            "publish_overlay": True, "publish_masks": True, "publish_class_map_per_frame": False,
            "overlay_alpha": 0.5, "presence_threshold": 0.5, "model": "spy"}


class Rig:
    def __init__(self, cameras=("",)):
        self.spy = SpyEngine()
        self.engine = SimpleNamespace(lock=threading.RLock(), segmenter=self.spy, version=1)
        self.pubs = {c: camera_outputs() for c in cameras}
        self.settings = dict(SETTINGS)   # the snapshot the pipeline reads: tests change it in place
        self.counters, self.warned = Counters(), []
        self.stats, self.latency = self.counters.cameras, self.counters.latency
        self.publishers = Publishers(PublishGate(), self.pubs)
        self.gate = self.publishers.gate
        self.overlays = OverlayPublisher(self.publishers, self.latency)
        self.overlays.start()
        runtime = Runtime(Settings(self.settings), KeyLog(self.warned), Clock())   # system time, as time.time
        self.pipeline = FramePipeline(self.engine, self.publishers, runtime, self.counters, self.overlays)

    def run(self, *frames):
        self.pipeline([Frame(cam, msg) for cam, msg in frames])


@pytest.fixture
def rig():
    r = Rig(("front", "rear"))
    yield r
    assert r.overlays.stop(5)


@pytest.fixture
def encoded(monkeypatch):
    """How often each optional output was encoded (the wrappers call the real encoders)."""
    counts = {"confidence": 0, "masks": 0, "overlay": 0}
    for kind, fn in (("confidence", "confidence_image"), ("masks", "masks_message"), ("overlay", "overlay_image")):
        real = getattr(outputs, fn)

        def wrapper(*args, _real=real, _kind=kind, **kwargs):
            counts[_kind] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(outputs, fn, wrapper)
    return counts


def frame(sec, h=24, w=32):
    return image_msg(scene(h, w, seed=sec % 3), "rgb8", sec)


def test_optional_outputs_only_for_subscribed_topics(rig, encoded):
    pubs = rig.pubs["front"]
    rig.run(("front", frame(1)))   # nobody listens: labels only, nothing else computed or encoded
    assert rig.spy.calls == [("one", 1, {"labels"})]
    assert encoded == {"confidence": 0, "masks": 0, "overlay": 0}
    assert len(pubs.labels.msgs) == 1 and not (pubs.confidence.msgs or pubs.masks.msgs)
    assert rig.pipeline.engine_outputs == ("labels",)

    pubs.confidence.subscribers = 1
    rig.run(("front", frame(2)))
    assert rig.spy.calls[-1] == ("one", 1, {"labels", "confidence"})
    assert [m.header.stamp.sec for m in pubs.confidence.msgs] == [2] and encoded["masks"] == 0

    pubs.masks.subscribers = pubs.overlay.subscribers = 1
    rig.run(("front", frame(3)))
    assert rig.spy.calls[-1] == ("one", 1, {"labels", "confidence", "class_maps"})
    assert [m.header.stamp.sec for m in pubs.masks.msgs] == [3]
    assert wait_until(lambda: len(pubs.overlay.msgs) == 1, 5)   # drawn on the overlay thread
    over = pubs.overlay.msgs[0]
    assert over.header.stamp.sec == 3 and over.encoding == "rgb8" and to_array(over).shape == (24, 32, 3)
    assert rig.stats["front"].published == {"labels": 3, "confidence": 2, "masks": 1}

    rig.settings["publish_overlay"] = False   # the parameter still switches a subscribed output off
    rig.settings["publish_confidence"] = False
    rig.run(("front", frame(4)))
    assert rig.spy.calls[-1] == ("one", 1, {"labels", "class_maps"})
    assert wait_until(lambda: rig.overlays.idle(), 5) and encoded["overlay"] == 1 and encoded["confidence"] == 2


def test_every_cameras_frame_goes_through_one_batch(rig):
    rig.pubs["rear"].confidence.subscribers = 1
    rig.run(("front", frame(10)), ("rear", frame(11, 30, 40)))   # frames may differ in size
    assert rig.spy.calls == [("batch", 2, {"labels", "confidence"})]   # the union of what is wanted
    assert [m.header.stamp.sec for m in rig.pubs["front"].labels.msgs] == [10]
    assert [(m.header.stamp.sec, m.width) for m in rig.pubs["rear"].labels.msgs] == [(11, 40)]
    assert not rig.pubs["front"].confidence.msgs and len(rig.pubs["rear"].confidence.msgs) == 1
    assert rig.stats["front"].processed == rig.stats["rear"].processed == 1
    assert (rig.pipeline.batches, rig.pipeline.last_batch, rig.pipeline.max_batch) == (1, 2, 2)
    lat = rig.latency.summary()
    assert {"decode", "engine", "encode", "publish", "wait", "receive_to_publish"} <= set(lat)
    assert lat["receive_to_publish"]["p90"] >= lat["engine"]["p50"] > 0


def test_a_frame_the_engine_refuses_does_not_cost_the_other_cameras_frame(rig):
    for _ in range(2):
        rig.run(("front", frame(20, h=BAD_HEIGHT)), ("rear", frame(21)))
    # the batch is refused as a whole, then redone frame by frame: only the bad one is skipped
    assert [c[:2] for c in rig.spy.calls] == [("batch", 2), ("one", 1), ("one", 1)] * 2
    assert not rig.pubs["front"].labels.msgs and len(rig.pubs["rear"].labels.msgs) == 2
    assert rig.stats["front"].bad.total == 2 and rig.stats["rear"].processed == 2
    # one reason, one key: the node's warn_once logs it once
    assert set(rig.warned) == {("front", "bad", f"image of height {BAD_HEIGHT} is refused")}
    rig.run(("front", frame(22)))   # the camera keeps being served
    assert [m.header.stamp.sec for m in rig.pubs["front"].labels.msgs] == [22]


def test_no_vocabulary_and_stale_frames_are_counted_per_camera(rig):
    rig.engine.version = 0
    rig.run(("front", frame(30)), ("rear", frame(31)))
    assert rig.spy.calls == [] and rig.stats["front"].no_vocabulary == rig.stats["rear"].no_vocabulary == 1
    rig.engine.version = 1
    rig.settings["max_frame_age"] = 5.0
    old = frame(0)
    old.header.stamp = stamp(int(time.time()) - 60)
    rig.run(("front", old), ("rear", frame(int(time.time()))))
    assert rig.stats["front"].stale.total == 1 and rig.spy.calls == [("one", 1, {"labels"})]


def job(cam="front", sec=1):
    return OverlayJob(cam, scene(24, 32), np.ones((24, 32), np.uint8), NAMES, frame(sec).header, 0.5,
                      time.monotonic())


def test_overlay_thread_keeps_only_the_newest_and_respects_the_gate():
    gate, pubs = PublishGate(), {"front": camera_outputs()}
    overlays = OverlayPublisher(Publishers(gate, pubs))
    overlays.start()
    published = pubs["front"].overlay.msgs
    try:
        gate.__enter__()   # hold the gate, as a publish in progress would: the thread waits there
        overlays.submit(job(sec=1))
        assert wait_until(lambda: overlays.busy and not overlays._pending, 5)
        assert not overlays.submit(job(sec=2)) and overlays.submit(job(sec=3))   # 3 replaced 2
        assert overlays.dropped == {"front": 1}
        gate.open = False   # the node closes the gate (deactivate, shutdown) ...
        gate.__exit__()
        assert wait_until(overlays.idle, 5) and published == []   # ... nothing is published after
        gate.reopen()
        overlays.submit(job(sec=4))
        assert wait_until(lambda: len(published) == 1, 5) and published[0].header.stamp.sec == 4
        # an overlay taken before a deactivate (clear) is not published after the next activate
        gate.__enter__()
        overlays.submit(job(sec=5))
        assert wait_until(lambda: overlays.busy and not overlays._pending, 5)
        overlays.clear()
        gate.__exit__()
        assert wait_until(overlays.idle, 5) and [m.header.stamp.sec for m in published] == [4]
        assert overlays.published == {"front": 1}
    finally:
        t0 = time.monotonic()
        assert overlays.stop(5) and time.monotonic() - t0 < 1.0
    assert not overlays.submit(job(sec=6))   # stopped: refuses quietly


def test_latency_summary_has_median_and_p90():
    lat = StageLatency(n=10)
    for ms in range(1, 21):   # only the last 10 count: 11..20 ms
        lat.add({"engine": ms / 1000})
    s = lat.summary()["engine"]
    assert s["n"] == 10 and abs(s["p50"] - 0.0155) < 1e-9 and abs(s["p90"] - 0.0191) < 1e-9
    assert abs(s["mean"] - 0.0155) < 1e-9
