"""Test harness: the policy node in its own process, a checking node in the test process.

Real rclpy and real DDS on the test's ROS_DOMAIN_ID (conftest.py gives each pytest process its
own). ``start_policy_node`` runs the installed ``policy_node`` executable with
config/astribot.yaml and the test's overrides (clap_policy_ros.client); ``write_contract`` writes
a changed copy of the topic contract for it. ``Checker`` publishes cameras from a thread at
30 Hz, records what the node publishes, and drives lifecycle transitions. Topics come from the
contract (``CONTRACT``).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from clap_msgs.msg import ActionChunk, PolicyStatus, Subtask
from clap_train.data.contract import load_contract
from geometry_msgs.msg import PoseStamped
from clap_policy_ros import client
from clap_policy_ros.client import LifecycleClient, stop_process  # noqa: F401 - for the tests
from clap_policy_ros.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float64

ROOT = pathlib.Path(__file__).resolve().parents[3]
TEST_DIR = pathlib.Path(__file__).resolve().parent
CONTRACT = load_contract()
OUTPUTS = CONTRACT.node_outputs()
CAMERAS = {c.name: c.topic for c in CONTRACT.cameras}
LEFT_TARGET = CONTRACT.action.arms[0].pose.topic


def write_contract(path: pathlib.Path, max_age_s: float | None = None, **changes) -> pathlib.Path:
    """Write the default contract with every camera's ``max_age_s`` and ``changes`` replaced."""
    contract = dataclasses.replace(CONTRACT, **changes)
    if max_age_s is not None:
        contract.cameras = [dataclasses.replace(c, max_age_s=max_age_s) for c in contract.cameras]
    path.write_text(contract.to_yaml())
    return path


def write_fake_model(path: pathlib.Path, sleep: float = 0.02) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "fake.json").write_text(f'{{"sleep": {sleep}}}')
    return path


def start_policy_node(tmp_path: pathlib.Path, ros_args=(), **overrides) -> subprocess.Popen:
    """Run policy_node with config/astribot.yaml + overrides; its output goes to node.log."""
    overrides.setdefault("episode_log", str(tmp_path / "episodes.jsonl"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR), env.get("PYTHONPATH", "")])
    params = client.write_params(tmp_path / "params.yaml", overrides)
    return client.start_policy_node([ROOT / "config" / "astribot.yaml", params],
                                    tmp_path / "node.log", ros_args=ros_args, env=env)


def image_msg(value: int, stamp, size: int = 32, encoding: str = "rgb8") -> Image:
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = "camera"
    msg.height = msg.width = size
    msg.encoding = encoding
    msg.step = size * 3
    msg.data = np.full((size, size, 3), value, dtype=np.uint8).tobytes()
    return msg


class Checker(Node):
    """The test's node: camera publisher thread, recorders, lifecycle and service clients."""

    def __init__(self, context, extra_subscriptions=()):
        super().__init__("clap_policy_checker", context=context)
        self.context_ = context
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.cam_pubs = {k: self.create_publisher(Image, t, qos_profile_sensor_data)
                         for k, t in CAMERAS.items()}
        self.received = collections.defaultdict(list)  # topic -> [(monotonic, msg)]
        self._rx_lock = threading.Lock()
        arms = CONTRACT.action.arms
        for topic, cls in [(OUTPUTS.action_chunk, ActionChunk), (OUTPUTS.status, PolicyStatus),
                           (CONTRACT.subtask.topic, Subtask),
                           *((arm.pose.topic, PoseStamped) for arm in arms),
                           (arms[0].gripper.topic, Float64)]:
            self.create_subscription(cls, topic, lambda m, t=topic: self._record(t, m), reliable)
        for topic, cls, callback in extra_subscriptions:  # before spinning: picked up for sure
            self.create_subscription(cls, topic, callback, reliable)
        self.lifecycle = LifecycleClient(self)
        self.head_value = 100
        self.bad_topic = None
        self.publishing = False
        self.last_camera_stamp = None  # seconds: the stamp of the last camera set sent
        self._cam_lock = threading.Lock()
        self._stop = False
        self._executor = MultiThreadedExecutor(num_threads=2, context=context)
        self._executor.add_node(self)
        self._spin = threading.Thread(target=self._executor.spin, daemon=True)
        self._spin.start()
        self._cam_thread = threading.Thread(target=self._camera_loop, daemon=True)
        self._cam_thread.start()

    def _record(self, topic, msg):
        with self._rx_lock:
            self.received[topic].append((time.monotonic(), msg))

    def messages(self, topic, since: float = 0.0):
        with self._rx_lock:
            return [(t, m) for t, m in self.received[topic] if t >= since]

    def _camera_loop(self):
        while not self._stop:
            with self._cam_lock:
                if self.publishing:
                    stamp = self.get_clock().now().to_msg()
                    for key, pub in self.cam_pubs.items():
                        value = self.head_value if key == "head" else 50
                        enc = "yuv422" if CAMERAS[key] == self.bad_topic else "rgb8"
                        pub.publish(image_msg(value, stamp, encoding=enc))
                    self.last_camera_stamp = stamp.sec + stamp.nanosec * 1e-9
            time.sleep(1 / 30)

    def stop_cameras(self) -> float:
        """Stop publishing cameras; return the stamp of the last set sent (wall clock, s).

        A set the camera thread is sending when this is called is sent whole first, and its
        stamp is the one returned: the time a test measures a stale hold from.
        """
        with self._cam_lock:
            self.publishing = False
            return self.last_camera_stamp

    def call(self, service_client, request, timeout=10.0):
        return client.call(service_client, request, timeout)

    def transition(self, name: str) -> bool:
        return self.lifecycle.transition(name)

    def state(self, timeout: float = 10.0) -> str:
        """Lifecycle state label; "" when the node does not answer in time (busy starting)."""
        return self.lifecycle.state(timeout)

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def stamped_after(self, topic: str, wall_time: float, count: int, timeout: float = 15.0):
        """Wait for ``count`` messages on ``topic`` that the node stamped after ``wall_time``.

        Conditions are checked on the node's own header stamps, never on a fixed window of
        arrival times: on a loaded machine delivery comes in bursts, and a test that counts
        what arrived within 1 s tests the machine, not the node.
        """
        def enough():
            got = [m for _, m in self.messages(topic)
                   if m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 > wall_time]
            return got if len(got) >= count else None
        return self.wait_for(enough, timeout, what=f"{count} messages on {topic} stamped after "
                                                   f"{wall_time:.3f}")

    def close(self):
        self._stop = True
        self._cam_thread.join(timeout=2)
        self._executor.shutdown(timeout_sec=2)
        self._spin.join(timeout=2)
        self.destroy_node()
        rclpy.try_shutdown(context=self.context_)


def make_checker(extra_subscriptions=()) -> Checker:
    """The checking node; ``extra_subscriptions``: (topic, msg class, callback) triples."""
    context = rclpy.Context()  # one context (DDS participant) per checker: tests stay isolated
    rclpy.init(args=sys.argv[:1], context=context)
    return Checker(context, extra_subscriptions)
