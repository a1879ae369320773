"""launch_testing test of launch/ovss.launch.py: the node comes up from the launch file with a tiny model
and publishes labels for a camera image. Needs launch, launch_ros, launch_testing(_ros) and an installed
ovss_ros (colcon build); it is skipped where launch_testing is missing (the PyPI ROS wheels have none)."""
import os
import sys
import tempfile
import time
import unittest

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # rostest_helpers, when run by launch_test

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed (ROS 2 apt packages only, not on PyPI); "
                             "run on a robot or CI with `colcon test --packages-select ovss_ros`")
pytest.importorskip("launch_ros", reason="launch_ros is not installed")
ament = pytest.importorskip("ament_index_python.packages", reason="ament_index_python is not installed")

import launch  # noqa: E402
import launch.launch_description_sources  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ovss_ros.ros import qos  # noqa: E402
from rostest_helpers import image_msg, scene  # noqa: E402

NS = "/launch_test"


@pytest.mark.launch_test
def generate_test_description():
    try:
        share = ament.get_package_share_directory("ovss_ros")
    except Exception as exc:  # noqa: BLE001 - PackageNotFoundError or a missing AMENT_PREFIX_PATH
        pytest.skip(f"ovss_ros is not installed in an ament prefix ({exc}); colcon build it first")
    from ovss_ros.pnp_ovss.tiny_model import build_blip, save_model

    model_dir = tempfile.mkdtemp(prefix="ovss_launch_model_")
    save_model(*build_blip(["red", "circle", "dog"], architecture="tiny", seed=0), model_dir)
    include = launch.actions.IncludeLaunchDescription(
        launch.launch_description_sources.PythonLaunchDescriptionSource(
            os.path.join(share, "launch", "ovss.launch.py")),
        launch_arguments={"namespace": NS, "model": model_dir, "device": "cpu", "preset": "tiny",
                          "vocabulary": "red circle, dog", "image_topics": "/launch_test_camera/image_raw",
                          "rviz": "false"}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestLabelsArrive(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("launch_test_probe")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_labels_for_the_remapped_camera(self):
        got = []
        self.node.create_subscription(Image, f"{NS}/segmentation/labels", got.append, qos.reliable(10))
        pub = self.node.create_publisher(Image, "/launch_test_camera/image_raw", qos.reliable(10))
        deadline = time.monotonic() + 120
        while not got and time.monotonic() < deadline:
            pub.publish(image_msg(scene(48, 64), "rgb8", 42, "launch_cam"))
            rclpy.spin_once(self.node, timeout_sec=1.0)
        self.assertTrue(got, "no labels from the launched node")
        self.assertEqual((got[0].encoding, got[0].width, got[0].height, got[0].header.frame_id),
                         ("mono8", 64, 48, "launch_cam"))


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
