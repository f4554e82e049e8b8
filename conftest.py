"""Test-session defaults shared by every package's tests.

ROS tests run over real DDS: keep discovery on this machine and give each pytest process a
domain id of its own (unless the caller chose one), so parallel test runs do not hear each
other. No model hub is reachable: transformers must stay offline.
"""

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 1))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
