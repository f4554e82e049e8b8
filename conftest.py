"""Test-session defaults shared by every package's tests.

ROS tests run over real DDS: discovery stays on this machine, and every test module gets a
ROS domain id of its own, so that nodes a module starts (and that may take a moment to exit)
never talk to the next module's nodes, and parallel test runs on one machine do not hear each
other. No model hub is reachable: transformers must stay offline.
"""

import itertools
import os

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

# Fast DDS accepts domain ids 0..232; 0 is the default a robot uses, so start at 1. The first id
# of this process depends on its pid, so two test runs on one machine start apart.
_DOMAIN_IDS = itertools.cycle(range(1, 233))
for _ in range(os.getpid() % 232):
    next(_DOMAIN_IDS)


@pytest.fixture(autouse=True, scope="module")
def _ros_domain_per_module():
    """A fresh ROS_DOMAIN_ID for each test module (subprocesses and rclpy contexts inherit it)."""
    previous = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(next(_DOMAIN_IDS))
    yield
    if previous is None:
        os.environ.pop("ROS_DOMAIN_ID", None)
    else:
        os.environ["ROS_DOMAIN_ID"] = previous
