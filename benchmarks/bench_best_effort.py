"""Best-effort camera frames between two processes, with and without config/fastdds_large_frames.xml on each
side: how many of N frames a plain rclpy sensor-data subscriber receives.

One process publishes N rgb8 frames at a fixed rate, best effort (sensor-data QoS, as many camera drivers do)
or reliable (as the node publishes its outputs); a second process subscribes best effort and counts them. The
profile is given to a process through FASTDDS_DEFAULT_PROFILES_FILE. Every combination of (publisher,
subscriber) x (default, profile) is run, for VGA (100 frames at 10 Hz) and 4K (20 frames at 2 Hz) by default.
Prints a table and writes benchmarks/results/best_effort.json.

    .venv/bin/python benchmarks/bench_best_effort.py [--sizes 640x480:100:10,3840x2160:20:2] [--writers best_effort]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_large_frames.xml"
TOPIC, DONE = "/bench_be/image", "/bench_be/done"


def _qos(reliability: str = "best_effort"):
    from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data

    profile = qos_profile_sensor_data   # best effort, keep last 5, volatile
    if reliability == "reliable":   # like the node's outputs: a best-effort reader still matches it
        profile.reliability = ReliabilityPolicy.RELIABLE
    return profile


def _done_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def run_subscriber(timeout: float) -> None:
    """Count frames until the publisher says it is done (or timeout); print one JSON line."""
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    rclpy.init()
    node = rclpy.create_node("bench_be_sub")
    got, done, first = set(), [], []

    def on_image(msg):
        if not first:
            first.append(time.monotonic())
        got.add(msg.header.frame_id)

    node.create_subscription(Image, TOPIC, on_image, _qos())
    node.create_subscription(String, DONE, lambda m: done.append(m.data), _done_qos())
    deadline = time.monotonic() + timeout
    while not done and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    end = time.monotonic() + 1.0   # frames still in transit when "done" arrived
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"received": len(got), "done": bool(done)}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def run_publisher(frames: int, rate: float, width: int, height: int, match_timeout: float, writer: str) -> None:
    import array

    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    rclpy.init()
    node = rclpy.create_node("bench_be_pub")
    pub = node.create_publisher(Image, TOPIC, _qos(writer))
    done = node.create_publisher(String, DONE, _done_qos())
    deadline = time.monotonic() + match_timeout
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    matched = pub.get_subscription_count() >= 1
    time.sleep(0.5)   # the reader's side of the match settles too
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    data = array.array("B")
    data.frombytes(pixels.tobytes())
    msg.data = data
    t0 = time.monotonic()
    for i in range(frames):
        msg.header.frame_id = str(i)
        pub.publish(msg)
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    done.publish(String(data="done"))
    time.sleep(1.5)   # let "done" reach the reader (reliable)
    print(json.dumps({"matched": matched, "published": frames, "bytes": len(data)}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def _env(profile: bool, domain: int) -> dict:
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    return env


def measure(pub_profile: bool, sub_profile: bool, frames: int, rate: float, width: int, height: int,
            writer: str) -> dict:
    domain = random.randint(102, 200)   # outside the tests' 1..101
    me = [sys.executable, str(Path(__file__).resolve())]
    timeout = frames / rate + 60
    sub = subprocess.Popen(me + ["--role", "sub", "--timeout", str(timeout)], env=_env(sub_profile, domain),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = subprocess.Popen(me + ["--role", "pub", "--frames", str(frames), "--rate", str(rate),
                                 "--width", str(width), "--height", str(height), "--writer", writer],
                           env=_env(pub_profile, domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub_out, pub_err = pub.communicate(timeout=timeout + 30)
    sub_out, sub_err = sub.communicate(timeout=timeout + 30)
    try:
        p, s = json.loads(pub_out.strip().splitlines()[-1]), json.loads(sub_out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"a process failed:\npub: {pub_out}{pub_err[-2000:]}\nsub: {sub_out}{sub_err[-2000:]}")
    return {"size": f"{width}x{height}", "bytes": p["bytes"], "rate_hz": rate, "writer": writer,
            "publisher_profile": pub_profile,
            "subscriber_profile": sub_profile, "matched": p["matched"], "published": p["published"],
            "received": s["received"], "fraction": s["received"] / p["published"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=["main", "pub", "sub"], default="main", help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=100, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="640x480:100:10,3840x2160:20:2",
                    help="comma-separated WIDTHxHEIGHT:FRAMES:RATE_HZ")
    ap.add_argument("--writers", default="best_effort,reliable",
                    help="publisher reliability to run (the reader is always best effort): best_effort, reliable")
    ap.add_argument("--writer", default="best_effort", help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=640, help=argparse.SUPPRESS)
    ap.add_argument("--height", type=int, default=480, help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "best_effort.json"))
    args = ap.parse_args(argv)
    if args.role == "sub":
        run_subscriber(args.timeout)
        return 0
    if args.role == "pub":
        run_publisher(args.frames, args.rate, args.width, args.height, match_timeout=30.0, writer=args.writer)
        return 0
    rows = []
    for writer in args.writers.split(","):
        for spec in args.sizes.split(","):
            size, frames, rate = spec.split(":")
            w, h = (int(v) for v in size.lower().split("x"))
            for pub_profile in (False, True):
                for sub_profile in (False, True):
                    row = measure(pub_profile, sub_profile, int(frames), float(rate), w, h, writer)
                    rows.append(row)
                    print(f"{writer:>11} writer {row['size']:>10} ({row['bytes']:>8} B)  publisher "
                          f"{'profile' if pub_profile else 'default':7}  subscriber "
                          f"{'profile' if sub_profile else 'default':7}  received {row['received']:>4} of "
                          f"{row['published']}", flush=True)
    result = {"what": "rgb8 frames to a best-effort reader in another rclpy process, Fast DDS defaults vs "
                      "config/fastdds_large_frames.xml per side",
              "qos": "sensor data (keep last 5); reader best effort, writer as in the row",
              "discovery_range": "LOCALHOST",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average_1min": os.getloadavg()[0],
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
