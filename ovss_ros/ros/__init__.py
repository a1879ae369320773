"""The ROS 2 layer: node, message conversion, frame worker and bag tools.

Imports flow ros -> engine only; the engine never imports rclpy.
"""
