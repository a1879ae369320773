"""The node's /diagnostics message: device, model, vocabulary, per-camera rates, drops and stage latencies."""
from __future__ import annotations

import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, float):
        value = "nan" if math.isnan(value) else f"{value:.4g}"
    return KeyValue(key=key, value=str(value))


def build(stamp, node_name: str, state: str, engine: dict, cameras: dict, latency: dict) -> DiagnosticArray:
    """engine: device, model, preset, vocabulary_version, vocabulary, error (optional).
    cameras: name -> dict of counters (received, dropped, processed, stale, bad, input_hz, output_hz, age_s).
    latency: stage -> mean seconds."""
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    main = DiagnosticStatus(name=f"{node_name}: segmentation", hardware_id=str(engine.get("device", "")))
    values = [_kv("state", state)] + [_kv(k, v) for k, v in engine.items() if k != "error"]
    values += [_kv(f"latency_ms.{k}", v * 1000.0) for k, v in sorted(latency.items())]
    main.values = values
    if engine.get("error"):
        main.level, main.message = DiagnosticStatus.ERROR, str(engine["error"])
    elif state != "active":
        main.level, main.message = DiagnosticStatus.WARN, f"node is {state}"
    elif not engine.get("vocabulary_version"):
        main.level, main.message = DiagnosticStatus.WARN, "no vocabulary yet: frames are skipped"
    else:
        main.level, main.message = DiagnosticStatus.OK, "segmenting"
    arr.status.append(main)
    for cam, c in sorted(cameras.items()):
        st = DiagnosticStatus(name=f"{node_name}: camera '{cam or '(default)'}'", hardware_id=cam)
        st.values = [_kv(k, v) for k, v in c.items()]
        if c.get("bad", 0) or c.get("stale", 0):
            st.level, st.message = DiagnosticStatus.WARN, "some frames skipped (bad or stale)"
        else:
            st.level, st.message = DiagnosticStatus.OK, "ok"
        arr.status.append(st)
    return arr
