"""ovss-bag-play: play the camera topics of a rosbag2 file (sqlite3 or mcap) into the node.

At the recorded rate (scaled by --rate), or --as-fast-as-processed: each frame is sent once the node has
published segmentation/labels for the previous one (or --wait-timeout passed, e.g. for a skipped frame).
On robots `ros2 bag play BAG` works as well; this command needs only rclpy and rosbags."""
from __future__ import annotations

import argparse
import sys
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from .bag_io import Reader, image_connections, message_class, output_namespace


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="ovss-bag-play", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", help="bag directory (sqlite3 or mcap)")
    ap.add_argument("--topics", nargs="+", help="image topics to play (default: every Image/CompressedImage)")
    ap.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                    help="publish a bag topic under another name (repeatable)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor (recorded rate = 1)")
    ap.add_argument("--as-fast-as-processed", action="store_true",
                    help="send the next frame when the node has published labels for the previous one")
    ap.add_argument("--labels-topic", action="append", default=[], metavar="IMAGE_TOPIC:=LABELS_TOPIC",
                    help="where to expect labels for a played topic (default: <namespace>/segmentation/labels)")
    ap.add_argument("--wait-timeout", type=float, default=10.0, help="seconds to wait for labels per frame")
    ap.add_argument("--clock", action="store_true", help="publish /clock from bag time (for use_sim_time)")
    ap.add_argument("--wait-subscribers", type=float, default=10.0, metavar="SECONDS",
                    help="before playing, wait up to this long until every played topic has a subscriber")
    ap.add_argument("--loop", action="store_true", help="start over at the end")
    ap.add_argument("--best-effort", action="store_true",
                    help="publish best effort (default reliable, as ros2 bag play; large best-effort frames get lost)")
    return ap.parse_args(argv)


def _pairs(items: list[str]) -> dict:
    out = {}
    for item in items:
        if ":=" not in item:
            raise SystemExit(f"{item!r}: expected FROM:=TO")
        a, b = item.split(":=", 1)
        out[a] = b
    return out


class LabelWaiter:
    """Knows which frame stamps the node has answered, per labels topic."""

    def __init__(self, node, topics: list[str]):
        self._cond = threading.Condition()
        self._seen: dict[str, set] = {t: set() for t in topics}
        for t in topics:
            node.create_subscription(Image, t, lambda m, t=t: self._on_labels(t, m), 10)

    def _on_labels(self, topic: str, msg) -> None:
        with self._cond:
            self._seen[topic].add((msg.header.stamp.sec, msg.header.stamp.nanosec))
            self._cond.notify_all()

    def wait(self, topic: str, stamp, timeout: float) -> bool:
        key = (stamp.sec, stamp.nanosec)
        with self._cond:
            ok = self._cond.wait_for(lambda: key in self._seen[topic], timeout)
            self._seen[topic].discard(key)
            return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rate <= 0:
        raise SystemExit("--rate must be > 0")
    remap = _pairs(args.remap)
    rclpy.init()
    node = rclpy.create_node("ovss_bag_play")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT if args.best_effort
                     else ReliabilityPolicy.RELIABLE)
    sent = answered = 0
    try:
        with Reader(args.bag) as reader:
            conns = image_connections(reader, args.topics)
            pubs = {c.id: node.create_publisher(message_class(c.msgtype), remap.get(c.topic, c.topic), qos)
                    for c in conns}
            clock_pub = None
            if args.clock:
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(Clock, "/clock", 10)
            labels_of = {}
            waiter = None
            if args.as_fast_as_processed:
                given = _pairs(args.labels_topic)
                for c in conns:
                    played = remap.get(c.topic, c.topic)
                    labels_of[c.id] = given.get(played, f"{output_namespace(played)}/segmentation/labels")
                waiter = LabelWaiter(node, sorted(set(labels_of.values())))
            spinner.start()
            deadline = time.monotonic() + args.wait_subscribers   # frames sent before matching would be lost
            # ...and so would labels the node publishes before our waiter has discovered its publisher
            while time.monotonic() < deadline and not (
                    all(p.get_subscription_count() for p in pubs.values())
                    and all(node.count_publishers(t) for t in set(labels_of.values()))):
                time.sleep(0.05)
            while True:
                start_wall, start_bag = time.monotonic(), None
                for conn, stamp, raw in reader.messages(connections=conns):
                    msg = deserialize_message(bytes(raw), message_class(conn.msgtype))
                    if not args.as_fast_as_processed:
                        start_bag = stamp if start_bag is None else start_bag
                        delay = (stamp - start_bag) / 1e9 / args.rate - (time.monotonic() - start_wall)
                        if delay > 0:
                            time.sleep(delay)
                    if clock_pub is not None:
                        from rosgraph_msgs.msg import Clock

                        clock_pub.publish(Clock(clock=msg.header.stamp))
                    pubs[conn.id].publish(msg)
                    sent += 1
                    if waiter is not None:
                        answered += waiter.wait(labels_of[conn.id], msg.header.stamp, args.wait_timeout)
                if not args.loop:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        if spinner.is_alive():
            spinner.join(5)   # tearing down rclpy under a spinning thread aborts the process
        node.destroy_node()
        rclpy.try_shutdown()
    extra = f", {answered} answered by the node" if args.as_fast_as_processed else ""
    print(f"ovss-bag-play: {sent} frames published{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
