"""Helpers imported by the ROS tests (fixtures live in conftest.py)."""
from __future__ import annotations

import array
import threading
import time

import numpy as np


def wait_until(predicate, timeout: float, interval: float = 0.02):
    """Poll a condition; returns its last value (truthy on success)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Collector:
    """Every message received on one topic, with a condition to wait on."""

    def __init__(self) -> None:
        self.msgs: list = []
        self.times: list = []      # monotonic arrival time of each message
        self.cond = threading.Condition()

    def __call__(self, msg) -> None:
        with self.cond:
            self.msgs.append(msg)
            self.times.append(time.monotonic())
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 20.0, newest: bool = False):
        """The first (or, with newest, the latest) message matching predicate, including ones already received,
        or None."""
        with self.cond:
            found = []

            def match():
                found[:] = [m for m in (reversed(self.msgs) if newest else self.msgs) if predicate(m)][:1]
                return bool(found)

            self.cond.wait_for(match, timeout)
            return found[0] if found else None

    def clear(self) -> None:
        with self.cond:
            self.msgs.clear()
            self.times.clear()


def stamp(sec: int, nanosec: int = 0):
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


def scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """An RGB test frame: a red disc and a blue square on grey, plus a little noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h // 3) ** 2 + (xx - w // 3) ** 2 < (min(h, w) // 5) ** 2] = (220, 30, 30)
    img[h // 2: h // 2 + h // 4, w // 2: w // 2 + w // 4] = (30, 30, 220)
    return np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)


def raw_image(data: bytes, encoding: str, h: int, w: int, step: int, sec: int, frame_id: str = "cam",
              bigendian: bool = False):
    """An Image built field by field, so tests can make it wrong on purpose."""
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp = stamp(sec)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.step = h, w, encoding, step
    msg.is_bigendian = int(bigendian)
    msg.data = array.array("B", data)
    return msg


def image_msg(pixels: np.ndarray, encoding: str, sec: int, frame_id: str = "cam"):
    """A correct Image of any encoding from an array already in that layout."""
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    return raw_image(pixels.tobytes(), encoding, h, w, pixels.strides[0], sec, frame_id)


def to_array(msg) -> np.ndarray:
    """mono8/mono16/rgb8 output Image -> array (outputs are never padded: step checked by the tests)."""
    dtype = np.uint16 if msg.encoding == "mono16" else np.uint8
    ch = 3 if msg.encoding == "rgb8" else 1
    arr = np.frombuffer(bytes(msg.data), dtype=dtype).reshape(msg.height, msg.width, ch)
    return arr[:, :, 0] if ch == 1 else arr


def diagnostic_values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


T0 = 1_700_000_000 * 10**9   # bag time of the first frame written by write_bag


def write_bag(path, storage, frames=4, period_ns=10**8, image_topic="/cam/image_raw"):
    """Raw frames on image_topic, PNG frames on /cam2/image/compressed, and a String topic."""
    import cv2
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    from ovss_ros.bag_types import typestore
    from ovss_ros.ros.bag_io import open_writer

    store = typestore()
    with open_writer(str(path), storage) as w:
        img = w.add_connection(image_topic, "sensor_msgs/msg/Image", typestore=store)
        comp = w.add_connection("/cam2/image/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        note = w.add_connection("/notes", "std_msgs/msg/String", typestore=store)
        for i in range(frames):
            t = T0 + i * period_ns
            msg = image_msg(scene(36, 48, seed=i), "rgb8", 0, "cam_frame")
            msg.header.stamp = stamp(t // 10**9, t % 10**9)
            w.write(img, t, serialize_message(msg))
            if i % 2 == 0:
                c = CompressedImage(format="png", data=cv2.imencode(".png", scene(20, 30, seed=i)[:, :, ::-1])[1].tobytes())
                c.header.stamp, c.header.frame_id = msg.header.stamp, "cam2_frame"
                w.write(comp, t + 1, serialize_message(c))
                w.write(note, t + 2, serialize_message(String(data=f"note {i}")))


def parameter_value(value):
    """A python value as an rcl_interfaces ParameterValue (lists are string arrays)."""
    from rcl_interfaces.msg import ParameterType, ParameterValue

    if isinstance(value, list):
        return ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=value)
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)


def set_params(probe, node: str, atomically: bool = False, **values):
    """Set parameters of `node` (its full name) through its services; one result (atomic) or one per value."""
    from rcl_interfaces.msg import Parameter
    from rcl_interfaces.srv import SetParameters, SetParametersAtomically

    params = [Parameter(name=k, value=parameter_value(v)) for k, v in values.items()]
    if atomically:
        return probe.call(SetParametersAtomically, f"{node}/set_parameters_atomically",
                          SetParametersAtomically.Request(parameters=params)).result
    return probe.call(SetParameters, f"{node}/set_parameters", SetParameters.Request(parameters=params)).results


def get_param(probe, node: str, name: str):
    from rcl_interfaces.srv import GetParameters

    return probe.call(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=[name])).values[0]


VOCABULARY_WORDS = ["red", "green", "blue", "circle", "square", "triangle", "dog", "car"]


def vocabularies(seed: int):
    """Endless random vocabularies of 1-4 two-word names, reproducible from `seed`."""
    import random

    rng = random.Random(seed)
    while True:
        yield [f"{rng.choice(VOCABULARY_WORDS)} {w}" for w in rng.sample(VOCABULARY_WORDS, rng.randint(1, 4))]


def burst_settles(probe, node, ns: str, full: str, topic, class_map, steps: list, vocab) -> None:
    """Send one burst of vocabulary changes (`steps`: "parameter", "service" or "topic" each) and assert the
    node settles on the last one: the parameter shows it and the newest class map names it."""
    from std_msgs.msg import String

    from ovss_ros.srv import SetVocabulary

    last = None
    for how in steps:
        last = next(vocab)
        if how == "parameter":
            assert set_params(probe, full, vocabulary=last)[0].successful
        elif how == "service":
            assert probe.call(SetVocabulary, f"{ns}/set_vocabulary", SetVocabulary.Request(classes=last)).success
        else:
            topic.publish(String(data=", ".join(last)))

    def settled():
        names = list(get_param(probe, full, "vocabulary").string_array_value)
        latest = max(class_map.msgs, key=lambda m: m.vocabulary_version)
        return names == last and [c.class_name for c in latest.classes] == last

    assert wait_until(settled, 20), (steps, last, node.log()[-2000:])


def change_state(probe, node: str, transition_id: int) -> bool:
    from lifecycle_msgs.srv import ChangeState

    lifecycle_state(probe, node)   # connects first: a change must not be sent twice
    req = ChangeState.Request()
    req.transition.id = transition_id
    return probe.call(ChangeState, f"{node}/change_state", req, timeout=120, attempts=1).success


def lifecycle_state(probe, node: str) -> int:
    from lifecycle_msgs.srv import GetState

    return probe.call(GetState, f"{node}/get_state", GetState.Request(), timeout=60).current_state.id


def assert_scores_agree_with_labels(masks, labels):
    """Each mask is its class's score; where a class is the label, no other class scores higher (one step
    of mono8 rounding aside), so the masks carry the label image and more."""
    scores = np.stack([to_array(m).astype(int) for m in masks.masks])
    for k, cid in enumerate(masks.class_ids):
        where = labels == cid
        if where.any():
            assert (scores[k][where] + 1 >= scores[:, where].max(axis=0)).all()
            assert scores[k][where].max() > 0


def two_camera_rig(probe, node, ns: str, depth: int, labels_depth: int, diag_depth: int) -> dict:
    """Reliable image publishers for cameras `front` and `rear` of the node in `ns`, collectors of their labels
    and of /diagnostics; returns once the node subscribes to both cameras."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from ovss_ros.ros import qos

    cams = ("front", "rear")
    rig = {"node": node, "probe": probe,
           "pub": {c: probe.node.create_publisher(Image, f"{ns}/{c}/image", qos.reliable(depth)) for c in cams},
           "labels": {c: probe.collect(Image, f"{ns}/{c}/segmentation/labels", qos.reliable(labels_depth))
                      for c in cams},
           "diag": probe.collect(DiagnosticArray, "/diagnostics", diag_depth)}
    for pub in rig["pub"].values():
        probe.wait_subscribers(pub, timeout=120)
    return rig
