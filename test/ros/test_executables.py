"""The executables CMake installs into lib/ovss_ros (for `ros2 run`) and the console scripts start."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "scripts" / "ros").iterdir())


def test_ros2_run_executables_exist_and_are_executable():
    assert {p.name for p in SCRIPTS} >= {"ovss_node", "ovss_bag_play", "ovss_bag_segment", "ovss_label_bags"}
    for path in SCRIPTS:
        assert os.access(path, os.X_OK) and path.read_text().startswith("#!/usr/bin/env python3"), path


@pytest.mark.parametrize("name", ["ovss_bag_play", "ovss_bag_segment", "ovss_label_bags"])
def test_bag_commands_print_help(name):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "ros" / name), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "rosbag2" in out.stdout, out.stderr
