"""The vocabulary path in one process, without DDS: callbacks only record, requests superseded while pending
are never checked or prepared (and a superseded service call is answered so), the newest one wins also when
two executor threads record out of order, and a refused newest request leaves the vocabulary in use."""
import threading
import time
from types import SimpleNamespace

import pytest
from rclpy.clock import Clock
from std_msgs.msg import String

from ovss_ros.engine.vocabulary import VocabularyError
from ovss_ros.ros.parts import EngineSlot, NodeVocabularyParameter, Publishers, Runtime, Settings
from ovss_ros.ros.vocabulary_path import SUPERSEDED, VocabularyPath
from ovss_ros.ros.worker import LatestFrames, Worker
from ovss_ros.srv import SetVocabulary


class FakeEngine:
    """Counts what the worker checks and prepares (apply_vocabulary does both in the real EngineState)."""

    def __init__(self) -> None:
        self.names, self.version, self.applied = (), 0, []

    def apply_vocabulary(self, names) -> bool:
        names = tuple(names)
        self.applied.append(names)
        if not names or "bad" in names:
            raise VocabularyError("vocabulary is empty" if not names else "unknown word 'bad'")
        if names == self.names:
            return False
        self.names, self.version = names, self.version + 1
        return True


class StandIns:
    """What the vocabulary path is given: the engine's slot, publishers (no camera), settings, a log that
    keeps every warning, the clock, and the `vocabulary` parameter over a plain table of values."""

    def __init__(self) -> None:
        self.engine, self.frames = FakeEngine(), LatestFrames()
        self.params = {"vocabulary": [""]}
        self.warnings: list = []
        self.runtime = Runtime(Settings({"presence_threshold": 0.5, "model": "fake"}), self, Clock())

    # the Log
    def info(self, text) -> None:
        pass

    def warn_once(self, key, text) -> None:
        self.warnings.append(text)

    # the parameter store under NodeVocabularyParameter
    def get_parameter(self, name):
        return SimpleNamespace(value=self.params[name])

    def set_parameters(self, params) -> None:
        for prm in params:
            self.params[prm.name] = prm.value


@pytest.fixture
def rig():
    node = StandIns()
    path = VocabularyPath(EngineSlot(node.engine), Publishers(), node.runtime, NodeVocabularyParameter(node))
    path.start(node.frames)
    worker = Worker(node.frames, lambda batch: None, lambda batch, exc: None)
    yield node, path, worker
    path.stop()
    worker.stop(2.0)


def call(path, classes):
    """on_service on its own thread, as the executor runs it; returns (thread, response holder)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(path.on_service(SetVocabulary.Request(classes=classes),
                                                                    SetVocabulary.Response())))
    t.start()
    return t, out


def wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_a_storm_is_checked_and_prepared_once_for_the_newest(rig):
    node, path, worker = rig
    # the worker is not running yet: the first request goes to its queue, every later one waits in the mailbox
    path.on_topic(String(data="red 0, dog"))
    assert wait(lambda: node.frames._changes)
    for i in range(1, 200):
        path.on_topic(String(data=f"red {i}, dog"))
    first_call, first = call(path, ["green", "dog"])
    assert wait(lambda: path._mailbox._pending.names == ("green", "dog"))
    last_call, last = call(path, ["blue", "cat"])
    first_call.join(5)   # superseded by the newer call: answered at once, without the worker
    assert first and not first[0].success and first[0].message == SUPERSEDED
    assert node.engine.applied == []   # nothing was checked on the callers' threads
    worker.start()
    last_call.join(10)
    assert last and last[0].success and list(last[0].class_names) == ["blue", "cat"], last
    # the one taken before the storm went on, then the newest: nothing in between was parsed or checked
    assert node.engine.applied == [("red 0", "dog"), ("blue", "cat")]
    assert node.params["vocabulary"] == ["blue", "cat"]   # the parameter mirrors what is in use


def test_the_newest_wins_when_threads_record_out_of_order(rig):
    node, path, worker = rig
    worker.start()
    began, go, replies = threading.Event(), threading.Event(), {}

    def older():   # taken first (numbered as the executor began it), but slow to record
        path.group.beginning_execution(None)
        began.set()
        go.wait(5)
        replies["older"] = path.on_service(SetVocabulary.Request(classes=["red"]), SetVocabulary.Response())

    t = threading.Thread(target=older)
    t.start()
    assert began.wait(5)
    path.group.beginning_execution(None)   # the next request, taken after it, records at once
    replies["newer"] = path.on_service(SetVocabulary.Request(classes=["dog"]), SetVocabulary.Response())
    go.set()
    t.join(10)
    assert replies["newer"].success and list(replies["newer"].class_names) == ["dog"]
    assert not replies["older"].success and replies["older"].message == SUPERSEDED
    assert node.engine.names == ("dog",) and ("red",) not in node.engine.applied


def test_a_refused_newest_request_keeps_the_vocabulary_in_use(rig):
    node, path, worker = rig
    worker.start()
    t, ok = call(path, ["dog"])
    t.join(10)
    assert ok[0].success and node.engine.names == ("dog",)
    t, refused = call(path, ["bad"])
    t.join(10)
    assert not refused[0].success and "unknown word" in refused[0].message
    assert list(refused[0].class_names) == ["dog"] and node.params["vocabulary"] == ["dog"]
    path.on_topic(String(data=""))
    assert wait(lambda: any("vocabulary is empty" in w for w in node.warnings)), node.warnings
    assert node.engine.names == ("dog",)


def test_cleanup_answers_a_pending_call(rig):
    node, path, worker = rig   # the worker never runs: the first call waits in its queue, the second here
    first_call, first = call(path, ["red"])
    assert wait(lambda: node.frames._changes)
    second_call, second = call(path, ["dog"])
    assert wait(lambda: path._mailbox._pending is not None)
    path.stop()
    second_call.join(5)
    assert second and not second[0].success and "cleaning up" in second[0].message
    worker.stop(2.0)   # closes the queue: the call in it is answered too
    first_call.join(5)
    assert first and not first[0].success and "not applied" in first[0].message
