"""Bag round trip: write a small bag with rosbags (sqlite3 and mcap), segment it offline, read it back and
check every frame; play a bag at a scaled recorded rate."""
import subprocess
import sys

import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CompressedImage, Image

from ovss_ros.msg import ClassMap, SegmentationMasks
from ovss_ros.pgseg.config import make_pgseg_config
from ovss_ros.ros.bag_io import STORAGE
from ovss_ros.ros.image_codec import compressed_to_rgb, image_to_rgb
from rostest_helpers import T0, Collector, assert_scores_agree_with_labels, to_array, wait_until, write_bag

VOCAB = ["red circle", "dog", "blue square"]


def read_bag(path):
    with Reader(str(path)) as r:
        return [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in r.messages()]


@pytest.mark.parametrize("storage", sorted(STORAGE))
def test_offline_segmentation_round_trip(tmp_path, tiny_model_dir, storage):
    src, out = tmp_path / "in", tmp_path / "out"
    write_bag(src, storage)
    run = subprocess.run([sys.executable, "-m", "ovss_ros.ros.bag_segment", str(src), str(out),
                          "--vocabulary", ", ".join(VOCAB), "--model", tiny_model_dir, "--preset", "tiny",
                          "--device", "cpu", "--set", "presence=all"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "6 frames segmented (0 skipped) from 2 camera topic(s)" in run.stdout
    assert any(out.glob("*.mcap" if storage == "mcap" else "*.db3"))
    original, result = read_bag(src), read_bag(out)
    assert set(original) <= set(result)          # every original message, byte for byte, at its time

    from ovss_ros.engine.segmenter import Segmenter
    seg = Segmenter.from_pretrained(tiny_model_dir, preset="tiny", device="cpu", presence="all")
    seg.set_vocabulary(VOCAB)
    types = {"labels": Image, "confidence": Image, "overlay": Image, "masks": SegmentationMasks,
             "class_map": ClassMap}
    frames = [(topic, t, raw) for topic, kind, t, raw in original if kind.startswith("sensor_msgs")]
    assert len(frames) == 6
    for topic, t, raw in frames:
        cam = "/cam" if topic == "/cam/image_raw" else "/cam2"
        src_msg = deserialize_message(raw, Image if cam == "/cam" else CompressedImage)
        rgb = image_to_rgb(src_msg) if cam == "/cam" else compressed_to_rgb(src_msg)
        got = {}
        for key, cls in types.items():
            at = [r for tp, _, ts, r in result if tp == f"{cam}/segmentation/{key}" and ts == t]
            assert len(at) == 1, (cam, key, t)
            got[key] = deserialize_message(at[0], cls)
            assert got[key].header == src_msg.header        # stamped like the source frame
        labels = to_array(got["labels"])
        assert labels.shape == rgb.shape[:2] and got["labels"].encoding == "mono8"
        expected = seg.segment(rgb).labels
        assert (labels == expected).mean() > 0.99
        assert [c.class_name for c in got["class_map"].classes] == VOCAB and got["class_map"].vocabulary_version == 1
        assert_scores_agree_with_labels(got["masks"], labels)
        assert to_array(got["overlay"]).shape == rgb.shape


def test_offline_command_explains_bad_arguments(tmp_path, tiny_model_dir):
    write_bag(tmp_path / "in", "sqlite3", frames=1)
    run = subprocess.run([sys.executable, "-m", "ovss_ros.ros.bag_segment", str(tmp_path / "in"),
                          str(tmp_path / "out"), "--vocabulary", "", "--model", tiny_model_dir, "--preset", "tiny",
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "vocabulary is empty" in run.stderr


def test_play_at_recorded_rate(tmp_path, probe):
    from ovss_ros.ros import qos

    write_bag(tmp_path / "bag", "mcap", frames=6, period_ns=2 * 10**8, image_topic="/play/image")
    # the pace is read from when the player published (DDS source timestamps), not from arrival: a reader
    # that matched late gets the first frames by retransmission, later than they were sent. One reader: the
    # player starts once the topic has a subscriber, and a second one could match after the first frames
    got, sent = Collector(), []

    def on_image(msg, info) -> None:
        sent.append(info["source_timestamp"])
        got(msg)

    probe.node.create_subscription(Image, "/replayed/image", on_image, qos.reliable(50))
    run = subprocess.Popen([sys.executable, "-m", "ovss_ros.ros.bag_play", str(tmp_path / "bag"), "--topics",
                            "/play/image", "--remap", "/play/image:=/replayed/image", "--rate", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 0 and "6 frames published" in out, out
    assert got.wait_for(lambda m: len(got.msgs) >= 6, 10)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got.msgs]
    assert stamps == [T0 + i * 2 * 10**8 for i in range(6)]
    assert wait_until(lambda: len(sent) >= 6, 10)
    span = (max(sent) - min(sent)) / 1e9       # 1.0 s recorded at rate 2
    assert 0.35 < span < 1.5, span


def test_offline_segmentation_with_pgseg_detected_from_the_checkpoint(tmp_path, tiny_pgseg_dir):
    """No --method: a GroupViT/PGSeg checkpoint runs PGSeg (its realtime preset by default, tiny here); the class
    map carries PGSeg's background threshold. --method pnp_ovss on it is one error naming both kinds."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_bag(src, "sqlite3", frames=2)
    base = [sys.executable, "-m", "ovss_ros.ros.bag_segment", str(src), str(out), "--vocabulary", ", ".join(VOCAB),
            "--model", str(tiny_pgseg_dir), "--preset", "tiny", "--device", "cpu"]
    run = subprocess.run(base + ["--set", "top_k=none"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "3 frames segmented (0 skipped) from 2 camera topic(s)" in run.stdout

    from ovss_ros.engine.segmenter import Segmenter
    seg = Segmenter.from_pretrained(str(tiny_pgseg_dir), preset="tiny", device="cpu", top_k=None)
    assert seg.method == "pgseg"
    seg.set_vocabulary(VOCAB)
    result = read_bag(out)
    for _, kind, t, raw in read_bag(src):
        if kind != "sensor_msgs/msg/Image":
            continue
        rgb = image_to_rgb(deserialize_message(raw, Image))
        labels = [r for tp, _, ts, r in result if tp == "/cam/segmentation/labels" and ts == t]
        assert (to_array(deserialize_message(labels[0], Image)) == seg.segment(rgb).labels).mean() > 0.99
        class_map = deserialize_message(next(r for tp, _, ts, r in result
                                             if tp == "/cam/segmentation/class_map" and ts == t), ClassMap)
        assert class_map.presence_threshold == pytest.approx(make_pgseg_config("tiny").background_threshold)
        assert [c.class_name for c in class_map.classes] == VOCAB

    wrong = subprocess.run(base[:4] + [str(tmp_path / "out2")] + base[5:] + ["--method", "pnp_ovss"],
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "method 'pnp_ovss' needs a BLIP" in wrong.stderr and "'groupvit'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
