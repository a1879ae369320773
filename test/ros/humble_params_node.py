"""ovss_node as it runs on an rclpy without post-set parameter callbacks (Humble's): the method is removed
from rclpy's Node before the node is made, so node_params.add_post_set_callback takes its guard-condition
path. Run as a script by test_distro_branches.py, with the node's usual --ros-args."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # this tree's ovss_ros, as `-m` would find it

from rclpy.node import Node  # noqa: E402

del Node.add_post_set_parameters_callback

from ovss_ros.ros.node import main  # noqa: E402

sys.exit(main())
