"""clap_policy_ros: the ROS 2 side of CLAP (rclpy wiring; everything learned is in clap_train)."""

import glob

from setuptools import find_packages, setup

package_name = "clap_policy_ros"


def files(pattern):
    return sorted(p for p in glob.glob(pattern, recursive=True) if not p.endswith("/"))


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        # launch/ and config/ are the workspace's top-level folders (symlinked here).
        ("share/" + package_name + "/launch", files("launch/*.launch.py")),
        ("share/" + package_name + "/config", files("config/*.yaml") + files("config/*.rviz")),
        ("share/" + package_name + "/config/contract", files("config/contract/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="CLAP developers",
    maintainer_email="clap@example.com",
    description="CLAP policy node, synchronizer, chunk executor, safety filter and bag replay.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy_node = clap_policy_ros.node:main",
            "replay = clap_policy_ros.replay:main",
        ],
    },
)
