"""A plain rclpy node that stays until SIGINT, run with ovss_node's --ros-args (its name and namespace come
from the remaps): the twin test_node_validation.py holds in the graph for as long as it needs, where a second
ovss_node would leave as soon as it sees the first (too soon, at times, for the first to see it at all)."""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException

rclpy.init(args=sys.argv)
node = rclpy.create_node("same_name_node")
print("same_name_node: up", flush=True)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    node.destroy_node()
    rclpy.try_shutdown()
