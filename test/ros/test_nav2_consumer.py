"""The node's outputs read over DDS the way Nav2's semantic_segmentation_layer reads them (nav2_layer.py):
best-effort mask and confidence joined by identical stamps, LabelInfo subscribed after the node published
it, every mask's ids named by the LabelInfo the node published before it, also across vocabulary changes;
and a node whose Python lacks vision_msgs, which says so once and keeps labelling."""
import itertools
import os
import threading

from lifecycle_msgs.msg import Transition
from sensor_msgs.msg import Image

from ovss_ros.ros import qos
from ovss_ros.srv import SetVocabulary
from nav2_layer import Nav2Layer, check_pair, class_names, mask_ids
from rostest_helpers import change_state, image_msg, scene, set_params

NS = "/ovss_nav2"
# With these the shared tiny BLIP (presence threshold 0.5) labels ids 1 and 4 in the test scene; "tree" alone
# can only give 1, so a mask labelled with the wrong vocabulary shows an id its LabelInfo does not name.
FOUR = ["red circle", "blue square", "dog", "car"]
ONE = ["tree"]
PRESENCE = 0.5
SECONDS = itertools.count(100)
FRAME_ID = "nav2_camera"


def frame(sec: int) -> Image:
    return image_msg(scene(48, 64, seed=sec % 3), "rgb8", sec, FRAME_ID)


class Camera:
    """The probe's reliable camera; frames go one at a time, each waited for, so none is dropped as stale."""

    def __init__(self, probe, ns: str) -> None:
        self.pub = probe.node.create_publisher(Image, f"{ns}/image", qos.reliable(10))
        probe.wait_subscribers(self.pub, timeout=120)

    def send(self) -> tuple:
        sec = next(SECONDS)
        self.pub.publish(frame(sec))
        return sec, 0


def stream(camera: Camera, layer: Nav2Layer, count: int) -> list:
    """`count` frames; each mask must join a confidence image of its stamp. The joined pairs, in order."""
    pairs = []
    for _ in range(count):
        key = camera.send()
        pair = layer.sync.wait_pair(key, 30)
        assert pair is not None, f"frame {key}: mask {'arrived' if key in layer.sync.masks else 'missing'}, " \
                                 "no confidence image with its stamp"
        pairs.append(pair)
    return pairs


def check_in_force(layer: Nav2Layer, pairs: list) -> set:
    """Each pair is valid under the LabelInfo the node published last before the mask; the ids seen."""
    seen = set()
    for mask, conf in pairs:
        info = layer.info_in_force(mask)
        assert info is not None, f"mask {mask.msg.header.stamp} was published before any LabelInfo"
        check_pair(mask.msg, conf.msg, info.msg)
        assert mask.msg.header.frame_id == FRAME_ID
        seen |= mask_ids(mask.msg)
    return seen


def change_while_streaming(probe, camera: Camera, layer: Nav2Layer, names: list):
    """set_vocabulary(names) while frames keep coming, until the new LabelInfo arrived; then three frames
    sent after its arrival. Returns (pairs during the change, pairs after, the new LabelInfo)."""
    answer, since = {}, len(layer.infos)
    call = threading.Thread(target=lambda: answer.update(r=probe.call(
        SetVocabulary, f"{NS}/set_vocabulary", SetVocabulary.Request(classes=names))))
    call.start()
    during = []
    while layer.wait_label_info(names, 0, since) is None and len(during) < 40:
        during += stream(camera, layer, 1)
    call.join(60)
    assert answer["r"].success, answer["r"].message
    info = layer.wait_label_info(names, 30, since)
    assert info is not None, "no LabelInfo for the new vocabulary"
    return during, stream(camera, layer, 3), info


def test_nav2_layer_reads_masks_confidence_and_label_info(probe, start_node):
    node = start_node(NS, vocabulary=FOUR, **{"engine.presence_threshold": PRESENCE})
    layer = Nav2Layer(probe, NS)
    camera = Camera(probe, NS)
    # the node computes confidence once it has matched the layer's reader: frames until one pairs
    for _ in range(10):
        key = camera.send()
        assert layer.sync.wait_mask(key, 120), node.log()
        if layer.sync.wait_pair(key, 5):
            break
    assert layer.sync.pairs, "no mask was ever joined by a confidence image"

    # a costmap started after the node: the latched LabelInfo reaches it
    layer.subscribe_label_info()
    first = layer.wait_label_info(FOUR)
    assert first is not None, [class_names(i.msg) for i in layer.infos]
    assert [(c.class_id, c.class_name) for c in first.msg.class_map] == list(enumerate(["background", *FOUR]))
    assert abs(first.msg.threshold - PRESENCE) < 1e-6
    assert first.msg.header.frame_id == "" and first.msg.header.stamp.sec > 0

    seen = check_in_force(layer, stream(camera, layer, 3))
    assert max(seen) > len(ONE), f"ids {seen}: the vocabulary checks below could not fail"

    during, after, info = change_while_streaming(probe, camera, layer, ONE)
    assert [(c.class_id, c.class_name) for c in info.msg.class_map] == [(0, "background"), (1, "tree")]
    check_in_force(layer, during + after)
    for mask, conf in after:   # sent after the new LabelInfo arrived: labelled with the new vocabulary
        check_pair(mask.msg, conf.msg, info.msg)

    # back to four classes: a mask labelled with them before their LabelInfo would show id 4 under ONE's
    during, after, info = change_while_streaming(probe, camera, layer, FOUR)
    assert info.published > first.published   # published again, not the first one re-read
    check_in_force(layer, during + after)
    assert max(set().union(*(mask_ids(m.msg) for m, _ in after))) > len(ONE)

    # a new presence threshold is announced too, before frames segmented with it
    since = len(layer.infos)
    assert set_params(probe, f"{NS}/ovss_node", **{"engine.presence_threshold": 0.55})[0].successful
    again = layer.wait_label_info(FOUR, 30, since)
    assert again is not None and abs(again.msg.threshold - 0.55) < 1e-6
    check_in_force(layer, stream(camera, layer, 1))
    assert not layer.sync.confidence, f"confidence images without a mask: {sorted(layer.sync.confidence)}"
    assert node.alive()


def test_without_vision_msgs_the_node_says_so_once_and_labels_flow(probe, start_node, tmp_path, monkeypatch):
    ns = "/ovss_no_vision_msgs"
    hidden = tmp_path / "hide" / "vision_msgs"   # first on the node's PYTHONPATH: importing it fails
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'vision_msgs'\", name='vision_msgs')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hidden.parent),
                                                                   os.environ.get("PYTHONPATH")])))
    node = start_node(ns, vocabulary=FOUR)
    monkeypatch.undo()
    labels = probe.collect(Image, f"{ns}/segmentation/labels", qos.reliable(10))
    camera = Camera(probe, ns)

    def labelled() -> None:
        key = camera.send()
        assert labels.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == key, 120), node.log()

    labelled()
    full = f"{ns}/ovss_node"   # a second configure must not say it again
    for transition in ("DEACTIVATE", "CLEANUP", "CONFIGURE", "ACTIVATE"):
        assert change_state(probe, full, getattr(Transition, f"TRANSITION_{transition}")), node.log()
    labelled()
    lines = [line for line in node.log().splitlines() if "vision_msgs is not importable" in line]
    assert len(lines) == 1, node.log()
    assert "No module named 'vision_msgs'" in lines[0] and "Nav2" in lines[0] and "label_info" in lines[0]
    assert "WARN" in lines[0]
    topics = dict(probe.node.get_topic_names_and_types())
    assert f"{ns}/segmentation/labels" in topics and f"{ns}/segmentation/label_info" not in topics
    assert node.alive()
