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


def test_rviz_config_follows_namespace_and_camera():
    text = (REPO / "config" / "ovss.rviz").read_text()
    moved = yaml.safe_load(rviz_config(text, "/robot", "front", "/front/color/image_raw"))
    topics = [d["Topic"]["Value"] for d in moved["Visualization Manager"]["Displays"]]
    assert topics == ["/front/color/image_raw", "/robot/front/segmentation/overlay",
                      "/robot/front/segmentation/labels"]
    same = yaml.safe_load(rviz_config(text))
    assert [d["Topic"]["Value"] for d in same["Visualization Manager"]["Displays"]] == [
        "/image", "/segmentation/overlay", "/segmentation/labels"]


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((REPO / "launch" / "ovss.launch.py").read_text())
    args = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGS")
    names = {elt.elts[0].value for elt in args.value.elts}
    assert {"image_topics", "params_file", "namespace", "model", "method", "device", "preset", "rviz",
            "fastdds_profile", "fastdds_profile_file"} <= names


def test_params_files_are_valid_ros_parameter_files():
    for path in (REPO / "config").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert "ros__parameters" in data["/**"], path


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
        "launch", "launch.actions", "launch.conditions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    mods["launch"].LaunchDescription = lambda entities: list(entities)
    mods["launch.actions"].DeclareLaunchArgument = lambda name, default_value, description: (name, default_value)
    mods["launch.actions"].OpaqueFunction = lambda function: function
    mods["launch.conditions"].IfCondition = lambda value: ("if", value)
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


def test_launch_file_builds_node_and_rviz_from_arguments(monkeypatch):
    import importlib.util

    for var in PROFILE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    _stub_launch_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location("ovss_launch", REPO / "launch" / "ovss.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description()
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
    assert rviz.kwargs["executable"] == "rviz2" and rviz.kwargs["condition"] == ("if", "true")
    rviz_file = Path(rviz.kwargs["arguments"][1])
    topics = [d["Topic"]["Value"] for d in yaml.safe_load(rviz_file.read_text())["Visualization Manager"]["Displays"]]
    assert topics == ["/cam/image_raw", "/robot/segmentation/overlay", "/robot/segmentation/labels"]
