"""What the ROS node adds to the engine: the real node (its own process, embedded toy model, preset tiny) gets
640x480 rgb8 frames over DDS from a publisher in this process, one at a time as fast as it answers, and its
own per-stage latencies (StageLatency, read from /diagnostics: median and p90 over the measured frames) are
reported for two cases: (a) labels and confidence subscribed, (b) every output subscribed (labels,
confidence, overlay, masks). ROS overhead = receive->publish minus the engine pass, per frame.

    .venv/bin/python benchmarks/bench_node.py --out benchmarks/results/node_cpu.json
    .venv/bin/python benchmarks/bench_node.py --table benchmarks/results/node_cpu.json   # README table
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NS = "/ovss_bench"
TARGET_MS = {"a": 5.0, "b": 15.0}   # the overhead targets (median), measured against, not asserted
CASES = {"a": ("labels", "confidence"), "b": ("labels", "confidence", "overlay", "masks")}
STAGES = ("wait", "decode", "engine", "encode", "publish", "node_overhead", "receive_to_publish",
          "overlay_draw", "overlay_publish", "receive_to_overlay")


class Topic:
    """Messages of one topic with a condition to wait on."""

    def __init__(self) -> None:
        self.msgs, self.cond = [], threading.Condition()

    def __call__(self, msg) -> None:
        with self.cond:
            self.msgs.append((time.monotonic(), msg))
            self.cond.notify_all()

    def wait(self, predicate, timeout: float):
        with self.cond:
            found: list = []

            def match():
                found[:] = [m for m in self.msgs if predicate(m[1])][:1]
                return bool(found)

            self.cond.wait_for(match, timeout)
            return found[0] if found else None


def frames(n: int, w: int, h: int) -> list:
    """Toy-world frames (what the embedded model knows) stretched to w x h."""
    import cv2

    from ovss_ros.toy_world.sequence import make_sequence

    return [cv2.resize(s.rgb, (w, h), interpolation=cv2.INTER_LINEAR) for s in make_sequence(3, n, size=h)]


def start_node(model: str, vocabulary: list, log: Path, threads: int, engine: list,
               device: str = "cpu", method: str = "pnp_ovss") -> subprocess.Popen:
    args = [sys.executable, "-m", "ovss_ros.ros.node", "--ros-args", "-r", f"__ns:={NS}",
            "-p", f"model:={model}", "-p", f"method:={method}", "-p", "preset:=tiny", "-p", f"device:={device}",
            "-p", "diagnostics_period:=0.25",
            "-p", f"torch_threads:={threads}",
            "-p", "vocabulary:=[" + ", ".join(f"'{v}'" for v in vocabulary) + "]"]
    prefix = "pgseg" if method == "pgseg" else "engine"   # the method's knobs (params: engine.* / pgseg.*)
    for kv in engine:
        args += ["-p", f"{prefix}.{kv.replace('=', ':=', 1)}"]
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=REPO)


def node_latency(diag: Topic, after: float, timeout: float = 30.0) -> dict:
    """stage -> {"p50", "p90", "mean"} in ms from the second /diagnostics message received after `after`
    (the first may have been built before the last frame's latencies were added)."""
    name = f"{NS}/ovss_node: segmentation"
    got = []

    def pick(arr):
        st = next((s for s in arr.status if s.name == name), None)
        return st is not None and st

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < 2:
        with diag.cond:
            got = [m for t, m in diag.msgs if t > after and pick(m)]
            if len(got) < 2:
                diag.cond.wait(0.5)
    if len(got) < 2:
        raise RuntimeError("no /diagnostics from the node")
    values = {kv.key: kv.value for kv in pick(got[1]).values}
    out = {}
    for stage in STAGES:
        if f"latency_ms.{stage}" in values:
            out[stage] = {q: float(values[f"latency_ms.{stage}" + ("" if q == "mean" else f".{q}")])
                          for q in ("p50", "p90", "mean")}
    return out


def camera_counts(diag: Topic) -> dict:
    name = f"{NS}/ovss_node: camera '(default)'"
    with diag.cond:
        for _, arr in reversed(diag.msgs):
            st = next((s for s in arr.status if s.name == name), None)
            if st is not None:
                return {kv.key: kv.value for kv in st.values if kv.key in (
                    "received", "processed", "dropped", "overlay_dropped", "published.overlay")}
    return {}


def run_case(node, pub, images, case: str, n: int, warmup: int, collectors: dict, diag: Topic) -> dict:
    from ovss_ros.ros.image_codec import array_to_image

    wanted = CASES[case]
    subs = [node.create_subscription(*collectors[k][1], collectors[k][0], 10) for k in wanted]
    seconds = iter(range(10_000 * (1 + list(CASES).index(case)), 10**9))
    round_trip = []

    def one(measure: bool, wait_all: bool):
        from builtin_interfaces.msg import Time

        sec = next(seconds)
        img = images[sec % len(images)]
        msg = array_to_image(img, "rgb8")
        msg.header.stamp, msg.header.frame_id = Time(sec=sec), "bench"
        t0 = time.monotonic()
        pub.publish(msg)
        got = collectors["labels"][0].wait(lambda m: m.header.stamp.sec == sec, 60)
        if got is None:
            raise RuntimeError(f"no labels for frame {sec}")
        if measure:
            round_trip.append((got[0] - t0) * 1e3)
        if wait_all:   # warm-up: until every subscribed output arrives (publishers matched)
            return all(collectors[k][0].wait(lambda m: m.header.stamp.sec == sec, 2.0) for k in wanted)
        return True

    for _ in range(200):   # warm-up until every subscribed topic is matched and delivering
        if one(False, True):
            break
    else:
        raise RuntimeError(f"case {case}: {wanted} never all arrived")
    for _ in range(warmup):
        one(False, False)
    for _ in range(n):
        one(True, False)
    if "overlay" in wanted:   # the last overlay comes from its own thread
        last = max(m.header.stamp.sec for _, m in collectors["labels"][0].msgs)
        collectors["overlay"][0].wait(lambda m: m.header.stamp.sec == last, 10)
    stages = node_latency(diag, time.monotonic())
    for s in subs:
        node.destroy_subscription(s)
    overhead = stages["node_overhead"]
    return {"subscribed": list(wanted), "frames": n, "stages_ms": stages,
            "overhead_ms": {"p50": overhead["p50"], "p90": overhead["p90"]}, "target_overhead_ms": TARGET_MS[case],
            "round_trip_ms": {"p50": statistics.median(round_trip),
                              "p90": sorted(round_trip)[int(0.9 * (len(round_trip) - 1))]},
            "counters": camera_counts(diag)}


def markdown(result: dict) -> str:
    stage = lambda c, k: f"{c['stages_ms'][k]['p50']:.1f} / {c['stages_ms'][k]['p90']:.1f}" if k in c["stages_ms"] else "–"
    lines = ["| subscribed | decode | engine | encode | publish | **ROS overhead** | target | receive→overlay (own thread) |",
             "|---|---|---|---|---|---|---|---|"]
    for key, c in result["cases"].items():
        o = c["overhead_ms"]
        lines.append(f"| ({key}) {', '.join(c['subscribed'])} | {stage(c, 'decode')} | {stage(c, 'engine')} | "
                     f"{stage(c, 'encode')} | {stage(c, 'publish')} | **{o['p50']:.1f} / {o['p90']:.1f}** | "
                     f"≤ {c['target_overhead_ms']:g} | {stage(c, 'receive_to_overlay')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="pnp_ovss", choices=["pnp_ovss", "pgseg"])
    ap.add_argument("--model", default=None, help="checkpoint (default: the method's embedded toy-world model)")
    ap.add_argument("--device", default="cpu", help="the node's device parameter (cpu, cuda, auto)")
    ap.add_argument("--frames", type=int, default=100, help="measured frames per case (the node's window is 100)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--torch-threads", type=int, default=0, help="the node's torch_threads (0 = all cores)")
    ap.add_argument("--engine", nargs="*", default=None,
                    help="the method's engine parameters for the node, name=value (default for pnp_ovss: CRF at "
                         "320 px, realtime-like; the tiny preset's full-resolution CRF takes 1.5 s per VGA frame "
                         "here; none for pgseg)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/node.json"))
    ap.add_argument("--table", type=Path, help="print the markdown table of an existing result JSON and exit")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return
    # an isolated DDS domain on this machine only, set before rclpy is imported (the node inherits it)
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(110, 200)))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image

    from ovss_ros.msg import SegmentationMasks
    from ovss_ros.ros import qos
    from ovss_ros.toy_world import MODEL_DIRS
    from ovss_ros.toy_world.world import class_names

    w, h = (int(v) for v in args.size.split("x"))
    images = frames(10, w, h)
    rclpy.init()
    node = rclpy.create_node("ovss_bench")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    out = qos.reliable(10)
    collectors = {"labels": (Topic(), (Image, f"{NS}/segmentation/labels")),
                  "confidence": (Topic(), (Image, f"{NS}/segmentation/confidence")),
                  "overlay": (Topic(), (Image, f"{NS}/segmentation/overlay")),
                  "masks": (Topic(), (SegmentationMasks, f"{NS}/segmentation/masks"))}
    diag = Topic()
    node.create_subscription(DiagnosticArray, "/diagnostics", diag, 50)
    pub = node.create_publisher(Image, f"{NS}/image", out)   # reliable, like most camera drivers
    log = Path(tempfile.mkdtemp()) / "node.log"
    model = args.model or str(MODEL_DIRS[args.method])
    if args.engine is None:
        args.engine = ["postprocess_max_side=320"] if args.method == "pnp_ovss" else []
    proc = start_node(model, list(class_names("pattern")), log, args.torch_threads, args.engine, args.device,
                      args.method)
    result = {"what": "real node process, preset tiny, one 640x480 rgb8 frame at a time over DDS (reliable), next "
                      "frame when the labels arrive; per-stage median/p90 ms from the node's /diagnostics over the "
                      "measured frames; ROS overhead = receive->publish minus the engine pass, per frame",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": (f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
                         if args.device == "cpu" else args.device),
              "method": args.method,
              "model": (f"embedded toy-world {'BLIP' if args.method == 'pnp_ovss' else 'PGSeg'}" if args.model is None
                        else args.model),
              "frame": [w, h], "torch_threads": args.torch_threads, "engine": args.engine, "cases": {}}
    try:
        deadline = time.monotonic() + 120
        while pub.get_subscription_count() == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node did not subscribe:\n{log.read_text()}")
            time.sleep(0.1)
        for key in CASES:
            for k in CASES[key]:   # labels is always subscribed per case, like every other output
                collectors[k][0].msgs.clear()
            c = run_case(node, pub, images, key, args.frames, args.warmup, collectors, diag)
            c["load_average_1min"] = os.getloadavg()[0]
            result["cases"][key] = c
            o = c["overhead_ms"]
            print(f"[bench] ({key}) {', '.join(c['subscribed'])}: " + "  ".join(
                f"{s} {v['p50']:.1f}/{v['p90']:.1f}" for s, v in c["stages_ms"].items()) + " ms (median/p90)")
            print(f"[bench] ({key}) ROS overhead {o['p50']:.1f} ms median, {o['p90']:.1f} ms p90 "
                  f"(target <= {c['target_overhead_ms']:g} ms); round trip {c['round_trip_ms']['p50']:.1f} ms; "
                  f"counters {c['counters']}", flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
