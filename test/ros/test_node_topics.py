"""One ovss_node process (tiny model, CPU) over real DDS: outputs, encodings, stamps, vocabulary paths,
bad input, diagnostics. The vocabulary is published (latched) before the node starts."""
import itertools
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ovss_ros.msg import ClassMap, SegmentationMasks
from ovss_ros.ros import qos
from ovss_ros.srv import SetVocabulary
from ovss_ros.engine.visualize import class_color, overlay
from rostest_helpers import T0, assert_scores_agree_with_labels, diagnostic_values, image_msg, raw_image, scene, to_array, wait_until, write_bag

NS = "/ovss_topics"
FIRST_VOCAB = ["red circle", "dog"]
SECONDS = itertools.count(1000)


class Rig:
    """The node process, the probe's publishers and one collector per output topic."""

    def __init__(self, probe, node):
        self.probe, self.node = probe, node
        n = probe.node
        self.be_pub = n.create_publisher(Image, f"{NS}/image", qos.inputs("best_effort", 1))
        self.rel_pub = n.create_publisher(Image, f"{NS}/image", qos.reliable(10))
        self.vocab_pub = None
        out = qos.reliable(50)
        self.labels = probe.collect(Image, f"{NS}/segmentation/labels", out)
        self.confidence = probe.collect(Image, f"{NS}/segmentation/confidence", out)
        self.overlay = probe.collect(Image, f"{NS}/segmentation/overlay", out)
        self.masks = probe.collect(SegmentationMasks, f"{NS}/segmentation/masks", out)
        self.class_map = probe.collect(ClassMap, f"{NS}/segmentation/class_map", qos.latched())
        self.diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 50)

    def send(self, msg, reliable=False, timeout=20.0):
        """Publish a frame and return its labels. A best-effort publisher may lose a sample, so it resends."""
        pub = self.rel_pub if reliable else self.be_pub
        self.probe.wait_subscribers(pub)
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        for _ in range(1 if reliable else 4):
            pub.publish(msg)
            got = self.labels.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == key,
                                       timeout if reliable else timeout / 4)
            if got is not None:
                return got
        return None

    def by_stamp(self, collector, sec, timeout=10.0):
        return collector.wait_for(lambda m: m.header.stamp.sec == sec, timeout)

    def set_params(self, **values):
        req = SetParameters.Request()
        for k, v in values.items():
            if isinstance(v, list):
                pv = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=v)
            elif isinstance(v, bool):
                pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
            elif isinstance(v, int):
                pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
            elif isinstance(v, float):
                pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
            else:
                pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)
            req.parameters.append(ParameterMsg(name=k, value=pv))
        return self.probe.call(SetParameters, f"{NS}/ovss_node/set_parameters", req).results

    def get_param(self, name):
        res = self.probe.call(GetParameters, f"{NS}/ovss_node/get_parameters", GetParameters.Request(names=[name]))
        return res.values[0]

    def camera_counter(self, key, at_least, timeout=15.0):
        """Wait until the node's diagnostics report camera counter `key` >= at_least; returns the value."""
        name = f"{NS}/ovss_node: camera '(default)'"

        def value(arr):
            st = next((s for s in arr.status if s.name == name), None)
            return int(diagnostic_values(st)[key]) if st is not None else -1

        arr = self.diagnostics.wait_for(lambda a: value(a) >= at_least, timeout)
        return value(arr) if arr is not None else max([value(a) for a in self.diagnostics.msgs] or [-1])

    def latest_map(self):
        return max(self.class_map.msgs, key=lambda m: m.vocabulary_version)

    def node_diagnostics(self, timeout=10.0):
        arr = self.diagnostics.wait_for(lambda a: any(s.name.startswith(f"{NS}/ovss_node:") for s in a.status)
                                        and a.header.stamp.sec > 0, timeout)
        return arr


@pytest.fixture(scope="module")
def rig(probe, start_node):
    vocab_pub = probe.node.create_publisher(String, f"{NS}/vocabulary", qos.latched())
    vocab_pub.publish(String(data=", ".join(FIRST_VOCAB)))   # before the node process exists
    r = Rig(probe, None)
    r.vocab_pub = vocab_pub
    r.node = start_node(NS, **{"engine.presence": "all", "torch_threads": 1})
    assert r.class_map.wait_for(lambda m: m.vocabulary_version >= 1, 120), r.node.log()
    yield r
    assert r.node.alive(), r.node.log()
    # a best-effort and a reliable publisher on one camera topic: the node logs no QoS incompatibility
    assert "incompatible" not in r.node.log().lower(), r.node.log()


def test_vocabulary_published_before_start_is_used(rig):
    cm = rig.latest_map()
    assert cm.vocabulary_version == 1
    assert [(c.class_id, c.class_name) for c in cm.classes] == [(1, "red circle"), (2, "dog")]
    assert all((c.r, c.g, c.b) == class_color(c.class_name) for c in cm.classes)


def test_outputs_have_input_header_size_encoding_and_agree(rig):
    rgb = scene(48, 64, seed=1)
    sec = next(SECONDS)
    labels_msg = rig.send(image_msg(rgb, "rgb8", sec, "cam_optical_frame"))
    assert labels_msg is not None, rig.node.log()
    conf, over = rig.by_stamp(rig.confidence, sec), rig.by_stamp(rig.overlay, sec)
    masks = rig.by_stamp(rig.masks, sec)
    for msg, enc, step in ((labels_msg, "mono8", 64), (conf, "mono8", 64), (over, "rgb8", 192)):
        assert (msg.encoding, msg.width, msg.height, msg.step) == (enc, 64, 48, step)
        assert msg.header.frame_id == "cam_optical_frame" and msg.header.stamp.sec == sec
        assert len(msg.data) == msg.step * msg.height
    assert masks.header.frame_id == "cam_optical_frame" and masks.header.stamp.sec == sec
    # the class map is published on change only (publish_class_map_per_frame is off by default)
    assert rig.class_map.wait_for(lambda m: m.header.stamp.sec == sec, 0.5) is None
    cmap = rig.latest_map()
    labels = to_array(labels_msg)
    names = [c.class_name for c in cmap.classes]
    assert cmap.vocabulary_version == masks.vocabulary_version
    assert set(np.unique(labels)) <= set(range(len(names) + 1))
    assert list(masks.class_ids) == [1, 2]   # presence "all": every class is segmented
    for cid, name, mask in zip(masks.class_ids, masks.class_names, masks.masks):
        assert name == names[cid - 1]
        assert (mask.encoding, mask.width, mask.height) == ("mono8", 64, 48)
    assert_scores_agree_with_labels(masks, labels)
    assert np.array_equal(to_array(over), overlay(rgb, labels, names, alpha=0.5))


@pytest.mark.parametrize("encoding", ["bgr8", "mono8", "mono16", "rgba8", "padded_rgb8"])
def test_reliable_publisher_and_other_encodings(rig, encoding):
    rgb = scene(30, 40, seed=2)
    sec = next(SECONDS)
    if encoding == "padded_rgb8":
        rows = np.zeros((30, 128), np.uint8)
        rows[:, :120] = rgb.reshape(30, 120)
        msg = raw_image(rows.tobytes(), "rgb8", 30, 40, 128, sec)
    else:
        pixels = {"bgr8": rgb[:, :, ::-1], "mono8": rgb[:, :, 0], "mono16": rgb[:, :, 0].astype(np.uint16) * 257,
                  "rgba8": np.dstack([rgb, rgb[:, :, :1]])}[encoding]
        msg = image_msg(pixels, encoding, sec)
    labels = rig.send(msg, reliable=True)
    assert labels is not None, rig.node.log()
    assert (labels.width, labels.height, labels.encoding) == (40, 30, "mono8")


BAD = {
    "encoding": lambda sec: raw_image(b"\0" * 24, "yuv422", 2, 6, 12, sec),
    "step": lambda sec: raw_image(b"\0" * 48, "rgb8", 4, 6, 10, sec),
    "truncated": lambda sec: raw_image(b"\0" * 40, "rgb8", 4, 6, 18, sec),
    "size": lambda sec: raw_image(b"\0" * 30000, "rgb8", 100, 100, 300, sec),   # > max_image_pixels below
}


def test_each_kind_of_bad_frame_is_logged_once_and_skipped(rig):
    assert all(r.successful for r in rig.set_params(**{"engine.max_image_pixels": 5000}))
    try:
        bad = rig.camera_counter("bad", 0)
        for kind, make in BAD.items():
            for _ in range(2):   # the second one must not be logged again
                bad_sec = next(SECONDS)
                rig.rel_pub.publish(make(bad_sec))
                # wait until the worker has seen it (a good frame sent at once would replace it: newest wins)
                assert rig.camera_counter("bad", bad + 1) == bad + 1, rig.node.log()
                bad += 1
                good = rig.send(image_msg(scene(20, 24), "rgb8", next(SECONDS)), reliable=True)
                assert good is not None, f"no output after a bad frame ({kind}):\n{rig.node.log()}"
                assert rig.labels.wait_for(lambda m: m.header.stamp.sec == bad_sec, 0.01) is None
        log = rig.node.log()
        for words in ("unsupported encoding 'yuv422'", "step 10 is smaller", "data has 40 bytes",
                      "exceeds the limit of 5000 pixels"):
            assert log.count(words) == 1, (words, log)
    finally:
        rig.set_params(**{"engine.max_image_pixels": 4096 * 4096})
    assert rig.node.alive()


def test_bad_vocabularies_are_refused_and_the_old_one_kept(rig):
    version = rig.latest_map().vocabulary_version
    # a topic request superseded while pending is never checked: wait for each reason before the next text
    for text, reason in (("", "vocabulary is empty"), (" , ,", None),
                         (", ".join(f"class {i}" for i in range(300)), "max_classes"),
                         ("x" * 100, "max_class_name_length")):
        rig.vocab_pub.publish(String(data=text))
        assert reason is None or wait_until(lambda: any("vocabulary from topic refused" in line and reason in line
                                                        for line in rig.node.log().splitlines()), 20), reason
    res = rig.probe.call(SetVocabulary, f"{NS}/set_vocabulary", SetVocabulary.Request(classes=[]))
    assert not res.success and "empty" in res.message and res.vocabulary_version == version
    res = rig.probe.call(SetVocabulary, f"{NS}/set_vocabulary",
                         SetVocabulary.Request(classes=[f"c{i}" for i in range(300)]))
    assert not res.success and "max_classes" in res.message
    bad_param = rig.set_params(vocabulary=["dog", "dog"])
    assert not bad_param[0].successful and "duplicate" in bad_param[0].reason
    sec = next(SECONDS)
    assert rig.send(image_msg(scene(), "rgb8", sec), reliable=True) is not None
    assert rig.by_stamp(rig.masks, sec).vocabulary_version == version
    log = rig.node.log()
    assert "vocabulary is empty" in log and "max_classes" in log and "max_class_name_length" in log
    assert rig.node.alive()


def test_vocabulary_change_mid_stream_switches_outputs(rig):
    before = rig.latest_map().vocabulary_version
    stop, sent = threading.Event(), []
    floor = next(SECONDS)   # every streamed frame is stamped after this

    def stream():
        while not stop.is_set():
            sec = next(SECONDS)
            rig.rel_pub.publish(image_msg(scene(24, 32, seed=sec % 5), "rgb8", sec))
            sent.append(sec)
            stop.wait(0.05)

    rig.probe.wait_subscribers(rig.rel_pub)
    t = threading.Thread(target=stream)
    t.start()
    try:
        assert rig.masks.wait_for(lambda m: m.header.stamp.sec > floor, 20)
        rig.vocab_pub.publish(String(data="blue square, green triangle, car"))          # topic
        assert rig.masks.wait_for(lambda m: m.vocabulary_version == before + 1, 20), rig.node.log()
        res = rig.probe.call(SetVocabulary, f"{NS}/set_vocabulary",
                             SetVocabulary.Request(classes=["car", "dog"]))             # service
        assert res.success and res.vocabulary_version == before + 2 and list(res.class_names) == ["car", "dog"]
        assert rig.masks.wait_for(lambda m: m.vocabulary_version == before + 2, 20)
        assert rig.set_params(vocabulary=["red circle", "car"])[0].successful              # parameter
        last = rig.masks.wait_for(lambda m: m.vocabulary_version == before + 3, 20)
        assert last is not None
    finally:
        stop.set()
        t.join()
    names_of = {m.vocabulary_version: [c.class_name for c in m.classes] for m in rig.class_map.msgs}
    assert names_of[before + 1] == ["blue square", "green triangle", "car"]
    assert names_of[before + 3] == ["red circle", "car"]
    stream_masks = sorted((m for m in rig.masks.msgs if floor < m.header.stamp.sec < T0 // 10**9), key=lambda m: m.header.stamp.sec)
    versions = [m.vocabulary_version for m in stream_masks]
    assert versions == sorted(versions)   # never back to an older vocabulary
    for m in stream_masks:
        assert list(m.class_names) == [names_of[m.vocabulary_version][i - 1] for i in m.class_ids]
    assert list(rig.get_param("vocabulary").string_array_value) == ["red circle", "car"]


def test_text_prepared_once_per_vocabulary_change_and_diagnostics(rig):
    for _ in range(3):
        assert rig.send(image_msg(scene(), "rgb8", next(SECONDS)), reliable=True) is not None
    rig.diagnostics.clear()
    arr = rig.node_diagnostics()
    assert arr is not None
    main = next(s for s in arr.status if s.name == f"{NS}/ovss_node: segmentation")
    values = diagnostic_values(main)
    assert values["state"] == "active" and values["device"] == "cpu" and values["torch_threads"] == "1"
    assert int(values["text_preparations"]) == int(values["vocabulary_version"]) == rig.latest_map().vocabulary_version
    assert float(values["latency_ms.total"]) > 0 and "latency_ms.publish" in values
    cam = diagnostic_values(next(s for s in arr.status if s.name == f"{NS}/ovss_node: camera '(default)'"))
    assert int(cam["processed"]) >= 10 and int(cam["bad"]) >= len(BAD)


def test_more_than_254_classes_switch_labels_to_mono16(rig):
    assert rig.set_params(**{"engine.max_classes": 300})[0].successful
    words = ["red", "green", "blue", "circle", "square", "triangle", "dog", "car"]   # known to the tiny model
    names = [f"{a} {b} {c}" for a in words for b in words for c in words][:300]
    try:
        res = rig.probe.call(SetVocabulary, f"{NS}/set_vocabulary", SetVocabulary.Request(classes=names))
        assert res.success, res.message
        sec = next(SECONDS)
        labels_msg = rig.send(image_msg(scene(24, 32), "rgb8", sec), reliable=True, timeout=60)
        assert labels_msg is not None, rig.node.log()
        assert (labels_msg.encoding, labels_msg.step, labels_msg.width) == ("mono16", 64, 32)
        labels = to_array(labels_msg)
        masks = rig.by_stamp(rig.masks, sec)
        assert set(np.unique(labels)) <= {0, *masks.class_ids} and max(masks.class_ids) <= 300
        assert_scores_agree_with_labels(masks, labels)
    finally:
        rig.probe.call(SetVocabulary, f"{NS}/set_vocabulary", SetVocabulary.Request(classes=["red circle", "car"]))
        rig.set_params(**{"engine.max_classes": 256})

def test_runtime_parameter_changes_apply_or_are_refused_with_reason(rig):
    bad = rig.set_params(**{"engine.dropout_rounds": 0})[0]
    assert not bad.successful and "dropout_rounds" in bad.reason
    bad = rig.set_params(**{"engine.background": "sometimes"})[0]
    assert not bad.successful and "background" in bad.reason
    bad = rig.set_params(model="/elsewhere")[0]
    assert not bad.successful and "configure" in bad.reason
    bad = rig.set_params(preset="paper")[0]
    assert not bad.successful
    assert rig.set_params(**{"engine.dropout_rounds": 2, "publish_overlay": False})[0].successful
    try:
        sec = next(SECONDS)
        assert rig.send(image_msg(scene(), "rgb8", sec), reliable=True) is not None
        assert rig.by_stamp(rig.masks, sec) is not None         # published after the overlay would have been
        assert rig.overlay.wait_for(lambda m: m.header.stamp.sec == sec, 0.5) is None
    finally:
        assert all(r.successful for r in rig.set_params(**{"engine.dropout_rounds": 1, "publish_overlay": True}))
    sec = next(SECONDS)
    assert rig.send(image_msg(scene(), "rgb8", sec), reliable=True) is not None
    assert rig.by_stamp(rig.overlay, sec) is not None
    assert rig.set_params(vocabulary="dog; red circle")[0].successful   # one string, topic format
    assert rig.class_map.wait_for(lambda m: [c.class_name for c in m.classes] == ["dog", "red circle"], 10)
    assert not rig.set_params(vocabulary=7)[0].successful

def test_bag_play_as_fast_as_processed(rig, tmp_path):
    import subprocess
    import sys

    write_bag(tmp_path / "bag", "sqlite3", frames=4, image_topic=f"{NS}/image")
    run = subprocess.run([sys.executable, "-m", "ovss_ros.ros.bag_play", str(tmp_path / "bag"), "--topics",
                          f"{NS}/image", "--as-fast-as-processed"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "4 frames published, 4 answered by the node" in run.stdout, run.stdout + run.stderr
    # every frame, none dropped: the next one waited for the previous result. The player has seen all four
    # labels; this process's subscriber may still be receiving them, so wait for it rather than race.
    def answered():
        return [m for m in rig.labels.msgs if m.header.stamp.sec == T0 // 10**9]
    assert wait_until(lambda: len(answered()) >= 4, 10) and len(answered()) == 4, len(answered())
