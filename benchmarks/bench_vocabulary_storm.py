"""Vocabulary storms against the real node: for each input (latched topic, volatile topic, service, parameter)
a fresh node process (embedded toy-world BLIP, preset tiny, CPU) gets `--rate` vocabulary changes per second
for `--seconds` while frames stream at `--fps`; plus a baseline with frames only. Reports, per input, the
frames that reached the node and those answered, text preparations, the node's CPU, every call's answer
delay (service, parameter) and whether the node settled on the last change (test/ros/vocabulary_storm.py
does the measuring; test_vocabulary_storm.py asserts the same on shorter storms).

    .venv/bin/python benchmarks/bench_vocabulary_storm.py --out benchmarks/results/vocabulary_storm_cpu.json
    .venv/bin/python benchmarks/bench_vocabulary_storm.py --node-repo /tmp/old_checkout --out before.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test" / "ros"))


# the vocabulary each node starts with: 6 names, the storms' mean (4 to 8), so the frames-only baseline costs
# the engine about as much per frame as the storms do (PnP-OVSS's pass grows with the classes)
START_VOCABULARY = ["plain red", "plain blue", "striped green", "striped yellow", "checked red", "checked blue"]


def start_node(repo: Path, ns: str, log: Path) -> subprocess.Popen:
    from ovss_ros.toy_world import MODEL_DIRS

    args = [sys.executable, "-m", "ovss_ros.ros.node", "--ros-args", "-r", f"__ns:={ns}",
            "-p", f"model:={MODEL_DIRS['pnp_ovss']}", "-p", "preset:=tiny", "-p", "device:=cpu",
            "-p", "diagnostics_period:=0.5", "-p", "vocabulary:=[" + ", ".join(f"'{v}'" for v in START_VOCABULARY) + "]"]
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=repo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", nargs="*", default=["none", "latched", "volatile", "service", "parameter"])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=50.0, help="vocabulary changes per second")
    ap.add_argument("--fps", type=float, default=24.0, help="frames per second")
    ap.add_argument("--size", default="64x48", help="frame WxH")
    ap.add_argument("--classes", type=int, nargs=2, default=[4, 8], help="names per change: from, to")
    ap.add_argument("--node-repo", type=Path, default=REPO, help="checkout whose node runs (to measure another "
                                                                  "version with the same storm)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/vocabulary_storm.json"))
    args = ap.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(110, 200)))   # before rclpy loads
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from ovss_ros.msg import ClassMap
    from ovss_ros.ros import qos
    from rostest_helpers import Collector
    from vocabulary_storm import run_storm

    w, h = (int(v) for v in args.size.split("x"))
    rclpy.init()
    node = rclpy.create_node("ovss_storm_bench")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    result = {"what": f"{args.seconds:g} s of {args.rate:g} vocabulary changes/s through one input, frames "
                      f"{w}x{h} rgb8 at {args.fps:g}/s (reliable); a fresh node per input; answered_share = frames "
                      "answered (labels received) / frames that reached the node (its received counter)",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
              "model": "embedded toy-world BLIP, preset tiny",
              "node_commit": subprocess.run(["git", "-C", str(args.node_repo), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True).stdout.strip(),
              "runs": {}}
    for i, how in enumerate(args.inputs):
        ns = f"/ovss_storm_bench{i}"
        log = Path(tempfile.mkdtemp()) / "node.log"
        proc = start_node(args.node_repo, ns, log)
        maps = Collector()
        sub = node.create_subscription(ClassMap, f"{ns}/segmentation/class_map", maps, qos.latched())
        try:
            if maps.wait_for(lambda m: m.vocabulary_version >= 1, 120) is None:
                raise RuntimeError(f"node did not start:\n{log.read_text()[-3000:]}")
            load = os.getloadavg()[0]
            r = run_storm(node, ns, how, args.seconds, args.rate, args.fps, (h, w), tuple(args.classes), seed=i,
                          pid=proc.pid)
            r["load_average_1min_before"] = load
            r["node_alive"] = proc.poll() is None
            result["runs"][how] = r
            print(f"[storm] {how}: " + json.dumps({k: v for k, v in r.items() if k not in ("last_vocabulary",)}),
                  flush=True)
        finally:
            node.destroy_subscription(sub)
            proc.send_signal(2)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(1.0)   # let the node's DDS participant leave before the next one starts
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"[storm] written {args.out}", flush=True)
    # a call never answered (the old node) makes rclpy's teardown abort; everything is written: leave now
    os._exit(0)


if __name__ == "__main__":
    main()
