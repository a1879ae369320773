"""Memory of the node over lifecycle cycles: the real node process (autostart off, embedded toy model, preset
tiny, CPU) is driven through configure -> activate -> (a few frames) -> deactivate -> cleanup by its lifecycle
services, and its resident set (VmRSS of /proc/<pid>/status) is read after every cycle. A node that releases
what each cycle takes stays flat after the first cycle (which pays for torch's and the allocator's one-time
growth); the check is the growth from the first cycle to the last, against 5 %.

    .venv/bin/python benchmarks/bench_lifecycle_memory.py --out benchmarks/results/lifecycle_memory_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NS = "/ovss_memory"
LIMIT = 0.05   # the target: RSS after the last cycle within 5 % of RSS after the first


def proc_status(pid: int) -> dict:
    """VmRSS, RssAnon, RssFile, VmHWM and Threads of a process, in MB (threads: a count)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024.0
        elif key == "Threads":
            out[key] = int(value)
    names: dict = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:   # ended meanwhile
            continue
        names[name] = names.get(name, 0) + 1
    out["thread_names"] = dict(sorted(names.items()))
    return out


def start_node(model: str, method: str, vocabulary: list, log: Path, extra: list) -> subprocess.Popen:
    args = [sys.executable, "-m", "ovss_ros.ros.node", "--ros-args", "-r", f"__ns:={NS}",
            "-p", f"model:={model}", "-p", f"method:={method}", "-p", "preset:=tiny", "-p", "device:=cpu",
            "-p", "autostart:=false", "-p", "vocabulary:=[" + ", ".join(f"'{v}'" for v in vocabulary) + "]"]
    for kv in extra:
        args += ["-p", kv.replace("=", ":=", 1)]
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=REPO)


class Client:
    """Lifecycle and frame traffic to the node, from a node spun in a background thread."""

    def __init__(self) -> None:
        import rclpy
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.executors import MultiThreadedExecutor
        from sensor_msgs.msg import Image

        from ovss_ros.ros import qos

        self.node = rclpy.create_node("ovss_memory_bench")
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self.change = self.node.create_client(ChangeState, f"{NS}/ovss_node/change_state")
        self.get = self.node.create_client(GetState, f"{NS}/ovss_node/get_state")
        self.pub = self.node.create_publisher(Image, f"{NS}/image", qos.reliable(2))
        self.labels: dict = {}
        self.cond = threading.Condition()
        self.node.create_subscription(Image, f"{NS}/segmentation/labels", self._on_labels, qos.reliable(10))

    def _on_labels(self, msg) -> None:
        with self.cond:
            self.labels[msg.header.stamp.sec] = time.monotonic()
            self.cond.notify_all()

    def _call(self, client, request, timeout: float):
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            return None
        return future.result()

    def wait_ready(self, proc, timeout: float = 120.0) -> None:
        from lifecycle_msgs.srv import GetState

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if self.get.wait_for_service(timeout_sec=1.0) and self._call(self.get, GetState.Request(), 5):
                return
        raise RuntimeError("the node's lifecycle services did not appear")

    def transition(self, transition_id: int) -> None:
        from lifecycle_msgs.srv import ChangeState

        req = ChangeState.Request()
        req.transition.id = transition_id
        res = self._call(self.change, req, 120)
        if res is None or not res.success:
            raise RuntimeError(f"transition {transition_id} failed")

    def frame(self, sec: int, rgb) -> None:
        from builtin_interfaces.msg import Time

        from ovss_ros.ros.image_codec import array_to_image

        msg = array_to_image(rgb, "rgb8")
        msg.header.stamp, msg.header.frame_id = Time(sec=sec), "bench"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:   # resent until answered: the first may precede matching
            self.pub.publish(msg)
            with self.cond:
                if self.cond.wait_for(lambda: sec in self.labels, 2.0):
                    return
        raise RuntimeError(f"no labels for frame {sec}")

    def wait_subscribed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not subscribe to the camera")
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--frames", type=int, default=3, help="frames segmented while active, per cycle")
    ap.add_argument("--method", default="pnp_ovss", choices=["pnp_ovss", "pgseg"])
    ap.add_argument("--model", default=None, help="checkpoint (default: the method's embedded toy-world model)")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--param", nargs="*", default=[], help="more node parameters, name=value")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lifecycle_memory_cpu.json"))
    args = ap.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(110, 200)))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    import cv2
    import rclpy
    from lifecycle_msgs.msg import Transition

    from ovss_ros.toy_world import MODEL_DIRS
    from ovss_ros.toy_world.sequence import make_sequence
    from ovss_ros.toy_world.world import class_names

    w, h = (int(v) for v in args.size.split("x"))
    images = [cv2.resize(s.rgb, (w, h)) for s in make_sequence(3, 4, size=h)]
    model = args.model or str(MODEL_DIRS[args.method])
    log = Path(tempfile.mkdtemp()) / "node.log"
    rclpy.init()
    client = Client()
    proc = start_node(model, args.method, list(class_names("pattern")), log, args.param)
    rows, sec = [], 1000
    try:
        client.wait_ready(proc)
        start = proc_status(proc.pid)
        print(f"[memory] before the first configure: VmRSS {start['VmRSS']:.1f} MB", flush=True)
        for cycle in range(1, args.cycles + 1):
            t0 = time.monotonic()
            client.transition(Transition.TRANSITION_CONFIGURE)
            client.transition(Transition.TRANSITION_ACTIVATE)
            client.wait_subscribed()
            for _ in range(args.frames):
                sec += 1
                client.frame(sec, images[sec % len(images)])
            active = proc_status(proc.pid)
            client.transition(Transition.TRANSITION_DEACTIVATE)
            client.transition(Transition.TRANSITION_CLEANUP)
            after = proc_status(proc.pid)
            rows.append({"cycle": cycle, "after_cleanup": after, "active": active,
                         "seconds": round(time.monotonic() - t0, 2)})
            print(f"[memory] cycle {cycle:2d}: VmRSS {after['VmRSS']:.1f} MB after cleanup "
                  f"({active['VmRSS']:.1f} active), RssAnon {after['RssAnon']:.1f}, threads {after['Threads']}",
                  flush=True)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        client.executor.shutdown()
        client.node.destroy_node()
        rclpy.try_shutdown()
    if len(rows) < args.cycles:
        print(log.read_text()[-4000:])
        raise SystemExit("the cycles did not all complete")
    first, last = rows[0]["after_cleanup"]["VmRSS"], rows[-1]["after_cleanup"]["VmRSS"]
    peak = max(r["after_cleanup"]["VmRSS"] for r in rows)
    growth = (last - first) / first
    result = {"what": "real node process (autostart off), configure -> activate -> frames -> deactivate -> "
                      "cleanup via the lifecycle services; VmRSS of /proc/<pid>/status after each cleanup",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
              "method": args.method, "model": "embedded toy-world model" if args.model is None else args.model,
              "frames_per_cycle": args.frames, "frame": [w, h], "params": args.param,
              "before_first_configure_mb": start["VmRSS"], "first_cycle_mb": first, "last_cycle_mb": last,
              "max_after_first_mb": peak, "growth_after_first": round(growth, 4), "limit": LIMIT,
              "within_limit": abs(growth) <= LIMIT and (peak - first) / first <= LIMIT, "cycles": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"[memory] {args.cycles} cycles: {first:.1f} MB after the first, {last:.1f} MB after the last "
          f"({growth * 100:+.1f} %), highest {peak:.1f} MB; limit {LIMIT * 100:.0f} %: "
          f"{'within' if result['within_limit'] else 'EXCEEDED'}")
    print(f"[memory] wrote {args.out}")


if __name__ == "__main__":
    main()
