"""The demo: the real ROS 2 node segments a toy-world rosbag with the embedded toy BLIP (or toy PGSeg).

    python -m ovss_ros.demo.toy_demo --out out/demo [--method pgseg]

Writes the toy bag (camera + ground truth), starts `ovss-node` (tiny preset, the method's embedded model, offline),
plays the bag into it with `ovss-bag-play --as-fast-as-processed`, records the node's outputs, then writes
the segmented output bag, overlay PNGs and an animated GIF, and prints frames, mIoU against the ground
truth, FPS and latency.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..bag_types import typestore
from ..evaluation.runner import Accumulator
from ..ros.image_codec import image_to_array
from ..toy_world import MODEL_DIRS
from ..toy_world.bag import GT_TOPIC, IMAGE_TOPIC, read_images, write_toy_bag
from ..toy_world.world import class_names

LABELS = "/camera/segmentation/labels"
OVERLAY = "/camera/segmentation/overlay"


class Recorder:
    """Collects the node's labels/overlay images and /diagnostics latencies."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        rclpy.init()
        self.node = rclpy.create_node("ovss_toy_demo_recorder")
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.msgs = {LABELS: [], OVERLAY: []}
        self.arrival: list[float] = []
        self.latency: dict[str, list[float]] = {}
        for topic in self.msgs:
            self.node.create_subscription(Image, topic, lambda m, t=topic: self._image(t, m), qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def wait_for_node(self, timeout: float, alive=lambda: True) -> bool:
        """True once the node's labels and overlay publishers are discovered: labels published before
        that would be lost to this (volatile) recorder."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            if all(self.node.count_publishers(t) > 0 for t in self.msgs):
                return True
            time.sleep(0.05)
        return False

    def _spin(self):
        import rclpy
        while not self._stop.is_set():
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def _image(self, topic, msg):
        self.msgs[topic].append(msg)
        if topic == LABELS:
            self.arrival.append(time.perf_counter())

    def _diag(self, msg):
        for status in msg.status:
            for kv in status.values:
                if kv.key.startswith("latency_ms."):
                    try:
                        self.latency.setdefault(kv.key[len("latency_ms."):], []).append(float(kv.value))
                    except ValueError:
                        pass

    def close(self):
        import rclpy
        self._stop.set()
        self._thread.join()
        self.node.destroy_node()
        rclpy.shutdown()


def _labels(msg) -> np.ndarray:
    return image_to_array(msg)[..., 0]


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def write_output_bag(path: Path, src: Path, rec: Recorder) -> None:
    """The input topics plus the node's labels and overlay, in a new rosbag2."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Reader, Writer

    store = typestore(own_messages=False)    # camera, ground truth and the node's images: standard types
    with Reader(src) as r, Writer(path, version=9) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=store) for c in r.connections}
        for c, t, raw in r.messages():
            w.write(conns[c.id], t, raw)
        for topic, msgs in rec.msgs.items():
            conn = w.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
            for m in msgs:
                w.write(conn, _stamp(m), serialize_message(m))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--method", default="pnp_ovss", choices=sorted(MODEL_DIRS),
                    help="pnp_ovss (embedded toy BLIP) or pgseg (embedded toy PGSeg)")
    ap.add_argument("--model", help="checkpoint directory (default: the method's embedded toy model)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--scale", type=int, default=3, help="upscale factor of the saved overlays")
    a = ap.parse_args(argv)
    model = a.model or str(MODEL_DIRS[a.method])
    if a.model is None and not (MODEL_DIRS[a.method] / "config.json").is_file():
        print(f"demo: the embedded {a.method} model is not at {model} yet (the toy PGSeg is trained by "
              "`ovss-train-toy --method pgseg`); pass --model DIR", file=sys.stderr)
        return 1
    from PIL import Image

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    bag, seg_bag = out / "toy_bag", out / "segmented_bag"
    for p in (bag, seg_bag):
        if p.exists():
            import shutil
            shutil.rmtree(p)
    write_toy_bag(bag, seed=a.seed, n_frames=a.frames)
    names = list(class_names("pattern"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bindir = Path(sys.executable).parent
    rec = Recorder()
    node = subprocess.Popen(
        [str(bindir / "ovss-node"), "--ros-args", "-r", "__ns:=/camera", "-r", f"image:={IMAGE_TOPIC}",
         "-p", f"model:={model}", "-p", f"method:={a.method}", "-p", f"preset:={a.preset}", "-p", "device:=cpu",
         "-p", "local_files_only:=true", "-p", f"vocabulary:={json.dumps(names)}",
         # the player is reliable and sends each frame once: "auto" would switch the reader to reliable
         # a moment after the player appears, and a frame in flight during that switch is lost
         "-p", "qos.input_reliability:=reliable"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if not rec.wait_for_node(120, alive=lambda: node.poll() is None):
            print(f"demo: the node's outputs never appeared; see {out / 'node.log'}", file=sys.stderr)
        t0 = time.perf_counter()
        play = subprocess.run([str(bindir / "ovss-bag-play"), str(bag), "--topics", IMAGE_TOPIC,
                               "--as-fast-as-processed", "--wait-subscribers", "120", "--wait-timeout", "30"],
                              env=env, capture_output=True, text=True, timeout=600)
        deadline = time.time() + 15
        while len(rec.msgs[LABELS]) < a.frames and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)                      # one more diagnostics period
        wall = time.perf_counter() - t0
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node_log = node.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            node.kill()
            node_log = node.communicate()[0]
        rec.close()
    (out / "node.log").write_text(node_log or "")
    if play.returncode != 0 or not rec.msgs[LABELS]:
        print(f"demo: no segmentation received (play rc {play.returncode}); see {out / 'node.log'}\n"
              f"{play.stdout[-2000:]}{play.stderr[-2000:]}", file=sys.stderr)
        return 1
    write_output_bag(seg_bag, bag, rec)
    gts = read_images(bag, GT_TOPIC)
    acc = Accumulator(names, background_is_class=True)
    for m in rec.msgs[LABELS]:
        if _stamp(m) in gts:
            acc.update(gts[_stamp(m)], _labels(m))
    # overlays redrawn at a readable size (the node's own overlay is in the output bag at input size)
    from ..engine.visualize import overlay
    rgbs = read_images(bag, IMAGE_TOPIC)
    frames = []
    for k, m in enumerate(sorted(rec.msgs[LABELS], key=_stamp)):
        if _stamp(m) not in rgbs:
            continue
        big = lambda x: np.repeat(np.repeat(x, a.scale, 0), a.scale, 1)
        img = Image.fromarray(np.concatenate([overlay(big(rgbs[_stamp(m)]), big(_labels(m)), names),
                                              overlay(big(rgbs[_stamp(m)]), big(gts[_stamp(m)]), names)], 1))
        img.save(out / f"overlay_{k:03d}.png")
        frames.append(img)
    if frames:
        frames[0].save(out / "overlay.gif", save_all=True, append_images=frames[1:], duration=120, loop=0)
    res = acc.results()["standard"]
    arr = rec.arrival
    fps = (len(arr) - 1) / (arr[-1] - arr[0]) if len(arr) > 1 else float("nan")
    lat = {k: float(np.mean(v)) for k, v in rec.latency.items()}
    summary = {"method": a.method, "model": model, "frames_sent": a.frames,
               "frames_segmented": len(rec.msgs[LABELS]), "mIoU": res["mIoU"],
               "pixel_accuracy": res["pixel_accuracy"], "fps": fps, "latency_ms": lat, "wall_s": wall,
               "output_bag": str(seg_bag), "gif": str(out / "overlay.gif")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"[demo] {a.method}: frames {summary['frames_segmented']}/{a.frames}  "
          f"mIoU vs ground truth {res['mIoU']:.3f}  pixel acc {res['pixel_accuracy']:.3f}  FPS {fps:.1f}  latency total "
          f"{lat.get('total', float('nan')):.0f} ms (receive->publish {lat.get('receive_to_publish', float('nan')):.0f} ms)")
    print(f"[demo] output bag {seg_bag}; overlays (left: node output, right: ground truth) "
          f"{out}/overlay_*.png, {out}/overlay.gif")
    return 0


if __name__ == "__main__":
    sys.exit(main())
