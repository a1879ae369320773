"""What the node's parts receive: small typed collaborators instead of the node itself.

The frame pipeline, the vocabulary path and the overlay thread each get only what they use: the engine (or
the slot holding the current configuration's engine), the publishers of every camera behind the publish gate,
the runtime settings, the log, the clock, the counters /diagnostics reads. The node builds these once and
wires the parts; tests hand in stand-ins that have the same few attributes."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, ContextManager, Dict, Optional, Protocol, Sequence

from rclpy.parameter import Parameter

from .stats import CameraStats, StageLatency
from .vocabulary import vocabulary_names


@dataclass
class CameraOutputs:
    """The publishers of one camera (None where that output does not exist on this machine)."""
    labels: Any
    confidence: Any
    overlay: Any
    masks: Any
    class_map: Any
    label_info: Optional[Any] = None


class PublishGate:
    """Publishing happens only while the gate is open. Closing waits for a publish in progress, so
    publishers are never destroyed under it, and nothing is published once the node is going away."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = True

    def __enter__(self) -> bool:
        self._lock.acquire()
        return self.open

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def reopen(self) -> None:
        with self._lock:
            self.open = True

    def close(self, timeout: float = 1.0) -> None:
        if self._lock.acquire(timeout=timeout):
            self.open = False
            self._lock.release()
        else:   # a publish is stuck: still refuse every later one
            self.open = False


class Publishers:
    """The publishers of every camera and the one gate every publish goes through. The node fills `cameras`
    at configure and empties it at cleanup."""

    def __init__(self, gate: Optional[PublishGate] = None, cameras: Optional[Dict[str, CameraOutputs]] = None):
        self.gate = gate if gate is not None else PublishGate()
        self.cameras: Dict[str, CameraOutputs] = cameras if cameras is not None else {}

    def of(self, camera: str) -> Optional[CameraOutputs]:
        return self.cameras.get(camera)

    def all(self) -> list:
        return list(self.cameras.values())

    def release(self, destroy) -> None:
        """Cleanup: forget every camera's publishers, handing each to `destroy` (the node's
        destroy_lifecycle_publisher). The gate is closed first, so no publish is under way."""
        cameras = list(self.cameras.values())
        self.cameras.clear()   # first: a part reading a camera's publishers meanwhile finds none, not a destroyed one
        for outs in cameras:
            for pub in vars(outs).values():
                if pub is not None:
                    destroy(pub)


class Settings:
    """The runtime parameter values read per frame: one snapshot dict, replaced whole when parameters are
    set (one reference swap, so a reader needs no lock and sees one consistent set)."""

    def __init__(self, values: dict) -> None:
        self.values = values


class Log(Protocol):
    def info(self, text: str) -> None: ...

    def warn_once(self, key: tuple, text: str) -> None: ...


class NodeLog:
    """The node's logger, with warnings logged once per key (a reason repeated every frame is logged once)."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self._warned: set = set()
        self._lock = threading.Lock()

    def info(self, text: str) -> None:
        self._logger.info(text)

    def warn_once(self, key: tuple, text: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            if len(self._warned) > 1000:   # distinct reasons (e.g. vocabulary texts) must not grow memory
                self._warned.clear()
            self._warned.add(key)
        self._logger.warning(text)


class Clock(Protocol):
    """rclpy's Clock: now() gives a Time with .nanoseconds and .to_msg() (sim time aware on the node)."""
    def now(self) -> Any: ...


@dataclass(frozen=True)
class Runtime:
    """What every part reads from the node while it runs."""
    settings: Settings
    log: Log
    clock: Clock

    def now(self) -> float:
        """The clock's time in seconds."""
        return self.clock.now().nanoseconds * 1e-9


@dataclass
class Counters:
    """What the frame path counts and /diagnostics reports: per-camera stats and stage latencies."""
    cameras: Dict[str, CameraStats] = field(default_factory=dict)
    latency: StageLatency = field(default_factory=StageLatency)

    def camera(self, name: str) -> CameraStats:
        return self.cameras.setdefault(name, CameraStats())

    def received(self, name: str) -> bool:
        """A frame arrived for camera `name`: counted, True, if it is a configured camera."""
        st = self.cameras.get(name)
        if st is None:
            return False
        st.input_rate.tick()
        st.last_received = time.monotonic()
        return True


class FrameEngine(Protocol):
    """What a batch of frames needs of the engine (EngineState): the lock held for the whole pass, the loaded
    model (None while released) and the vocabulary version (0: none yet)."""
    lock: ContextManager
    segmenter: Optional[Any]
    version: int


class VocabularyEngine(Protocol):
    """What the vocabulary path needs of the engine (EngineState)."""
    checker: Any
    config: Any
    names: tuple
    version: int

    def apply_vocabulary(self, names: Sequence[str]) -> bool: ...

    def apply_config(self) -> None: ...


@dataclass
class EngineSlot:
    """The engine of the current configuration, or None (unconfigured): the node puts it in at configure and
    takes it out at cleanup; the vocabulary path, which outlives configurations, reads it here."""
    engine: Optional[VocabularyEngine] = None


class OutputSizes(Protocol):
    """output_size_from's latest (width, height) per camera, or None (SizeFollower)."""
    def size(self, camera: str) -> Optional[tuple]: ...


class VocabularyParameter(Protocol):
    """The `vocabulary` parameter: the names it holds, and writing the vocabulary in use back to it."""
    def names(self) -> list: ...

    def show(self, names: list) -> None: ...


class ParameterStore(Protocol):
    """The parameter face of an rclpy node."""
    def get_parameter(self, name: str) -> Any: ...

    def set_parameters(self, parameters: list) -> Any: ...


class NodeVocabularyParameter:
    """VocabularyParameter over the node's parameters."""

    def __init__(self, parameters: ParameterStore) -> None:
        self._parameters = parameters

    def names(self) -> list:
        return vocabulary_names(self._parameters.get_parameter("vocabulary").value)

    def show(self, names: list) -> None:
        self._parameters.set_parameters([Parameter("vocabulary", Parameter.Type.STRING_ARRAY, names or [""])])
