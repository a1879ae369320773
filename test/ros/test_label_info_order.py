"""When the class map and LabelInfo go out relative to the frames' outputs, in one process without DDS:
activate opens the publish gate and publishes them in the same hold of its lock (a frame's outputs, published
under that lock too, cannot come first), a closed gate publishes nothing, and a changed threshold (not an
unchanged one) republishes them."""
import threading

from rclpy.clock import Clock

from ovss_ros.ros.parts import CameraOutputs, EngineSlot, PublishGate, Publishers, Runtime, Settings
from ovss_ros.ros.vocabulary_path import VocabularyPath


class CountingLock:
    """The gate's lock, numbering each hold."""

    def __init__(self) -> None:
        self._lock, self.holds = threading.Lock(), 0

    def acquire(self, *args, **kwargs) -> bool:
        got = self._lock.acquire(*args, **kwargs)
        self.holds += got
        return got

    def release(self) -> None:
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()


class NumberedGate(PublishGate):
    """A PublishGate that notes in which hold of its lock it was opened."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = CountingLock()
        self.opened_in = None

    @property
    def open(self) -> bool:
        return self._open

    @open.setter
    def open(self, value: bool) -> None:
        self._open = value
        if value and isinstance(getattr(self, "_lock", None), CountingLock):
            self.opened_in = self._lock.holds


class Recorder:
    """A publisher that notes what it sent, whether the gate was open, and in which hold of its lock."""

    def __init__(self, kind: str, log: list, gate: NumberedGate) -> None:
        self.kind, self.log, self.gate = kind, log, gate

    def publish(self, msg) -> None:
        self.log.append((self.kind, msg, self.gate.open, self.gate._lock.holds))


class FakeEngine:
    def __init__(self, names=("dog", "car"), version=1) -> None:
        self.names, self.version, self.applied = tuple(names), version, 0

    def apply_config(self) -> None:
        self.applied += 1


class UnusedParameter:
    """The `vocabulary` parameter, which publishing class maps never reads or writes."""

    def names(self) -> list:
        raise AssertionError("not used here")

    def show(self, names) -> None:
        raise AssertionError("not used here")


class FakeNode:
    """The vocabulary path's collaborators, with publishers that record."""

    def __init__(self, engine) -> None:
        self.engine, self.log, self.gate = engine, [], NumberedGate()
        self.gate.close()   # as the node starts
        self.settings = Settings({"presence_threshold": 0.5, "model": "m"})
        self.publishers = Publishers(self.gate, {"front": CameraOutputs(*(Recorder(k, self.log, self.gate) for k in (
            "labels", "confidence", "overlay", "masks", "class_map", "label_info")))})

    def info(self, text) -> None:
        pass

    def warn_once(self, key, text) -> None:
        raise AssertionError(f"unexpected warning: {text}")

    def path(self) -> VocabularyPath:
        return VocabularyPath(EngineSlot(self.engine), self.publishers, Runtime(self.settings, self, Clock()),
                              UnusedParameter())


def sent(node, kind="label_info") -> list:
    return [entry for entry in node.log if entry[0] == kind]


def test_activate_opens_the_gate_with_label_info_already_out():
    node = FakeNode(FakeEngine())
    path = node.path()
    path.publish_class_maps()   # a vocabulary applied while inactive: nothing, the gate is closed
    assert node.log == [] and not node.gate.open
    path.publish_class_maps(reopen=True)
    assert node.gate.open
    (_, info, opened, hold), = sent(node)
    assert opened and hold == node.gate.opened_in   # in the hold that opened the gate: no frame got in first
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "background"), (1, "dog"), (2, "car")]
    assert info.header.frame_id == "" and abs(info.threshold - 0.5) < 1e-6
    assert [e[0] for e in node.log] == ["class_map", "label_info"]


def test_no_vocabulary_yet_opens_the_gate_and_publishes_nothing():
    node = FakeNode(FakeEngine(names=(), version=0))
    node.path().publish_class_maps(reopen=True)
    assert node.gate.open and node.log == []


def test_a_new_threshold_republishes_and_an_unchanged_one_does_not():
    node = FakeNode(FakeEngine())
    path = node.path()
    path.publish_class_maps(reopen=True)
    path.apply_engine_settings()   # another engine setting: the threshold is the one already out
    assert node.engine.applied == 1 and len(sent(node)) == 1
    node.settings.values = {**node.settings.values, "presence_threshold": 0.6}
    path.apply_engine_settings()
    assert node.engine.applied == 2 and abs(sent(node)[-1][1].threshold - 0.6) < 1e-6
    assert len(sent(node, "class_map")) == 2
