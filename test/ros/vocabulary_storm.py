"""A vocabulary storm against a running ovss_node: frames stream at `fps` while the vocabulary changes `rate`
times a second through one input (latched topic, volatile topic, service or parameter). Measures what reached
the node and what was answered, every call's answer delay, the node's CPU, and whether and when the node
settled on the last change. test_vocabulary_storm.py asserts on short storms; benchmarks/
bench_vocabulary_storm.py records 20 s ones. Needs only an rclpy node spun elsewhere (no pytest)."""
from __future__ import annotations

import array
import itertools
import os
import random
import statistics
import threading
import time

from rostest_helpers import Collector, wait_until

INPUTS = ("latched", "volatile", "service", "parameter")   # and "none": frames only, the baseline
# words of the toy world, which the tests' tiny BLIP and the embedded toy model both know
WORDS = ["plain", "striped", "checked", "red", "green", "blue", "yellow"]
STAMPS = itertools.count(1_000)


def vocabularies(seed: int, classes: tuple = (1, 4)):
    """Vocabularies of classes[0] to classes[1] names, e.g. ["striped red", "plain blue"]."""
    rng = random.Random(seed)
    while True:
        yield rng.sample([f"{p} {c}" for p in WORDS[:3] for c in WORDS[3:]], rng.randint(*classes))


def frame(sec: int, h: int, w: int):
    from sensor_msgs.msg import Image

    rng = random.Random(sec)
    msg = Image(height=h, width=w, encoding="rgb8", step=w * 3)
    msg.header.stamp.sec = sec
    msg.header.frame_id = "cam"
    msg.data = array.array("B", bytes(rng.randrange(256) for _ in range(64)) * (h * w * 3 // 64))
    return msg


def _values(diag_msg, name: str) -> dict | None:
    st = next((s for s in diag_msg.status if s.name == name), None)
    return None if st is None else {kv.key: kv.value for kv in st.values}


def _cpu_seconds(pid) -> float | None:
    if pid is None:
        return None
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_storm(node, ns: str, how: str, seconds: float, rate: float = 50.0, fps: float = 10.0,
              size: tuple = (48, 64), classes: tuple = (1, 4), seed: int = 0, pid=None, answer_timeout: float = 30.0,
              settle_timeout: float = 30.0) -> dict:
    """Storm the node `{ns}/ovss_node` (already active with a vocabulary) through `how`; returns the figures.
    `node` is an rclpy node spun by an executor in another thread; its entities are removed afterwards."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from ovss_ros.msg import ClassMap
    from ovss_ros.ros import qos
    from ovss_ros.srv import SetVocabulary

    assert how in (*INPUTS, "none"), how
    full = f"{ns}/ovss_node"
    made: list = []   # (destroy method name, entity)

    def make(kind: str, entity):
        made.append((kind, entity))
        return entity

    labels, class_map, diag = Collector(), Collector(), Collector()
    make("subscription", node.create_subscription(Image, f"{ns}/segmentation/labels", labels, qos.reliable(100)))
    make("subscription", node.create_subscription(ClassMap, f"{ns}/segmentation/class_map", class_map, qos.latched()))
    make("subscription", node.create_subscription(DiagnosticArray, "/diagnostics", diag, 50))
    cam = make("publisher", node.create_publisher(Image, f"{ns}/image", qos.reliable(5)))
    get_params = make("client", node.create_client(GetParameters, f"{full}/get_parameters"))
    sender = None
    if how in ("latched", "volatile"):
        sender = make("publisher", node.create_publisher(
            String, f"{ns}/vocabulary", qos.latched() if how == "latched" else qos.reliable(10)))
    elif how != "none":
        srv_type, name = ((SetVocabulary, f"{ns}/set_vocabulary") if how == "service"
                          else (SetParameters, f"{full}/set_parameters"))
        # answers come back as fast as calls go out: a client that stalls a moment behind rclpy's default
        # response queue of 10 would lose some itself, which is not what is measured here
        sender = make("client", node.create_client(srv_type, name, qos_profile=qos.reliable(1000)))
    try:
        camera_status, engine_status = f"{full}: camera '(default)'", f"{full}: segmentation"
        if not (wait_until(lambda: cam.get_subscription_count() > 0, 30)
                and (wait_until(lambda: sender.get_subscription_count() > 0, 30) if how in ("latched", "volatile")
                     else sender is None or sender.wait_for_service(timeout_sec=30))
                and get_params.wait_for_service(timeout_sec=30)):
            raise RuntimeError("the node's topics or services did not appear")
        t_begin = time.monotonic()
        # a readiness wait, not a measured bound: a node starting under load may take longer than one period
        before = diag.wait_for(lambda m: _values(m, camera_status) is not None, 30, newest=True)
        if before is None:
            raise RuntimeError("no diagnostics from the node")
        before_cam, before_engine = _values(before, camera_status), _values(before, engine_status)
        stop = threading.Event()
        sent_frames: list = []
        calls: list = []            # [sent, answered or None, response or None]
        calls_lock = threading.Lock()
        changes = vocabularies(seed, classes)
        last: list = []
        count = itertools.count()   # changes sent

        def send_change(names: list) -> None:
            if how in ("latched", "volatile"):
                sender.publish(String(data=", ".join(names)))
                return
            if how == "service":
                req = SetVocabulary.Request(classes=names)
            else:
                req = SetParameters.Request(parameters=[Parameter(name="vocabulary", value=ParameterValue(
                    type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=names))])
            entry = [time.monotonic(), None, None]
            with calls_lock:
                calls.append(entry)

            def done(future, entry=entry):
                entry[1], entry[2] = time.monotonic(), future.result()

            sender.call_async(req).add_done_callback(done)

        def storm() -> None:   # on a fixed schedule, so a slow send does not lower the rate
            start = time.monotonic()
            for i in itertools.count():
                if stop.wait(max(0.0, start + i / rate - time.monotonic())):
                    return
                last[:] = next(changes)
                send_change(last)
                next(count)

        def camera() -> None:
            start = time.monotonic()
            for i in itertools.count():
                if stop.wait(max(0.0, start + i / fps - time.monotonic())):
                    return
                sec = next(STAMPS)
                sent_frames.append(sec)
                cam.publish(frame(sec, *size))

        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        threads = [threading.Thread(target=camera, daemon=True)]
        if how != "none":
            threads.append(threading.Thread(target=storm, daemon=True))
        for t in threads:
            t.start()
        time.sleep(seconds)   # the storm's length: nothing to wait for, the threads run on their schedules
        stop.set()
        for t in threads:
            t.join()
        t_stop = time.monotonic()
        cpu1 = _cpu_seconds(pid)
        final = list(last)
        sent = set(sent_frames)

        def settled() -> bool:
            newest = max(class_map.msgs, key=lambda m: m.vocabulary_version, default=None)
            if newest is None or [c.class_name for c in newest.classes] != final:
                return False
            fut = get_params.call_async(GetParameters.Request(names=["vocabulary"]))
            got = threading.Event()
            fut.add_done_callback(lambda _: got.set())
            return got.wait(5) and list(fut.result().values[0].string_array_value) == final

        is_settled = how != "none" and bool(wait_until(settled, settle_timeout, 0.1))
        t_settled = time.monotonic()
        answered_all = wait_until(lambda: all(c[1] is not None for c in calls), answer_timeout)
        # counters after the last frame was worked off: the first diagnostics published a second later
        wait_until(lambda: not labels.times or time.monotonic() - labels.times[-1] > 1.0, 10)
        mark, seen = time.monotonic(), len(diag.msgs)   # /diagnostics carries other nodes' arrays too

        def ours_after():
            return next((m for m, t in zip(diag.msgs[seen:], diag.times[seen:])
                         if t > mark and _values(m, camera_status) is not None), None)

        after = wait_until(ours_after, 10)
        after_cam = _values(after, camera_status) if after is not None else {}
        after_engine = _values(after, engine_status) if after is not None else {}

        def delta(key, a, b):
            return int(a.get(key, 0)) - int(b.get(key, 0)) if a and b else None

        answered = len({m.header.stamp.sec for m in labels.msgs} & sent)
        ours = [t for m, t in zip(list(diag.msgs), list(diag.times)) if t0 <= t <= t_stop
                and _values(m, engine_status) is not None]
        reached = delta("received", after_cam, before_cam)
        delays = sorted(c[1] - c[0] for c in calls if c[1] is not None)
        result = {
            "input": how, "seconds": round(t_stop - t0, 2), "changes_per_s": rate, "frames_per_s": fps,
            "frame_size": list(size), "classes_per_change": list(classes), "changes_sent": None, "frames_sent": len(sent),
            "frames_reached_node": reached, "frames_answered": answered,
            "answered_share": round(answered / reached, 3) if reached else None,
            "frames_processed_counter": delta("processed", after_cam, before_cam),
            "frames_dropped_counter": delta("dropped", after_cam, before_cam),
            "text_preparations": delta("text_preparations", after_engine, before_engine),
            "vocabulary_versions": delta("vocabulary_version", after_engine, before_engine),
            "node_cpu_s_per_s": (round((cpu1 - cpu0) / (t_stop - t0), 2) if cpu0 is not None else None),
            "diagnostics_max_gap_s": round(max((y - x for x, y in zip(ours, ours[1:])), default=float("inf")), 2),
            "class_map_versions_ordered": [m.vocabulary_version for m in class_map.msgs] == sorted(
                m.vocabulary_version for m in class_map.msgs),
            "settled_on_last": is_settled,
            "settle_s_after_storm": round(t_settled - t_stop, 2) if is_settled else None,
            "last_vocabulary": final, "setup_s": round(t0 - t_begin, 2),
        }
        if how in ("service", "parameter"):
            refused = [c[2] for c in calls if c[2] is not None and not _success(c[2])]
            result.update({
                "changes_sent": len(calls), "calls_answered": len(delays),
                "calls_unanswered": len(calls) - len(delays), "all_answered": bool(answered_all),
                "answer_delay_s": ({"p50": round(statistics.median(delays), 3),
                                    "p99": round(delays[int(0.99 * (len(delays) - 1))], 3),
                                    "max": round(delays[-1], 3)} if delays else None),
                "calls_refused": len(refused),
                "refusal_reasons": sorted({_reason(r) for r in refused})[:5],
            })
            if how == "service":
                last_reply = calls[-1][2] if calls else None
                result["last_call"] = (None if last_reply is None else
                                       {"success": last_reply.success, "message": last_reply.message,
                                        "class_names": list(last_reply.class_names)})
        else:
            result["changes_sent"] = next(count)
        return result
    finally:
        for kind, entity in reversed(made):
            getattr(node, f"destroy_{kind}")(entity)


def _success(response) -> bool:
    return response.success if hasattr(response, "success") else all(r.successful for r in response.results)


def _reason(response) -> str:
    if hasattr(response, "message"):
        return response.message
    return "; ".join(r.reason for r in response.results if not r.successful)
