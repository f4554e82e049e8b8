"""Test harness: the policy node in its own process, a checking node in the test process.

Real rclpy and real DDS on the test's ROS_DOMAIN_ID (conftest.py gives each pytest process its
own). ``start_policy_node`` writes a params file (config/astribot.yaml with overrides) and runs
the installed ``policy_node`` executable; ``Checker`` publishes cameras from a thread at 30 Hz,
records what the node publishes, and drives lifecycle transitions through
/clap_policy/change_state.
"""

from __future__ import annotations

import collections
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
import yaml
from clap_msgs.msg import ActionChunk, PolicyStatus, Subtask
from clap_train.cli import find_ros_executable
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from clap_policy_ros.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float64

ROOT = pathlib.Path(__file__).resolve().parents[3]
TEST_DIR = pathlib.Path(__file__).resolve().parent
CAMERAS = {"head": "/astribot/camera/head/image_raw",
           "left_wrist": "/astribot/camera/left_wrist/image_raw",
           "right_wrist": "/astribot/camera/right_wrist/image_raw"}
TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE,
               "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE,
               "cleanup": Transition.TRANSITION_CLEANUP}


def policy_node_executable() -> str:
    found = find_ros_executable("clap_policy_ros", "policy_node")
    if not found:
        raise RuntimeError("policy_node is not installed: colcon build clap_policy_ros")
    return found


def write_fake_model(path: pathlib.Path, sleep: float = 0.02) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "fake.json").write_text(f'{{"sleep": {sleep}}}')
    return path


def start_policy_node(tmp_path: pathlib.Path, **overrides) -> subprocess.Popen:
    """Run policy_node with config/astribot.yaml + overrides; stdout/stderr go to a log file."""
    params = yaml.safe_load((ROOT / "config" / "astribot.yaml").read_text())
    node_params = params["clap_policy"]["ros__parameters"]
    node_params.update({"episode_log": str(tmp_path / "episodes.jsonl")})
    node_params.update(overrides)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR), env.get("PYTHONPATH", "")])
    log = open(tmp_path / "node.log", "w")
    return subprocess.Popen([policy_node_executable(), "--ros-args", "--params-file",
                             str(params_file)], stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(2)  # SIGINT: rclpy shuts down cleanly
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
        for topic, cls in [("/clap/action_chunk", ActionChunk), ("/clap/status", PolicyStatus),
                           ("/clap/subtask", Subtask),
                           ("/astribot/left_arm/target_pose", PoseStamped),
                           ("/astribot/right_arm/target_pose", PoseStamped),
                           ("/astribot/left_gripper/command", Float64)]:
            self.create_subscription(cls, topic, lambda m, t=topic: self._record(t, m), reliable)
        for topic, cls, callback in extra_subscriptions:  # before spinning: picked up for sure
            self.create_subscription(cls, topic, callback, reliable)
        self.change_state_client = self.create_client(ChangeState, "/clap_policy/change_state")
        self.get_state_client = self.create_client(GetState, "/clap_policy/get_state")
        self.head_value = 100
        self.bad_topic = None
        self.publishing = False
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
            if self.publishing:
                stamp = self.get_clock().now().to_msg()
                for key, pub in self.cam_pubs.items():
                    value = self.head_value if key == "head" else 50
                    enc = "yuv422" if CAMERAS[key] == self.bad_topic else "rgb8"
                    pub.publish(image_msg(value, stamp, encoding=enc))
            time.sleep(1 / 30)

    def call(self, client, request, timeout=10.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {client.srv_name} did not answer")
            time.sleep(0.01)
        return future.result()

    def transition(self, name: str) -> bool:
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[name]
        return self.call(self.change_state_client, request, timeout=30.0).success

    def state(self, timeout: float = 10.0) -> str:
        """Lifecycle state label; "" when the node does not answer in time (busy starting)."""
        try:
            return self.call(self.get_state_client, GetState.Request(),
                             timeout).current_state.label
        except TimeoutError:
            return ""

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
        what arrived within 1 s tests the machine, not the node."""
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
