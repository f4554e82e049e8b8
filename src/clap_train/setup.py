"""clap_train: ROS-free training, data and inference code of CLAP.

Builds with colcon as an ament_python package and installs with plain pip
(``pip install src/clap_train``) on machines without ROS.
"""

from setuptools import find_packages, setup

package_name = "clap_train"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={package_name: ["configs/*.yaml", "configs/**/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    python_requires=">=3.11",
    install_requires=[
        "numpy",
        "scipy",
        "PyYAML",
        "tqdm",
        "matplotlib",
        "pyarrow",
        "av",
        "pillow",
        "safetensors",
        "torch",
        "transformers>=5.0",
        "accelerate",
        "peft",
        "rosbags",
        "tensorboard",
    ],
    zip_safe=True,
    maintainer="CLAP developers",
    maintainer_email="clap@example.com",
    description="CLAP training, data conversion and the ROS-free ClapPolicy inference API.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "clap = clap_train.cli:main",
        ],
    },
)
