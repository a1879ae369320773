"""What launch/ovss.launch.py decides (remappings, overrides, rviz topics); the launch file itself needs
launch/launch_ros (see test_launch_file.py)."""
import ast
import sys
from pathlib import Path

import pytest
import yaml

from ovss_ros.ros.launch_logic import (PROFILE_VARIABLES, node_environment, node_parameter_overrides,
                                       node_remappings, rviz_config)

REPO = Path(__file__).resolve().parents[2]


def test_single_camera_remaps_relative_image():
    assert node_remappings([], ["/cam/color/image_raw"]) == [("image", "/cam/color/image_raw")]
    assert node_remappings([], []) == []


def test_multi_camera_and_compressed_remaps():
    assert node_remappings(["front", "rear"], ["/f/img", "/r/img"], "compressed") == [
        ("front/image/compressed", "/f/img/compressed"), ("rear/image/compressed", "/r/img/compressed")]
    with pytest.raises(ValueError, match="one per camera"):
        node_remappings(["front", "rear"], ["/f/img"])


def test_empty_launch_arguments_leave_the_params_file_alone():
    assert node_parameter_overrides() == {"use_sim_time": False}
    assert node_parameter_overrides(model="/m", preset="tiny", vocabulary="a, b c", cameras=["x"]) == {
        "use_sim_time": False, "model": "/m", "preset": "tiny", "vocabulary": ["a", "b c"], "cameras": ["x"]}
    assert node_parameter_overrides(model="/pg", method="pgseg") == {
        "use_sim_time": False, "model": "/pg", "method": "pgseg"}


def _displays(text: str) -> list:
    return yaml.safe_load(text)["Visualization Manager"]["Displays"]


def _fixed_frame(text: str) -> str:
    return yaml.safe_load(text)["Visualization Manager"]["Global Options"]["Fixed Frame"]


def test_rviz_config_follows_namespace_and_camera():
    text = (REPO / "config" / "ovss.rviz").read_text()
    moved = rviz_config(text, "/robot", "front", "/front/color/image_raw")
    assert [d["Topic"]["Value"] for d in _displays(moved)] == ["/front/color/image_raw",
                                                               "/robot/front/segmentation/overlay"]
    assert [d["Topic"]["Value"] for d in _displays(rviz_config(text))] == ["/image", "/segmentation/overlay"]


def test_rviz_shows_labels_in_colour_not_as_class_ids():
    """A mono8 image of ids 0..N is near black in rviz; the overlay (rgb8, stable colours) shows the labels."""
    topics = [d["Topic"]["Value"] for d in _displays((REPO / "config" / "ovss.rviz").read_text())]
    assert "/segmentation/overlay" in topics
    assert not [t for t in topics if t.endswith(("/labels", "/confidence"))], topics


def test_rviz_fixed_frame_is_the_argument_or_the_files():
    text = (REPO / "config" / "ovss.rviz").read_text()
    assert _fixed_frame(text) == "camera_link"                       # the shipped default: a camera's frame
    assert _fixed_frame(rviz_config(text, fixed_frame="front_camera_color_optical_frame")) == \
        "front_camera_color_optical_frame"
    assert _fixed_frame(rviz_config(text, fixed_frame="")) == "camera_link"   # empty keeps the file's
    custom = text.replace("Fixed Frame: camera_link", "Fixed Frame: odom")
    assert _fixed_frame(rviz_config(custom)) == "odom"                # an operator's own config keeps its frame
    for bad in ("/map", "base link", "map\nPanels: x", "a:b"):
        with pytest.raises(ValueError, match="not a TF frame id"):
            rviz_config(text, fixed_frame=bad)


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((REPO / "launch" / "ovss.launch.py").read_text())
    args = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGS")
    names = {elt.elts[0].value for elt in args.value.elts}
    assert {"image_topics", "params_file", "namespace", "model", "method", "device", "preset", "rviz",
            "fixed_frame", "fastdds_profile", "fastdds_profile_file"} <= names


def _parameter_blocks(data: dict, path: str = "") -> list[tuple[str, dict]]:
    """(node path, parameters) of a ROS parameter file: node names (wildcards allowed), nested by namespace,
    down to a ros__parameters mapping."""
    assert isinstance(data, dict) and data, f"{path or '/'}: no node entries"
    if "ros__parameters" in data:
        assert set(data) == {"ros__parameters"}, f"{path}: keys beside ros__parameters: {sorted(data)}"
        return [(path, data["ros__parameters"])]
    return [block for name, sub in data.items() for block in _parameter_blocks(sub, f"{path}/{name.strip('/')}")]


def test_params_files_are_valid_ros_parameter_files():
    for path in (REPO / "config").glob("*.yaml"):
        blocks = _parameter_blocks(yaml.safe_load(path.read_text()))
        assert all(isinstance(params, dict) and params for _, params in blocks), path


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stub_launch_modules(monkeypatch):
    """Minimal stand-ins for launch/launch_ros (absent here) that record what the launch file builds."""
    import types

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    mods = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    mods["launch"].LaunchDescription = lambda entities: list(entities)
    mods["launch.actions"].DeclareLaunchArgument = lambda name, default_value, description: (name, default_value)
    mods["launch.actions"].OpaqueFunction = lambda function: function
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = _Recorder
    mods["launch_ros.actions"].LifecycleNode = type("LifecycleNode", (_Recorder,), {})
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    import ament_index_python.packages as packages
    monkeypatch.setattr(packages, "get_package_share_directory", lambda pkg: str(REPO))


def test_large_frames_profile_goes_to_the_node_unless_off_or_already_set():
    on = node_environment("true", "/share/p.xml", environ={})
    assert on["FASTDDS_DEFAULT_PROFILES_FILE"] == "/share/p.xml" and set(on) == set(PROFILE_VARIABLES)
    assert node_environment("false", "/share/p.xml", environ={}) == {}
    assert node_environment("true", "/share/p.xml", environ={"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}


def test_shipped_profile_sizes_shared_memory_for_4k_frames():
    import xml.etree.ElementTree as ET

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(REPO / "config" / "fastdds_large_frames.xml").getroot()
    shm = next(t for t in root.iterfind(".//d:transport_descriptor", ns)
               if t.findtext("d:type", namespaces=ns) == "SHM")
    segment, message = int(shm.findtext("d:segment_size", namespaces=ns)), int(shm.findtext("d:maxMessageSize",
                                                                                               namespaces=ns))
    assert message >= 3840 * 2160 * 3 and segment >= message   # Fast DDS refuses a message larger than the segment
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    rtps = participant.find("d:rtps", ns)
    assert rtps.findtext("d:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in rtps.iterfind("d:userTransports/d:transport_id", ns)]
    kinds = {t.findtext("d:transport_id", namespaces=ns): t.findtext("d:type", namespaces=ns)
             for t in root.iterfind(".//d:transport_descriptor", ns)}
    assert sorted(kinds[t] for t in used) == ["SHM", "UDPv4"]   # UDP for discovery and other hosts


def _launch_entities(monkeypatch):
    import importlib.util

    for var in PROFILE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    _stub_launch_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location("ovss_launch", REPO / "launch" / "ovss.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def test_launch_without_rviz_writes_nothing(monkeypatch, tmp_path):
    entities = _launch_entities(monkeypatch)
    declared = dict(e for e in entities if isinstance(e, tuple))
    assert declared["rviz"] == "false"
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))           # where a generated rviz config would go
    actions = entities[-1]({**declared, "image_topics": "/cam/image_raw"})
    assert [type(a).__name__ for a in actions] == ["LifecycleNode"]
    assert list(tmp_path.iterdir()) == []
    with_rviz = entities[-1]({**declared, "rviz": "true", "fixed_frame": "base_link"})
    rviz_file = Path(with_rviz[1].kwargs["arguments"][1])
    assert rviz_file.parent.parent == tmp_path and _fixed_frame(rviz_file.read_text()) == "base_link"


def test_launch_file_builds_node_and_rviz_from_arguments(monkeypatch):
    entities = _launch_entities(monkeypatch)
    declared = dict(e for e in entities if isinstance(e, tuple))
    context = {**declared, "image_topics": "/cam/image_raw", "namespace": "/robot", "vocabulary": "a, b c",
               "rviz": "true", "preset": "tiny"}
    node, rviz = entities[-1](context)
    kw = node.kwargs
    pgseg_node, _ = entities[-1]({**context, "method": "pgseg"})   # forwarded like model and preset
    assert pgseg_node.kwargs["parameters"][1]["method"] == "pgseg"
    assert type(node).__name__ == "LifecycleNode"   # lifecycle services exist for a manager
    assert (kw["package"], kw["executable"], kw["namespace"]) == ("ovss_ros", "ovss_node", "/robot")
    assert kw["parameters"][0] == str(REPO / "config" / "ovss.yaml")
    assert kw["parameters"][1] == {"use_sim_time": False, "preset": "tiny", "vocabulary": ["a", "b c"]}
    assert kw["remappings"] == [("image", "/cam/image_raw")]
    assert kw["additional_env"]["FASTDDS_DEFAULT_PROFILES_FILE"] == str(REPO / "config" / "fastdds_large_frames.xml")
    plain_node, _ = entities[-1]({**context, "fastdds_profile": "false"})
    assert plain_node.kwargs["additional_env"] == {}
    assert rviz.kwargs["executable"] == "rviz2"
    rviz_file = Path(rviz.kwargs["arguments"][1])
    assert [d["Topic"]["Value"] for d in _displays(rviz_file.read_text())] == ["/cam/image_raw",
                                                                               "/robot/segmentation/overlay"]
    assert _fixed_frame(rviz_file.read_text()) == "camera_link"      # fixed_frame left empty: the file's
