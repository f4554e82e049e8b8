"""clap_sim: ALOHA bimanual end-effector simulation, scripted demonstrations, sim bridge and eval."""

from setuptools import find_packages, setup

package_name = "clap_sim"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="CLAP developers",
    maintainer_email="clap@example.com",
    description="ALOHA end-effector simulation for CLAP: demos as rosbag2, human videos, sim bridge, closed-loop eval.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim = clap_sim.cli:main",
            "bridge = clap_sim.bridge:main",
        ],
    },
)
