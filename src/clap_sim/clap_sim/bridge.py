"""The sim bridge node: the simulated robot on the contract's topics.

Node ``clap_sim_bridge`` steps the ALOHA end-effector scene at the contract rate (30 Hz times
``real_time_factor``), publishes sim time on ``/clock``, the three cameras
(``sensor_msgs/Image`` rgb8, or JPEG ``CompressedImage`` if the contract says so; header stamp
= sim time) and per-arm state (tool-point
``PoseStamped`` + gripper ``Float64``, 0 = closed .. 1 = open), and applies the per-arm
``PoseStamped`` targets and ``Float64`` gripper commands it receives (latest value wins).

At tick k the bridge applies the latest commands, advances the physics one period, and then
publishes the observation at the new sim time. Command callbacks only store the newest command
per arm (never waiting for a tick), so a long render cannot back commands up. Poses are in the
contract frame (``base_link`` = the simulator's world frame); a target in another frame, or one
that is not finite, is refused with a warning that names the topic, and the previous target is
kept.

``~/reset`` (std_srvs/Trigger) restarts the episode with the ``seed`` parameter and publishes
its instruction on the contract's instruction topic; the response message is JSON
({"task", "seed", "instruction"}). ``~/episode`` (std_msgs/String JSON, each tick) reports the
step, sim time, reward and success so far. With ``sync_commands`` the bridge waits (up to
``sync_timeout`` s of wall time) for a command stamped with the latest observation before it
steps: a lock-step mode for scripted or replayed commands, independent of CPU load.

Used in-process by ``sim eval`` and stand-alone as ``sim bridge`` / ``ros2 run clap_sim bridge``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from clap_policy_ros.executors import MultiThreadedExecutor
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from .scene import ARMS
from .vectors import vector14
from .tasks import TASKS, make_task
from .topics import COMPRESSED, jpeg_bytes, load_topics

PARAMETERS: dict[str, tuple[object, str]] = {
    "task": ("transfer_cube", f"simulated task ({', '.join(TASKS)})"),
    "seed": (0, "seed of the next ~/reset (object poses)"),
    "image_size": (224, "camera images are SIZE x SIZE"),
    "real_time_factor": (1.0, "sim seconds per wall second"),
    "publish_cameras": (True, "render and publish the three cameras"),
    "contract_file": ("", "topic contract YAML; empty = the default astribot contract"),
    "autostart": (True, "reset with `seed` and start stepping at start-up"),
    "sync_commands": (False, "step only once a command stamped with the last observation arrived"),
    "sync_timeout": (0.5, "longest wall-time wait for that command (s)"),
}


# Threads for an executor that spins a SimBridge: its four callback groups (tick, commands,
# ~/reset, the default group's parameter services) plus one. rclpy's MultiThreadedExecutor must
# never have every thread busy: it then re-submits the queued callbacks on every spin, a busy
# loop that holds the GIL and slowed the tick from 47 to under 1 per second.
EXECUTOR_THREADS = 5


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def to_stamp(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


@dataclass
class StepLog:
    """What the bridge saw at each tick of the current episode (for plots and videos)."""

    times: list[float] = field(default_factory=list)
    state: list[np.ndarray] = field(default_factory=list)
    target: list[np.ndarray] = field(default_factory=list)
    reward: list[int] = field(default_factory=list)
    frames: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)  # (step, camera -> image)
    command_latency: list[float] = field(default_factory=list)


class SimBridge(Node):
    """See the module docstring. ``overrides`` set parameter defaults (in-process use)."""

    def __init__(self, node_name: str = "clap_sim_bridge", overrides: dict | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        overrides = overrides or {}
        for name, (default, text) in PARAMETERS.items():
            self.declare_parameter(name, overrides.get(name, default), ParameterDescriptor(description=text))
        p = self.get_parameter
        self.topics = load_topics(p("contract_file").value or None)
        self.task = make_task(p("task").value)
        self.scene = self.task.make_scene(image_size=int(p("image_size").value), rate_hz=self.topics.rate_hz,
                                          render=True)
        self.period_ns = int(round(1e9 / self.topics.rate_hz))
        self.publish_cameras = bool(p("publish_cameras").value)
        self.sync_commands = bool(p("sync_commands").value)
        self.sync_timeout = float(p("sync_timeout").value)
        self.lock = threading.RLock()
        self.paused = True
        # An episode's end, checked in the tick itself (under the lock): the tick pauses the sim
        # right after the step that reaches it, so an episode has exactly ``step_limit`` steps
        # however late a polling thread (sim eval) notices.
        self.step_limit: int | None = None
        self.stop_on_success = False
        self.spec = None
        self.step_count = 0
        self.best_reward = 0
        self.clock_ns = 1_000_000_000  # sim time never goes back, across episodes too
        self.log = StepLog()
        self.record_frames = False
        self._last_cmd_ns = 0
        # (arm, "pose" | "gripper") -> (value, topic): the newest command, applied at the next
        # tick. Guarded by its own lock, held only to store or take commands.
        self._cmd_lock = threading.Lock()
        self._pending: dict[tuple[str, str], tuple] = {}
        self._wait_since: float | None = None
        self._obs_wall: dict[int, float] = {}
        self._warned: dict[str, float] = {}
        self.on_step: list = []  # callables(bridge) after each published observation

        # The tick (rendering can take longer than a period) has a callback group of its own,
        # the short command callbacks another, ~/reset a third; the scene is guarded by
        # ``self.lock``. With the tick in one group with everything else, a late tick kept
        # targets and ~/reset unanswered for tens of seconds. ``EXECUTOR_THREADS`` leaves a
        # thread free beyond these groups and the node's default one (parameter services).
        self._tick_group = MutuallyExclusiveCallbackGroup()
        command_group = MutuallyExclusiveCallbackGroup()
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_clock = self.create_publisher(Clock, "/clock", 10)
        self.compressed = self.topics.camera_type == COMPRESSED
        self.pub_cam = {name: self.create_publisher(CompressedImage if self.compressed else Image, topic, reliable)
                        for name, topic in self.topics.cameras.items()}
        self.pub_pose = {arm: self.create_publisher(PoseStamped, self.topics.state[arm].pose, reliable) for arm in ARMS}
        self.pub_grip = {arm: self.create_publisher(Float64, self.topics.state[arm].gripper, reliable) for arm in ARMS}
        self.pub_instruction = self.create_publisher(String, self.topics.instruction, latched)
        self.pub_episode = self.create_publisher(String, "~/episode", reliable)
        for arm in ARMS:
            cmd = self.topics.command[arm]
            self.create_subscription(PoseStamped, cmd.pose, lambda m, a=arm, t=cmd.pose: self._on_target(a, t, m),
                                     reliable, callback_group=command_group)
            self.create_subscription(Float64, cmd.gripper,
                                     lambda m, a=arm, t=cmd.gripper: self._on_gripper(a, t, m), reliable,
                                     callback_group=command_group)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=MutuallyExclusiveCallbackGroup())
        rtf = float(p("real_time_factor").value)
        if rtf <= 0:
            raise ValueError(f"real_time_factor must be > 0, got {rtf}")
        self.timer = self.create_timer(1.0 / (self.topics.rate_hz * rtf), self._on_tick,
                                       callback_group=self._tick_group)
        if bool(p("autostart").value):
            self.reset(int(p("seed").value))
            self.paused = False

    # --------------------------------------------------------------- commands
    def _warn(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) > 2.0:
            self._warned[key] = now
            self.get_logger().warning(text)

    def _on_target(self, arm: str, topic: str, msg: PoseStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.topics.frame_id:
            self._warn(topic, f"{topic}: target in frame {msg.header.frame_id!r} refused; the simulation "
                              f"takes targets in {self.topics.frame_id!r}")
            return
        o, q = msg.pose.position, msg.pose.orientation
        pose = (np.array([o.x, o.y, o.z]), np.array([q.w, q.x, q.y, q.z]))
        t = stamp_ns(msg.header.stamp)
        sent = self._obs_wall.get(t)
        with self._cmd_lock:
            self._pending[(arm, "pose")] = (pose, topic)
            self._last_cmd_ns = max(self._last_cmd_ns, t)
            if sent is not None and arm == "right":
                self.log.command_latency.append(time.monotonic() - sent)

    def _on_gripper(self, arm: str, topic: str, msg: Float64) -> None:
        with self._cmd_lock:
            self._pending[(arm, "gripper")] = (float(msg.data), topic)

    def _apply_commands(self) -> None:
        """Apply the newest command of each arm to the scene (with ``self.lock`` held)."""
        with self._cmd_lock:
            pending, self._pending = self._pending, {}
        for (arm, kind), (value, topic) in pending.items():
            try:
                if kind == "pose":
                    self.scene.set_arm_target(arm, *value)
                else:
                    self.scene.set_gripper(arm, value)
            except ValueError as exc:
                what = "target" if kind == "pose" else "gripper command"
                self._warn(topic, f"{topic}: {what} refused, previous {what} kept: {exc}")

    # ---------------------------------------------------------------- episode
    def reset(self, seed: int, record_frames: bool = False) -> str:
        """Start a new episode (objects by ``seed``), publish its instruction, keep paused-ness."""
        with self.lock:
            self.spec = self.task.reset(self.scene, int(seed))
            self.step_count = 0
            self.best_reward = 0
            self.log = StepLog()
            self.record_frames = record_frames
            self._obs_wall.clear()
            with self._cmd_lock:  # commands meant for the previous episode
                self._pending.clear()
                self._last_cmd_ns = 0
            self._wait_since = None
            self.pub_instruction.publish(String(data=self.spec.instruction))
            self._publish_observation()
            return self.spec.instruction

    def _on_reset(self, request, response):
        seed = int(self.get_parameter("seed").value)
        instruction = self.reset(seed)
        response.success = True
        response.message = json.dumps({"task": self.task.name, "seed": seed, "instruction": instruction})
        return response

    def state_vector(self) -> np.ndarray:
        return vector14({arm: self.scene.arm_pose(arm) for arm in ARMS})

    def target_vector(self) -> np.ndarray:
        return vector14({arm: self.scene.arm_target(arm) for arm in ARMS})

    @property
    def success(self) -> bool:
        return self.best_reward >= self.task.max_reward

    # ------------------------------------------------------------------- tick
    def republish(self) -> None:
        """Send the current observation again (e.g. once a lock-step peer is listening)."""
        with self.lock:
            self._publish_observation(log=False)

    def _on_tick(self) -> None:
        with self.lock:
            if self.paused or self.spec is None:
                return
            if self.sync_commands and self._last_cmd_ns < self.clock_ns:
                now = time.monotonic()
                if self._wait_since is None:
                    self._wait_since = now
                if now - self._wait_since < self.sync_timeout:
                    return
                self._warn("sync", f"no command for sim time {self.clock_ns * 1e-9:.3f}s within "
                                   f"{self.sync_timeout}s; stepping with the previous targets")
            self._wait_since = None
            self._apply_commands()
            self.log.target.append(self.target_vector())
            self.scene.step()
            self.clock_ns += self.period_ns
            self.step_count += 1
            reward = int(self.task.reward(self.scene, self.spec))
            self.best_reward = max(self.best_reward, reward)
            self.log.reward.append(reward)
            if ((self.step_limit is not None and self.step_count >= self.step_limit)
                    or (self.stop_on_success and self.success)):
                self.paused = True
            self._publish_observation()
            hooks = list(self.on_step)
        for hook in hooks:
            hook(self)

    def _publish_observation(self, log: bool = True) -> None:
        """Publish /clock, cameras and state at the current sim time (with the lock held).

        ``log=False`` re-sends the current observation without adding it to the episode log.
        """
        stamp = to_stamp(self.clock_ns)
        self.pub_clock.publish(Clock(clock=stamp))
        frame = self.topics.frame_id
        images, recorded = [], {}  # rendered before anything is sent: the round trip is timed from the first message
        if self.publish_cameras or self.record_frames:
            for name, pub in self.pub_cam.items():
                rgb = self.scene.render(name)
                if log and self.record_frames:
                    recorded[name] = rgb
                if self.publish_cameras:
                    if self.compressed:
                        msg = CompressedImage(format="jpeg", data=jpeg_bytes(rgb))
                    else:
                        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                                    step=3 * rgb.shape[1], data=rgb.tobytes())
                    msg.header.stamp, msg.header.frame_id = stamp, frame
                    images.append((pub, msg))
        # the send time is known before a reply can come back (a reply to an unknown time is not timed)
        self._obs_wall[self.clock_ns] = time.monotonic()
        if len(self._obs_wall) > 64:
            self._obs_wall.pop(next(iter(self._obs_wall)))
        for pub, msg in images:
            pub.publish(msg)
        for arm in ARMS:
            pose = self.scene.arm_pose(arm)
            msg = PoseStamped()
            msg.header.stamp, msg.header.frame_id = stamp, frame
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pose.pos)
            w, x, y, z = (float(v) for v in pose.quat)
            msg.pose.orientation.w, msg.pose.orientation.x = w, x
            msg.pose.orientation.y, msg.pose.orientation.z = y, z
            self.pub_pose[arm].publish(msg)
            self.pub_grip[arm].publish(Float64(data=float(pose.gripper)))
        if log:
            self.log.times.append(self.clock_ns * 1e-9)
            self.log.state.append(self.state_vector())
            if recorded:
                self.log.frames.append((self.step_count, recorded))
        self.pub_episode.publish(String(data=json.dumps({
            "task": self.task.name, "seed": self.spec.seed if self.spec else None, "step": self.step_count,
            "time": self.clock_ns * 1e-9, "reward": self.log.reward[-1] if self.log.reward else 0,
            "max_reward": self.best_reward, "success": self.success})))

    def destroy_node(self) -> None:
        self.scene.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bridge`` executable (``sim bridge``)."""
    rclpy.init(args=sys.argv if argv is None else ["bridge", *argv])
    node = None
    try:
        node = SimBridge()
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
        executor.add_node(node)
        node.get_logger().info(f"sim bridge: task {node.task.name}, seed {node.spec.seed if node.spec else '-'}, "
                               f"{node.topics.rate_hz:g} Hz")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
