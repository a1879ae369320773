"""One SegmentationResult -> the node's output messages, all stamped with the input frame's header.
Shared by the node and the offline bag command so both write exactly the same thing."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image

from ovss_ros.msg import ClassInfo, ClassMap, SegmentationMasks
from ovss_ros.engine.visualize import class_color, overlay

from . import qos
from .camera_inputs import topic
from .image_codec import array_to_image
from .parts import CameraOutputs

try:   # standard LabelInfo for Nav2's semantic segmentation layer; absent from the PyPI wheels
    from vision_msgs.msg import LabelInfo, VisionClass
    LABEL_INFO_MISSING: Optional[str] = None
except ImportError as exc:   # depends on the machine (a test runs the node without it)
    LabelInfo = VisionClass = None
    LABEL_INFO_MISSING = (f"vision_msgs is not importable ({exc}): segmentation/label_info "
                          "(vision_msgs/LabelInfo) is not published, so Nav2's semantic_segmentation_layer, which "
                          "names the ids of segmentation/labels only from it, cannot use this node's labels; "
                          "install the vision_msgs package of your ROS distribution (ros-<distro>-vision-msgs). "
                          "All other outputs are published as usual")


def labels_image(labels: np.ndarray, header):
    """mono8 class ids (0 = background); mono16 when the vocabulary has more than 254 classes."""
    return array_to_image(labels, "mono16" if labels.dtype == np.uint16 else "mono8", header)


def mono8_levels(scores: np.ndarray) -> np.ndarray:
    """Scores in [0, 1] as 0..255 levels; uint8 scores are those levels already (the engine quantised them on
    its device: score_dtype="uint8")."""
    if scores.dtype == np.uint8:
        return scores
    return np.round(np.clip(scores, 0, 1) * 255).astype(np.uint8)


class Mono8Scores:
    """The engine as the outputs use it: confidence and class maps come back as the mono8 levels published,
    quantised on the model's device before the copy (a quarter of float32's bytes, and no host pass)."""

    def __init__(self, seg) -> None:
        self.segmenter = seg

    def segment_batch(self, images, presents=None, outputs=("labels",)):
        return self.segmenter.segment_batch(images, presents, outputs, score_dtype="uint8")

    def segment(self, image, present=None, outputs=("labels",)):
        return self.segmenter.segment(image, present, outputs, score_dtype="uint8")


def mono8_engine(seg):
    """`seg` asking for uint8 scores where it offers them (Segmenter.score_dtypes); any other engine as it is
    (its float scores are quantised here, on the host)."""
    dtypes = getattr(type(seg), "score_dtypes", ())
    return Mono8Scores(seg) if isinstance(dtypes, tuple) and "uint8" in dtypes else seg


def confidence_image(confidence: np.ndarray, header):
    """mono8, 0..255 = the estimated probability 0..1 that the pixel's label is right (docs/confidence.md)."""
    return array_to_image(mono8_levels(confidence), "mono8", header)


def overlay_image(rgb: np.ndarray, labels: np.ndarray, class_names: Sequence[str], header, alpha: float = 0.5):
    """rgb8 blend with stable per-class colours and a legend of the classes in view, for rviz."""
    return array_to_image(overlay(rgb, labels, class_names, alpha=alpha, legend=True), "rgb8", header)


def class_score_image(score: np.ndarray, header):
    """mono8, 0..255 = one class's relative score 0..1 at every pixel (not only where it wins): what its label is
    chosen from, not a probability (docs/confidence.md)."""
    return array_to_image(mono8_levels(score), "mono8", header)


def masks_message(result, header, version: int) -> SegmentationMasks:
    """One score image per segmented class. A binary mask would repeat the label image (labels == id); the
    scores carry what it cannot: how strongly each class claims every pixel, also where another class won
    (per-class thresholds, soft costs)."""
    msg = SegmentationMasks()
    msg.header = header
    msg.vocabulary_version = int(version)
    ids = [int(i) for i in result.class_ids]
    msg.class_ids = ids
    msg.class_names = [result.class_names[i - 1] for i in ids]
    msg.presence = [float(result.presence[i - 1]) for i in ids]
    msg.masks = [class_score_image(result.class_maps[k], header) for k in range(len(ids))]
    return msg


def class_map_message(class_names: Sequence[str], version: int, header, threshold: float = 0.0,
                      model: str = "") -> ClassMap:
    msg = ClassMap()
    msg.header = header
    msg.vocabulary_version = int(version)
    msg.presence_threshold = float(threshold)
    msg.model = model
    classes = []
    for k, name in enumerate(class_names, start=1):
        r, g, b = class_color(name)
        classes.append(ClassInfo(class_id=k, class_name=name, r=r, g=g, b=b))
    msg.classes = classes
    return msg


def label_info_message(class_names: Sequence[str], header, threshold: float = 0.0) -> Optional[object]:
    """vision_msgs/LabelInfo, or None where vision_msgs is not installed: id 0 = "background", ids 1..K = the
    vocabulary in order (the values of the label image); threshold = the score a class needs (knobs'
    class_map_threshold). The header is the caller's: on a vocabulary change the node clock's time and no
    frame (it holds for every image of the camera), per frame the frame's header."""
    if LabelInfo is None:
        return None
    msg = LabelInfo()
    msg.header = header
    msg.threshold = float(threshold)
    msg.class_map = [VisionClass(class_id=0, class_name="background")] + [
        VisionClass(class_id=k, class_name=n) for k, n in enumerate(class_names, start=1)]
    return msg


def create_camera_outputs(create_publisher, cam: str) -> CameraOutputs:
    """The output topics of one camera: create_publisher is the node's create_lifecycle_publisher. Images and
    masks take qos_overrides.<topic>.publisher.{reliability,depth,history}; the class map and LabelInfo are
    latched (a late subscriber gets the vocabulary in use)."""
    def pub(kind, name, profile=None):
        return create_publisher(kind, topic(cam, name), profile or qos.outputs(),
                                qos_overriding_options=QoSOverridingOptions.with_default_policies())

    return CameraOutputs(labels=pub(Image, "segmentation/labels"),
                         confidence=pub(Image, "segmentation/confidence"),
                         overlay=pub(Image, "segmentation/overlay"),
                         masks=pub(SegmentationMasks, "segmentation/masks"),
                         class_map=create_publisher(ClassMap, topic(cam, "segmentation/class_map"), qos.latched()),
                         label_info=(create_publisher(LabelInfo, topic(cam, "segmentation/label_info"), qos.latched())
                                     if LabelInfo is not None else None))
