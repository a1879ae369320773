"""config/nav2_semantic_segmentation.yaml is wired to what the node really publishes: its topics (read from the
node's own publisher set-up, per camera of the file), the LabelInfo names its vocabulary produces (each one
given a cost), and a vocabulary the node accepts unchanged."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.engine.vocabulary import normalize_vocabulary
from ovss_ros.ros import outputs
from ovss_ros.ros.node import OvssNode
from ovss_ros.ros.params import all_specs, check_node_value

REPO = Path(__file__).resolve().parents[2]
FILE = REPO / "config" / "nav2_semantic_segmentation.yaml"
LETHAL, NO_INFORMATION = 254, 255   # nav2_costmap_2d's cost values


@pytest.fixture(scope="module")
def config():
    data = yaml.safe_load(FILE.read_text())
    node = data["/**/ovss_node"]["ros__parameters"]
    layer = data["local_costmap"]["local_costmap"]["ros__parameters"]
    return node, layer


def _node_publishers(camera: str) -> dict:
    """topic -> (message type, QoS) as OvssNode creates them for one camera, with nothing but the calls recorded."""
    made = {}

    def create_lifecycle_publisher(kind, topic, qos, **kwargs):
        made[topic] = (kind, qos)
        return topic

    OvssNode._create_outputs(SimpleNamespace(create_lifecycle_publisher=create_lifecycle_publisher), camera)
    return made


def _sources(layer: dict) -> dict:
    plugin = layer["semantic_segmentation_layer"]
    names = plugin["observation_sources"].split()
    assert names, "no observation_sources"
    return {name: plugin[name] for name in names}


def test_layer_is_loaded_before_inflation(config):
    _, layer = config
    assert layer["semantic_segmentation_layer"]["plugin"] == "semantic_segmentation_layer::SemanticSegmentationLayer"
    plugins = layer["plugins"]
    assert plugins.index("semantic_segmentation_layer") < plugins.index("inflation_layer")


def test_sources_subscribe_the_topics_the_node_publishes(config):
    if outputs.LabelInfo is None:
        pytest.skip("vision_msgs is not importable: the node publishes no label_info here")
    node, layer = config
    sources = _sources(layer)
    assert len(sources) == len(node["cameras"])
    for camera, source in zip(node["cameras"], sources.values()):
        published = {"/" + topic: kind_qos for topic, kind_qos in _node_publishers(camera).items()}
        for key, kind in (("segmentation_topic", Image), ("confidence_topic", Image),
                          ("labels_topic", outputs.LabelInfo)):
            assert source[key] in published, f"{key} {source[key]!r}: the node publishes {sorted(published)}"
            assert published[source[key]][0] is kind, key
        assert source["segmentation_topic"].endswith("/labels")   # ids, not the overlay or a mask
        latched = published[source["labels_topic"]][1]             # the layer reads LabelInfo reliable + latched
        assert (latched.reliability, latched.durability) == (ReliabilityPolicy.RELIABLE,
                                                              DurabilityPolicy.TRANSIENT_LOCAL)
        assert source["pointcloud_topic"] and source["pointcloud_topic"] not in published


def test_node_part_sets_declared_parameters_to_accepted_values(config):
    node, _ = config
    specs = {spec.name: spec for spec in all_specs("realtime")}
    assert set(node) <= set(specs), f"not node parameters: {sorted(set(node) - set(specs))}"
    refused = {name: check_node_value(specs[name], value) for name, value in node.items()}
    assert not any(refused.values()), refused


def test_every_published_class_name_has_a_cost_and_every_cost_a_published_name(config):
    if outputs.LabelInfo is None:
        pytest.skip("vision_msgs is not importable")
    node, layer = config
    defaults = make_config("realtime")
    vocabulary = list(normalize_vocabulary(node["vocabulary"], defaults.max_classes, defaults.max_class_name_length))
    assert vocabulary == node["vocabulary"], "names the node would rewrite never match the layer's exactly"
    published = [c.class_name for c in outputs.label_info_message(vocabulary, Header()).class_map]
    for name, source in _sources(layer).items():
        in_types = [c for t in source["class_types"] for c in source[t]["classes"]]
        assert len(in_types) == len(set(in_types)), f"{name}: a class in two class types"
        assert set(in_types) == set(published), (name, sorted(set(published) - set(in_types)),
                                                 sorted(set(in_types) - set(published)))


def test_class_type_costs_are_costmap_values(config):
    _, layer = config
    for source in _sources(layer).values():
        for class_type in source["class_types"]:
            t = source[class_type]
            assert 0 <= t["base_cost"] <= t["max_cost"] <= LETHAL < NO_INFORMATION, class_type
            assert 0 <= t["mark_confidence"] <= 255 and t["samples_to_max_cost"] >= 0, class_type
            assert isinstance(t["dominant_priority"], bool), class_type


# the types the layer declares its parameters with (a YAML 4 where it declares 4.0 fails its start-up)
LAYER_TYPES = {"enabled": bool, "combination_method": int, "use_approximate_time_sync": bool,
               "observation_sources": str}
SOURCE_TYPES = {"segmentation_topic": str, "confidence_topic": str, "labels_topic": str, "pointcloud_topic": str,
                "sensor_frame": str, "observation_persistence": float, "expected_update_rate": float,
                "max_obstacle_distance": float, "min_obstacle_distance": float, "tile_map_decay_time": float,
                "use_cost_selection": bool, "class_types": list}
CLASS_TYPES = {"classes": list, "base_cost": int, "max_cost": int, "mark_confidence": int,
               "samples_to_max_cost": int, "dominant_priority": bool}


def test_rcl_reads_both_parts_with_the_declared_types(config):
    """rcl's parser, not PyYAML's: the node part reaches ovss_node in any namespace, the layer's values have
    the types it declares."""
    _, layer = config
    ctx = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(FILE)], context=ctx)
    try:
        def parameters(name, namespace):
            node = rclpy.create_node(name, namespace=namespace, context=ctx,
                                     automatically_declare_parameters_from_overrides=True)
            try:
                return {k: p.value for k, p in node.get_parameters_by_prefix("").items()
                        if p.type_ != Parameter.Type.NOT_SET}
            finally:
                node.destroy_node()

        assert parameters("ovss_node", "robot")["vocabulary"] == config[0]["vocabulary"]
        got = parameters("local_costmap", "local_costmap")
    finally:
        rclpy.shutdown(context=ctx)
    expected = {f"semantic_segmentation_layer.{k}": t for k, t in LAYER_TYPES.items()}
    for source, values in _sources(layer).items():
        expected.update({f"semantic_segmentation_layer.{source}.{k}": t for k, t in SOURCE_TYPES.items()})
        for class_type in values["class_types"]:
            expected.update({f"semantic_segmentation_layer.{source}.{class_type}.{k}": t
                             for k, t in CLASS_TYPES.items()})
    wrong = {k: type(got.get(k)).__name__ for k, t in expected.items() if type(got.get(k)) is not t}
    assert not wrong, wrong
