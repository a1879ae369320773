"""Demos that drive the real ROS 2 node from outside: they sit above the ROS layer, the toy world and the
evaluation (imports flow demo -> ros, toy_world, evaluation; nothing imports the demo).

    python -m ovss_ros.demo.toy_demo --out out/demo      # what scripts/demo.sh runs
"""
