"""The one path of a vocabulary: the `vocabulary` topic, parameter and `set_vocabulary` service all end here.

Callbacks only record a request (O(1)): the newest one, numbered in the order the executor took it, replaces
any older request still pending, which is never checked (a superseded service call is answered so). A
dispatcher thread hands the newest pending request to the worker, which checks it (tokenizer, engine
settings), prepares the text between frames, publishes the class map and sets the `vocabulary` parameter to
what is in use, so `ros2 param get` never shows anything else. In a storm, the dispatcher leaves the worker
to the frames for a while after each preparation, so text preparation gets at most TEXT_SHARE of it."""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from ovss_ros.msg import ClassMap
from ovss_ros.engine.vocabulary import VocabularyError, normalize_vocabulary

from . import outputs
from .parts import EngineSlot, Publishers, Runtime, VocabularyParameter
from .vocabulary import parse_vocabulary_text
from .worker import Change, LatestFrames

SERVICE_WAIT = 30.0         # longest a set_vocabulary call waits for its answer (a frame may hold the worker)
# set_vocabulary's request queue: bursts of calls wait there instead of being dropped (rclpy's default is 10)
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
TEXT_SHARE = 0.2            # in a storm, the most of the worker's time that text preparation may take
MIN_GAP = 0.02              # s between two applied vocabularies, at least
SUPERSEDED = "superseded by a newer vocabulary request before it was applied; not checked"


@dataclass
class Request:
    """One vocabulary request: names (parameter, service) or the topic's text, parsed when it is applied."""
    seq: int
    source: str
    names: Optional[tuple] = None
    text: Optional[str] = None
    reply: Optional[tuple] = None      # (success, message, version, names in use) once answered
    answered: threading.Event = field(default_factory=threading.Event)

    def answer(self, success: bool, message: str, engine) -> None:
        if self.reply is None:
            self.reply = (success, message, engine.version if engine is not None else 0,
                          list(engine.names) if engine is not None else [])
            self.answered.set()


class TakeOrder(ReentrantCallbackGroup):
    """Reentrant (a waiting service call never holds back the next request), and numbers each callback as the
    executor begins it: rclpy takes an entity's next message only after the previous one was taken, so the
    numbers follow arrival order even when two threads run the callbacks. The callback reads its number on
    the same thread, before it yields."""

    def __init__(self, numbers) -> None:
        super().__init__()
        self._numbers = numbers
        self._local = threading.local()

    def beginning_execution(self, entity) -> bool:
        self._local.number = next(self._numbers)
        return super().beginning_execution(entity)

    def take_number(self) -> Optional[int]:
        number, self._local.number = getattr(self._local, "number", None), None
        return number


class Mailbox:
    """The newest pending request of one configuration, and the dispatcher thread that feeds it to the
    worker one at a time."""

    def __init__(self, frames: LatestFrames, apply, slot: EngineSlot) -> None:
        self._frames, self._apply = frames, apply   # apply(request) -> seconds it took (worker thread)
        self._slot = slot                           # the engine in use, for answers
        self._cond = threading.Condition()
        self._pending: Optional[Request] = None
        self._newest = 0                # highest number recorded so far
        self._ready_at = 0.0            # monotonic time before which no new request goes to the worker
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ovss-vocabulary", daemon=True)
        self._thread.start()

    def record(self, request: Request, engine) -> None:
        with self._cond:
            stale = self._closed or request.seq < self._newest
            if not stale:
                self._newest = request.seq
                old, self._pending = self._pending, request
                self._cond.notify()
        if stale:   # a newer request was recorded first (another executor thread), or we are closing
            request.answer(False, SUPERSEDED if not self._closed else "the node is cleaning up; not applied",
                           engine)
        elif old is not None:
            old.answer(False, SUPERSEDED, engine)

    def _run(self) -> None:
        while True:
            with self._cond:
                # a newer request may replace the pending one while we leave the worker to the frames
                while not self._closed and (self._pending is None or time.monotonic() < self._ready_at):
                    self._cond.wait(None if self._pending is None else self._ready_at - time.monotonic())
                if self._closed:
                    return
                request, self._pending = self._pending, None
            change = self._frames.put_change(Change("vocabulary", lambda: self._apply(request)))
            while not change.done.wait(1.0):   # the worker applies it, or finishes it unapplied when it stops
                if self._closed:
                    break
            if request.reply is None:   # the worker stopped first, or applying raised
                reason = change.outcome if isinstance(change.outcome, Exception) else "the node is cleaning up"
                request.answer(False, f"not applied: {reason}", self._slot.engine)
            took = change.outcome if isinstance(change.outcome, float) else 0.0
            with self._cond:
                self._ready_at = time.monotonic() + max(MIN_GAP, took * (1 - TEXT_SHARE) / TEXT_SHARE)

    def close(self, engine) -> None:
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, None
            self._cond.notify()
        if pending is not None:
            pending.answer(False, "the node is cleaning up; not applied", engine)


class VocabularyPath:
    """Outlives configurations: the engine is read from its slot, the frames queue is given at start()."""

    def __init__(self, slot: EngineSlot, publishers: Publishers, runtime: Runtime,
                 parameter: VocabularyParameter) -> None:
        self.slot = slot
        self.publishers = publishers
        self.runtime = runtime
        self.parameter = parameter
        self._mirroring = threading.local()   # set while the vocabulary parameter is written to mirror the engine
        self._numbers = itertools.count(1)    # one order for every source
        self.group = TakeOrder(self._numbers)   # the topic's and the service's callbacks
        self._mailbox: Optional[Mailbox] = None
        self._published_threshold: Optional[float] = None   # in the class maps last published

    @property
    def mirroring(self) -> bool:
        return getattr(self._mirroring, "on", False)

    def check(self, names, source: str, config=None) -> tuple:
        """Checked names, or VocabularyError (logged once per distinct reason). The parameter's on-set
        callback and configure use it; topic and service requests are checked when applied. config: the
        engine settings to check against (default: the engine's); required while unconfigured."""
        try:
            if not names:
                raise VocabularyError("vocabulary is empty")
            engine = self.slot.engine
            if engine is not None:
                return engine.checker.check_vocabulary(list(names), config or engine.config)
            # unconfigured: the model is not known yet, only the settings' limits apply
            return normalize_vocabulary(list(names), config.max_classes, config.max_class_name_length)
        except VocabularyError as exc:
            self._refused(source, exc)
            raise

    def _refused(self, source: str, exc: Exception) -> None:
        self.runtime.log.warn_once(("vocabulary", source, str(exc)), f"vocabulary from {source} refused: {exc}")

    # -- recording: executor threads, O(1) ------------------------------------------------------
    def start(self, frames: LatestFrames) -> None:
        """Configure: open the path for this configuration (its worker's queue) and apply the `vocabulary`
        parameter."""
        self._mailbox = Mailbox(frames, self._apply, self.slot)
        names = self.parameter.names()
        if not names:
            return
        try:
            self.submit(self.check(names, "parameter"), "parameter")
        except ValueError:
            self.mirror()   # refused: the parameter shows what is in use (nothing)

    def stop(self) -> None:
        """Cleanup: a request still pending is answered unapplied; one with the worker ends with it."""
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is not None:
            mailbox.close(self.slot.engine)

    def _record(self, request: Request) -> Request:
        mailbox = self._mailbox
        if mailbox is None:
            request.answer(False, "the node is not configured", self.slot.engine)
        else:
            mailbox.record(request, self.slot.engine)
        return request

    def _number(self) -> int:
        number = self.group.take_number()
        return number if number is not None else next(self._numbers)

    def submit(self, names: tuple, source: str) -> Request:
        """A request checked elsewhere (the parameter); a newer one supersedes it while it is pending."""
        return self._record(Request(next(self._numbers), source, names=tuple(names)))

    def on_topic(self, msg: String) -> None:
        self._record(Request(self._number(), "topic", text=msg.data))

    def on_service(self, request, response):
        req = self._record(Request(self._number(), "service", names=tuple(request.classes)))
        if not req.answered.wait(SERVICE_WAIT):   # the worker is stuck in a frame: say so, keep the request
            req.answer(False, f"not applied within {SERVICE_WAIT:g} s (the worker is busy); still pending",
                       self.slot.engine)
        response.success, response.message, response.vocabulary_version, response.class_names = req.reply
        return response

    # -- applying: worker thread ----------------------------------------------------------------
    def _apply(self, request: Request) -> float:
        """The one place a vocabulary takes effect; returns the seconds it took."""
        engine, t0 = self.slot.engine, time.perf_counter()
        try:
            names = parse_vocabulary_text(request.text) if request.text is not None else request.names
            changed = engine.apply_vocabulary(names)
        except ValueError as exc:   # VocabularyTextError and VocabularyError are ValueErrors
            self._refused(request.source, exc)
            request.answer(False, str(exc), engine)
            self.mirror()
            return time.perf_counter() - t0
        if changed:
            self.runtime.log.info(f"vocabulary v{engine.version} from {request.source}: {list(engine.names)}")
            self.publish_class_maps()
        request.answer(True, f"vocabulary version {engine.version}: {len(engine.names)} classes" if changed
                       else "unchanged", engine)
        self.mirror()
        return time.perf_counter() - t0

    def mirror(self) -> None:
        """Keep `ros2 param get vocabulary` equal to the vocabulary in use, without re-applying it."""
        engine = self.slot.engine
        names = list(engine.names) if engine is not None else []
        if self.parameter.names() == names:
            return
        self._mirroring.on = True
        try:
            self.parameter.show(names)
        finally:
            self._mirroring.on = False

    def publish_class_maps(self, reopen: bool = False) -> None:
        """Class map and LabelInfo of every camera. Called by the worker right after a vocabulary change,
        before it segments the next frame, and by activate with reopen=True: the gate opens with them under one
        hold of its lock, so no frame's outputs go out first (Nav2's layer needs LabelInfo before masks).
        Header: the node clock's time of publication, no frame_id (the map holds for all of a camera's
        images)."""
        engine, gate, settings = self.slot.engine, self.publishers.gate, self.runtime.settings.values
        with gate as open_:
            if reopen:
                gate.open = True
            elif not open_:
                return   # inactive: published again on activate
            if engine is None or not engine.version:
                return
            header = ClassMap().header
            header.stamp = self.runtime.clock.now().to_msg()
            threshold = self._published_threshold = settings["presence_threshold"]
            for outs in self.publishers.all():
                outs.class_map.publish(outputs.class_map_message(engine.names, engine.version, header, threshold,
                                                                 settings["model"]))
                if outs.label_info is not None:
                    outs.label_info.publish(outputs.label_info_message(engine.names, header, threshold))

    def apply_engine_settings(self) -> None:
        """Worker: new engine settings take effect; a changed threshold goes out in the class maps before any
        frame is segmented with it."""
        engine = self.slot.engine
        if engine is None:
            return   # cleaned up meanwhile
        engine.apply_config()
        if self.runtime.settings.values["presence_threshold"] != self._published_threshold:
            self.publish_class_maps()
