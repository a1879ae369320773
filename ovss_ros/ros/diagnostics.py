"""The node's /diagnostics message: device, model, vocabulary, per-camera rates, drops and stage latencies.

Levels describe now, not history: a camera is WARN while bad or stale frames arrived in the recent window
(or nothing arrived at all while active, or a matched best-effort publisher stays silent), ERROR while frames
fail inside the engine; totals stay in the values."""
from __future__ import annotations

import math
from typing import Optional, Protocol

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from .parts import Counters


class CameraSources(Protocol):
    """What the camera statuses need of the subscriptions (CameraInputs)."""
    def topics(self) -> dict: ...

    def reliability(self) -> dict: ...

    def silence_message(self, camera: str, now: float) -> str: ...


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, float):
        value = "nan" if math.isnan(value) else f"{value:.4g}"
    return KeyValue(key=key, value=str(value))


def latency_values(latency: dict) -> list:
    """latency: stage -> seconds (a mean) or StageLatency.summary()'s {"mean", "p50", "p90"}: latency_ms.<stage>
    is the mean, latency_ms.<stage>.p50 / .p90 the median and 90th percentile."""
    out = []
    for k, v in sorted(latency.items()):
        if isinstance(v, dict):
            out += [_kv(f"latency_ms.{k}", v["mean"] * 1000.0), _kv(f"latency_ms.{k}.p50", v["p50"] * 1000.0),
                    _kv(f"latency_ms.{k}.p90", v["p90"] * 1000.0)]
        else:
            out.append(_kv(f"latency_ms.{k}", v * 1000.0))
    return out


def engine_status(name: str, state: str, engine: dict, latency: dict) -> DiagnosticStatus:
    """engine: device, model, preset, vocabulary_version, vocabulary, ..., error (None or the reason)."""
    main = DiagnosticStatus(name=f"{name}: segmentation", hardware_id=str(engine.get("device", "")))
    main.values = ([_kv("state", state)] + [_kv(k, v) for k, v in engine.items() if k != "error"]
                   + latency_values(latency))
    if engine.get("error"):
        main.level, main.message = DiagnosticStatus.ERROR, str(engine["error"])
    elif state != "active":
        main.level, main.message = DiagnosticStatus.WARN, f"node is {state}"
    elif not engine.get("vocabulary_version"):
        main.level, main.message = DiagnosticStatus.WARN, "no vocabulary yet: frames are skipped"
    else:
        main.level, main.message = DiagnosticStatus.OK, "segmenting"
    return main


def camera_status(name: str, cam: str, values: dict, window: float, silent_for: Optional[float],
                  failure: str = "", silent_publisher: str = "") -> DiagnosticStatus:
    """values: the camera's counters (recent_* are counts in the last `window` seconds). silent_for: seconds
    since its last frame (None = no frame yet), or None when the camera is not expected to send (inactive).
    silent_publisher: why a matched best-effort publisher delivers nothing and what to do (CameraInputs), or
    "": a WARN of its own, since the generic silence WARN would not say what to fix."""
    st = DiagnosticStatus(name=f"{name}: camera '{cam or '(default)'}'", hardware_id=cam)
    st.values = [_kv(k, v) for k, v in values.items()]
    if values.get("recent_failed", 0):
        st.level, st.message = DiagnosticStatus.ERROR, f"frames fail in the engine: {failure}"
    elif silent_publisher:
        st.level, st.message = DiagnosticStatus.WARN, silent_publisher
    elif silent_for is not None and silent_for > window:
        st.level = DiagnosticStatus.WARN
        st.message = (f"no frame received in the last {window:g} s" if math.isfinite(silent_for)
                      else "no frame received yet")
    elif values.get("recent_bad", 0) or values.get("recent_stale", 0):
        st.level, st.message = DiagnosticStatus.WARN, f"frames skipped in the last {window:g} s (bad or stale)"
    else:
        st.level, st.message = DiagnosticStatus.OK, "ok"
    return st


def camera_values(cam: str, st, frames, topic: str, reliability: str, overlays, now: float) -> dict:
    """The counters of one camera: frames (LatestFrames) counts received and dropped, st (CameraStats) the
    rest, overlays (OverlayPublisher or None) the overlays published and dropped."""
    values = {"topic": topic, "received": frames.received.get(cam, 0) if frames else 0,
              "dropped": frames.dropped.get(cam, 0) if frames else 0, "processed": st.processed,
              "stale": st.stale.total, "bad": st.bad.total, "failed": st.failed.total,
              "recent_stale": st.stale.recent(now), "recent_bad": st.bad.recent(now),
              "recent_failed": st.failed.recent(now), "no_vocabulary": st.no_vocabulary,
              "input_hz": st.input_rate.rate(), "output_hz": st.output_rate.rate(),
              "stamp_to_output_s": st.last_age, "input_reliability": reliability}
    for kind in ("labels", "confidence", "masks"):
        values[f"published.{kind}"] = st.published.get(kind, 0)
    values["published.overlay"] = overlays.published.get(cam, 0) if overlays else 0
    values["overlay_dropped"] = overlays.dropped.get(cam, 0) if overlays else 0
    return values


def vocabulary_values(engine) -> dict:
    """The vocabulary in use and its version, and the text preparations so far (engine: EngineState or None)."""
    return {"vocabulary_version": engine.version if engine else 0,
            "vocabulary": ", ".join(engine.names) if engine else "",
            "text_preparations": engine.preparations if engine else 0}


def batch_values(pipeline) -> dict:
    """What the last engine pass was asked for, and how many frames it took (pipeline: FramePipeline or
    None while unconfigured)."""
    if pipeline is None:
        return {}
    return {"engine_outputs": "+".join(pipeline.engine_outputs), "batches": pipeline.batches,
            "last_batch": pipeline.last_batch, "max_batch": pipeline.max_batch}


def camera_statuses(name: str, counters: Counters, frames, inputs: CameraSources, overlays, window: float,
                    activated_at: Optional[float], now: float) -> list:
    """One status per configured camera. activated_at: monotonic time of activation, None while inactive."""
    topics, reliability = inputs.topics(), inputs.reliability()
    statuses = []
    for cam, st in list(counters.cameras.items()):
        values = camera_values(cam, st, frames, topics.get(cam, ""), reliability.get(cam, ""), overlays, now)
        since = st.last_received or activated_at
        silent = now - since if (activated_at is not None and since is not None) else None
        statuses.append(camera_status(name, cam, values, window, silent, st.failed.last_reason,
                                      inputs.silence_message(cam, now)))
    return statuses


def build(stamp, statuses: list) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = statuses
    return arr
