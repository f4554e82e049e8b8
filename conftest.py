"""Test-session defaults shared by every package's tests.

ROS tests run over real DDS: discovery stays on this machine, and every test module gets a
ROS domain id of its own, so that nodes a module starts (and that may take a moment to exit)
never talk to the next module's nodes, and parallel test runs on one machine do not hear each
other. No model hub is reachable: transformers must stay offline.
"""

import itertools
import os
import socket

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

# Domain ids 1..101: 0 is the default a robot uses, and on Linux the DDS ports of domains above
# 101 (7400 + 250 * id + ...) fall into the kernel's ephemeral port range (32768-60999), where any
# socket of any process may already hold them (ROS 2 docs: "Choosing a domain ID"). The benchmark
# (bench/node.py) and demos pick domains 150-230, so they never meet a test module either.
# The first id of this process depends on its pid, so two test runs on one machine start apart,
# and an id some running participant already uses (another test run, a benchmark, a node left over
# from a killed run) is skipped: a module whose nodes hear a stranger's cameras, targets, or
# /clock sees stale cameras, extra or missing messages, and lifecycle calls answered by the
# wrong node.
_DOMAINS = list(range(1, 102))
_DOMAIN_IDS = itertools.cycle(_DOMAINS[os.getpid() % len(_DOMAINS):] +
                              _DOMAINS[:os.getpid() % len(_DOMAINS)])


def _domain_in_use(domain: int, participants: int = 12) -> bool:
    """True when some DDS participant on this machine listens on ``domain``'s unicast ports.

    Fast DDS binds 7410 + 250 * domain + 2 * participant_id (discovery) and the next port (user
    data) exclusively, so a failed bind means a live participant (RTPS well-known ports)."""
    base = 7400 + 250 * domain
    for port in [base + 10 + 2 * p + k for p in range(participants) for k in (0, 1)]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                return True
    return False


def _next_free_domain() -> int:
    for _ in range(len(_DOMAINS)):
        domain = next(_DOMAIN_IDS)
        if not _domain_in_use(domain):
            return domain
    raise RuntimeError("every ROS domain id 1..101 has live DDS participants on this machine")


@pytest.fixture(autouse=True, scope="module")
def _ros_domain_per_module():
    """A fresh, unused ROS_DOMAIN_ID for each test module (subprocesses and contexts inherit it)."""
    previous = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(_next_free_domain())
    yield
    if previous is None:
        os.environ.pop("ROS_DOMAIN_ID", None)
    else:
        os.environ["ROS_DOMAIN_ID"] = previous
