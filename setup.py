"""pip install . : the engine and CLIs, usable without ROS. The ROS node needs rclpy and the generated
messages (colcon build, or scripts/setup.sh here)."""
import re
from pathlib import Path

from setuptools import find_packages, setup


def package_xml_version() -> str:
    """The version is written once, in package.xml (ROS convention); ovss_ros.__version__ reads it too."""
    text = (Path(__file__).resolve().parent / "package.xml").read_text(encoding="utf-8")
    return re.search(r"<version>\s*([^<\s]+)\s*</version>", text).group(1)


setup(
    name="ovss_ros",
    version=package_xml_version(),
    description="Open-vocabulary semantic segmentation (PnP-OVSS on BLIP) for ROS 2 and plain Python",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["ovss_ros", "ovss_ros.*"]),
    package_data={"ovss_ros": ["data/*", "data/**/*"]},
    install_requires=[
        "torch>=2.1",
        "transformers>=4.46,<6",
        "safetensors",
        "numpy",
        "pillow",
        "opencv-python-headless",
        "pydensecrf2",
        "tqdm",
    ],
    # fleet: ovss-label-bags on Ray, the only user of Ray (no rosdep key: a colcon-built robot runs without it)
    extras_require={"bags": ["rosbags"], "fleet": ["ray>=2.60", "rosbags"], "test": ["pytest", "scipy"]},
    entry_points={
        "console_scripts": [
            "ovss-segment = ovss_ros.cli:main",
            "ovss-node = ovss_ros.ros.node:main",
            "ovss-bag-play = ovss_ros.ros.bag_play:main",
            "ovss-bag-segment = ovss_ros.ros.bag_segment:main",
            "ovss-label-bags = ovss_ros.fleet.cli:main",
            "ovss-eval = ovss_ros.evaluation.cli:main",
            "ovss-train-toy = ovss_ros.toy_world.train:main",
            "ovss-toy-bag = ovss_ros.toy_world.bag:main",
            "ovss-toy-bag-score = ovss_ros.evaluation.bag_score:main",
            "ovss-convert-pgseg = ovss_ros.pgseg.convert:main",
        ],
    },
)
