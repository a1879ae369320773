"""ovss-label-bags: segment many rosbags on a Ray cluster (a local runtime by default).

The layer above `ros`: it reuses the bag tools of ovss_ros.ros (the same per-frame work and bag writing as
ovss-bag-segment) and nothing imports it. Ray is an optional dependency (`pip install .[fleet]`), imported
only here.
"""
