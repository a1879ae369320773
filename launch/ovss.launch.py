"""Open-vocabulary segmentation node (+ rviz).

ros2 launch ovss_ros ovss.launch.py image_topics:=/camera/color/image_raw vocabulary:="person, chair" rviz:=true
ros2 launch ovss_ros ovss.launch.py cameras:=front,rear image_topics:=/front/image_raw,/rear/image_raw
ros2 launch ovss_ros ovss.launch.py fastdds_profile:=false    # Fast DDS defaults (no large-frames profile)
ros2 launch ovss_ros ovss.launch.py rviz:=true fixed_frame:=base_link
Arguments left empty keep the values of params_file (config/ovss.yaml by default)."""
import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from ovss_ros.ros.launch_logic import (is_true, node_environment, node_parameter_overrides, node_remappings,
                                       rviz_config, split_list)

SHARE = get_package_share_directory("ovss_ros")
ARGS = [
    ("image_topics", "", "camera image topic(s), comma-separated, one per camera; empty = relative `image`"),
    ("cameras", "", "camera prefixes sharing one model, comma-separated (e.g. front,rear); empty = one camera"),
    ("input_transport", "", "raw or compressed (subscribe <topic>/compressed); empty = params file"),
    ("params_file", os.path.join(SHARE, "config", "ovss.yaml"), "node parameters (YAML)"),
    ("namespace", "", "namespace of the node and all its topics"),
    ("model", "", "Hub id or local checkpoint directory; empty = params file"),
    ("method", "", "pnp_ovss (BLIP checkpoint) or pgseg (GroupViT/PGSeg checkpoint); empty = params file"),
    ("device", "", "auto, cpu, cuda, cuda:N; empty = params file"),
    ("preset", "", "paper, realtime, tiny or pgseg; empty = params file"),
    ("vocabulary", "", "initial class names, comma-separated; empty = params file / vocabulary topic"),
    ("use_sim_time", "false", "use /clock (bag replay with --clock)"),
    ("log_level", "info", "node log level"),
    ("rviz", "false", "start rviz2 with config/ovss.rviz (camera, overlay: the labels in colour)"),
    ("rviz_config", os.path.join(SHARE, "config", "ovss.rviz"), "rviz2 config to start from"),
    ("fixed_frame", "", "rviz2 fixed frame (your camera's frame_id or a TF frame such as base_link, map); "
                        "empty = the rviz config's (camera_link in config/ovss.rviz)"),
    ("fastdds_profile", "true", "give the node the Fast DDS large-frames profile (shared memory for camera-sized "
                                "messages; give it to the camera driver too: docs/ros_node.md); false = Fast DDS "
                                "defaults. A profile already set in the environment is kept"),
    ("fastdds_profile_file", os.path.join(SHARE, "config", "fastdds_large_frames.xml"),
     "Fast DDS XML profile used with fastdds_profile:=true"),
]


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGS}
    cameras = split_list(arg["cameras"])
    topics = split_list(arg["image_topics"])
    sim = arg["use_sim_time"].lower() in ("true", "1", "yes")
    overrides = node_parameter_overrides(arg["model"], arg["device"], arg["preset"], arg["vocabulary"], cameras,
                                         arg["input_transport"], sim, method=arg["method"])
    # a lifecycle node: it configures and activates itself (autostart), or a lifecycle manager drives it
    node = LifecycleNode(package="ovss_ros", executable="ovss_node", name="ovss_node", namespace=arg["namespace"],
                         parameters=[arg["params_file"], overrides],
                         remappings=node_remappings(cameras, topics, arg["input_transport"] or "raw"),
                         arguments=["--ros-args", "--log-level", arg["log_level"]], output="screen",
                         emulate_tty=True,
                         additional_env=node_environment(arg["fastdds_profile"], arg["fastdds_profile_file"]))
    if not is_true(arg["rviz"]):
        return [node]   # no rviz: nothing is read or written
    with open(arg["rviz_config"]) as f:
        text = rviz_config(f.read(), arg["namespace"], cameras[0] if cameras else "", topics[0] if topics else "",
                           arg["fixed_frame"])
    rviz_file = os.path.join(tempfile.mkdtemp(prefix="ovss_rviz_"), "ovss.rviz")
    with open(rviz_file, "w") as f:
        f.write(text)
    rviz = Node(package="rviz2", executable="rviz2", name="ovss_rviz", arguments=["-d", rviz_file],
                parameters=[{"use_sim_time": sim}], output="screen")
    return [node, rviz]


def generate_launch_description():
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=h) for n, d, h in ARGS]
                             + [OpaqueFunction(function=_nodes)])
