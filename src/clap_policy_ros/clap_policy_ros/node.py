"""
The CLAP policy node: synchronized cameras in, safe 30 Hz end-effector commands out.

A LifecycleNode ``clap_policy``:

- configure: reads the topic contract and parameters, loads the policy (``ClapPolicy.load``),
  creates publishers, subscriptions and timers.
- activate: starts the inference worker thread and the control output.
- deactivate: stops inference first (joins the worker), then publishes a hold command (the last
  commanded pose) as the last message on the command topics.
- cleanup: frees the model and every entity created in configure.

Threads: camera callbacks convert images (clap_train.data.images, the converter's code) and feed
the synchronizer; the inference worker (a plain thread, off the executor) wakes on each new
complete camera set, and when the chunk executor wants a new plan runs ``predict`` on it; the
control timer (its own callback group) only reads the executor's plan under a short lock, so it
never waits for the model. Safety: stale cameras -> hold within max_age + one tick; NaN/inf
chunks rejected; workspace/speed/gripper limits (safety.py).
"""

from __future__ import annotations

import collections
import faulthandler
import importlib
import os
import pathlib
import signal
import sys
import threading
import time
import uuid

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from clap_msgs.action import ExecuteTask
from clap_msgs.msg import ActionChunk, CameraStatus, PolicyStatus, Subtask
from clap_msgs.srv import EndEpisode, SetInstruction, StartEpisode
from clap_train.data.contract import load_contract
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64, Header, String
from visualization_msgs.msg import MarkerArray

from .camera_reader import CameraReader
from .chunk_executor import EXECUTOR_MODES, ChunkExecutor, DelayEstimator, ExecutorConfig
from .conversions import ImageEncodingError, image_msg_to_rgb, pose_to_vector
from .executors import MultiThreadedExecutor
from .safety import ARM_OFFSETS, SafetyFilter, SafetyLimits
from .synchronizer import FreshestSetSynchronizer
from .visualization import chunk_markers, chunk_paths, pose_stamped

NODE_NAME = "clap_policy"
# One thread per callback group that can be busy at once (default group: lifecycle and
# parameter services; services; state and instruction inputs; control; status; and the
# action's reentrant group, one running goal plus goal/cancel requests), plus one, so that the
# control timer never waits for a thread. The cameras have an executor of their own.
EXECUTOR_THREADS = 8

# name -> (default, read_only, description). Defaults that come from the contract are None.
PARAMETERS: dict[str, tuple[object, bool, str]] = {
    "contract_file": ("", True, "topic contract YAML; empty = the default astribot contract"),
    "model_dir": ("", True, "policy checkpoint directory (ClapPolicy.load)"),
    "policy_class": ("clap_train.policy:ClapPolicy", True, "module:Class with .load(path)"),
    "device": ("cpu", True, "torch device for the model"),
    "mode": ("rf", False, "rf (flow head) or ntp (token decoding)"),
    "executor": ("rtc", True, "chunk executor: " + ", ".join(EXECUTOR_MODES)),
    "control_rate_hz": (30.0, True, "rate of the target/gripper commands"),
    "replan_every": (10, True, "control ticks between new chunks (execution horizon)"),
    "ensemble_m": (0.01, False, "temporal ensembling weight decay m in exp(-m*i)"),
    "warmup_chunks": (1, True, "first chunks whose delay is not counted (cold start)"),
    "sync_slop": (0.02, False, "max spread of the stamps of one camera set (s)"),
    "max_age": (0.1, False, "a camera older than this (s) stops new targets and holds"),
    "camera_topics": (None, True, "camera topics, in contract camera order"),
    "camera_message_type": (None, True,
                            "sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage"),
    "use_state": (True, True, "feed per-arm state (ee pose + gripper) to the policy"),
    "frame_id": (None, True, "frame of the published poses"),
    "left_workspace_min": ([-1.0, -1.0, 0.0], True, "left arm target box min xyz (m)"),
    "left_workspace_max": ([1.0, 1.0, 2.0], True, "left arm target box max xyz (m)"),
    "right_workspace_min": ([-1.0, -1.0, 0.0], True, "right arm target box min xyz (m)"),
    "right_workspace_max": ([1.0, 1.0, 2.0], True, "right arm target box max xyz (m)"),
    "max_linear_speed": (0.5, True, "max end-effector speed per arm (m/s)"),
    "max_angular_speed": (2.0, True, "max end-effector angular speed per arm (rad/s)"),
    "gripper_min": (0.0, True, "gripper command lower bound"),
    "gripper_max": (1.0, True, "gripper command upper bound"),
    "seed": (0, False, "base seed of the flow noise (chunk k uses seed + k)"),
    "instruction": ("", False, "initial instruction; empty = hold"),
    "episode_log": ("~/.clap/episodes.jsonl", True, "JSON-lines episode log (fsynced)"),
    "status_rate_hz": (5.0, True, "PolicyStatus rate"),
    "autostart": (False, True, "configure and activate at start-up (no lifecycle manager)"),
}
LIVE_CHECKS = {
    "mode": lambda v: v in ("rf", "ntp"),
    "sync_slop": lambda v: v >= 0,
    "max_age": lambda v: v > 0,
    "ensemble_m": lambda v: v >= 0,
}


def _type_name(cls) -> str:
    """Return the ROS type name of a message class, e.g. sensor_msgs/msg/Image."""
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def to_duration(seconds: float) -> Duration:
    """Convert seconds to builtin_interfaces/Duration."""
    seconds = max(0.0, float(seconds))
    return Duration(sec=int(seconds), nanosec=int(round((seconds % 1.0) * 1e9)) % 1_000_000_000)


def stamp_seconds(stamp) -> float:
    """Convert builtin_interfaces/Time to seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def load_policy_class(spec: str):
    """Import ``module:Class``; the error names the spec."""
    module_name, _, class_name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name or "ClapPolicy")
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"policy_class {spec!r} cannot be imported: {exc}") from exc


class PolicyNode(LifecycleNode):
    """LifecycleNode ``clap_policy``; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._contract = None
        for name, (default, read_only, text) in PARAMETERS.items():
            if default is None:
                default = self._contract_default(name)
            self.declare_parameter(name, default, ParameterDescriptor(
                description=text, read_only=read_only))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._lock = threading.RLock()
        self._pub_lock = threading.Lock()
        self._wake = threading.Condition()
        self._sets_completed = 0
        self._last_complete: tuple[float, ...] | None = None
        self._worker: threading.Thread | None = None
        self._running = False
        self._active = False
        self._lifecycle_label = "unconfigured"
        self.policy = None
        self._entities: list = []
        self._camera_node = self._camera_reader = None
        self._inputs: list[tuple[str, str, bool]] = []
        self._input_problems: dict[str, str] = {}
        self._status_calls = 0
        self._pubs: dict = {}
        self._sync: FreshestSetSynchronizer | None = None
        self._exec: ChunkExecutor | None = None
        self._tick = 0
        self._last_cmd: np.ndarray | None = None
        self._state: dict[str, object] = {}
        self._instruction = self.get_parameter("instruction").value
        self._subtask = ""
        self._subtask_index = 0
        self._seed = int(self.get_parameter("seed").value)
        self._sequence = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=100)
        self._last_error = ""
        self._holding_reason = ""
        self._episode: dict | None = None
        self._episode_counter = 0
        self._log_times: dict[str, float] = {}
        self._goal_lock = threading.Lock()
        self._active_goal = None
        services = MutuallyExclusiveCallbackGroup()  # short callbacks
        self.create_service(SetInstruction, "~/set_instruction", self._on_set_instruction,
                            callback_group=services)
        self.create_service(StartEpisode, "~/start_episode", self._on_start_episode,
                            callback_group=services)
        self.create_service(EndEpisode, "~/end_episode", self._on_end_episode,
                            callback_group=services)
        # Reentrant: a goal's execute callback runs (and holds a thread) until the goal ends,
        # while cancel requests and new goals must still be answered.
        self._action_server = ActionServer(
            self, ExecuteTask, "~/execute_task", self._execute_task,
            goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup())
        from .episode_log import EpisodeLog
        self._episode_log = EpisodeLog(os.path.expanduser(self.get_parameter("episode_log").value))

    # ---------------------------------------------------------------- parameters
    def _contract_default(self, name):
        if self._contract is None:
            self._contract = load_contract(self.get_parameter("contract_file").value or None)
        if name == "camera_topics":
            return [c.topic for c in self._contract.cameras]
        if name == "camera_message_type":
            return self._contract.cameras[0].type
        if name == "frame_id":
            return self._contract.frame_id
        raise KeyError(name)

    def _on_set_parameters(self, params):
        for p in params:
            check = LIVE_CHECKS.get(p.name)
            if check is not None and not check(p.value):
                return SetParametersResult(successful=False,
                                           reason=f"{p.name}={p.value!r} is not allowed")
        for p in params:
            if p.name == "seed":
                self._seed = int(p.value)
            if self._sync is not None and p.name == "sync_slop":
                self._sync.slop = float(p.value)
            if self._sync is not None and p.name == "max_age":
                self._sync.max_age = float(p.value)
        return SetParametersResult(successful=True)

    def _p(self, name):
        return self.get_parameter(name).value

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - reported, and the transition fails cleanly
            self._last_error = f"configure failed: {exc}"
            self.get_logger().error(self._last_error)
            self._destroy_entities()
            self.policy = None
            return TransitionCallbackReturn.FAILURE
        self._lifecycle_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _configure(self):
        contract = self._contract
        topics = list(self._p("camera_topics"))
        if len(topics) != len(contract.cameras):
            raise ValueError(f"camera_topics has {len(topics)} topics, the contract "
                             f"{contract.source} has {len(contract.cameras)} cameras")
        msg_type = self._p("camera_message_type")
        if msg_type not in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
            raise ValueError(f"camera_message_type {msg_type!r} is not Image or CompressedImage")
        self.camera_names = [c.name for c in contract.cameras]
        self.camera_topics = dict(zip(self.camera_names, topics))
        self.rate_hz = float(self._p("control_rate_hz"))
        self.dt = 1.0 / self.rate_hz
        model_dir = self._p("model_dir")
        cls = load_policy_class(self._p("policy_class"))
        if not model_dir:
            raise ValueError("parameter model_dir is empty: point it at a policy checkpoint")
        if not pathlib.Path(model_dir).is_dir():
            raise FileNotFoundError(f"model_dir {model_dir} is not a directory")
        t0 = time.monotonic()
        self.policy = cls.load(model_dir, device=self._p("device"), warmup=True)
        self.get_logger().info(f"loaded {cls.__name__} from {model_dir} in "
                               f"{time.monotonic() - t0:.1f} s")
        self._exec = ChunkExecutor(ExecutorConfig(
            mode=self._p("executor"), chunk_len=int(self.policy.chunk_len),
            action_dim=int(self.policy.action_dim), replan_every=int(self._p("replan_every")),
            ensemble_m=float(self._p("ensemble_m"))))
        self._delay = DelayEstimator(warmup=int(self._p("warmup_chunks")))
        self._safety = SafetyFilter(SafetyLimits(
            left_min=tuple(self._p("left_workspace_min")),
            left_max=tuple(self._p("left_workspace_max")),
            right_min=tuple(self._p("right_workspace_min")),
            right_max=tuple(self._p("right_workspace_max")),
            max_linear_speed=float(self._p("max_linear_speed")),
            max_angular_speed=float(self._p("max_angular_speed")),
            gripper_min=float(self._p("gripper_min")), gripper_max=float(self._p("gripper_max")),
            dt=self.dt))
        self._sync = FreshestSetSynchronizer(self.camera_names, slop=float(self._p("sync_slop")),
                                             max_age=float(self._p("max_age")))
        self.frame_id = self._p("frame_id")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = self._pubs
        for arm in contract.action.arms:
            pub[f"{arm.name}_pose"] = self._publisher(PoseStamped, arm.pose.topic, reliable)
            pub[f"{arm.name}_gripper"] = self._publisher(Float64, arm.gripper.topic, reliable)
            pub[f"{arm.name}_path"] = self._publisher(Path, f"/clap/{arm.name}_arm/path", reliable)
        pub["chunk"] = self._publisher(ActionChunk, "/clap/action_chunk", reliable)
        pub["status"] = self._publisher(PolicyStatus, "/clap/status", reliable)
        pub["markers"] = self._publisher(MarkerArray, "/clap/markers", reliable)
        sub_topic = contract.subtask.topic if contract.subtask else "/clap/subtask"
        pub["subtask"] = self._publisher(Subtask, sub_topic, reliable)
        self._entities = list(pub.values())
        self._inputs = []  # (topic, message type name, reliable) for _check_inputs
        self._start_cameras(Image if msg_type.endswith("/Image") else CompressedImage)
        inputs = MutuallyExclusiveCallbackGroup()  # state and instruction
        if self._p("use_state"):
            for arm in contract.state.arms:
                self._subscription(PoseStamped, arm.pose.topic,
                                   lambda m, a=arm.name: self._state.__setitem__(f"{a}_pose", m),
                                   qos_profile_sensor_data, inputs)
                self._subscription(
                    Float64, arm.gripper.topic,
                    lambda m, a=arm.name: self._state.__setitem__(f"{a}_gripper", m.data),
                    qos_profile_sensor_data, inputs)
        self._subscription(String, contract.instruction.topic, self._on_instruction_topic,
                           reliable, inputs)
        self._control_timer = self.create_timer(self.dt, self._on_control,
                                                callback_group=MutuallyExclusiveCallbackGroup())
        self._status_timer = self.create_timer(1.0 / float(self._p("status_rate_hz")),
                                               self._on_status,
                                               callback_group=MutuallyExclusiveCallbackGroup())
        self._entities += [self._control_timer, self._status_timer]

    # rclpy gives every publisher and subscription default QoS-event handlers, each one more
    # waitable that its Python executor walks on every wake-up (39 of them here: 0.4 ms added to
    # each camera's way to the model). The node goes without them; _check_inputs reports the
    # mismatches they would have (wrong message type, best-effort publisher on a reliable input).
    def _publisher(self, cls, topic, qos):
        return self.create_publisher(
            cls, topic, qos, event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))

    def _subscription(self, cls, topic, callback, qos, group):
        reliable = qos.reliability == ReliabilityPolicy.RELIABLE
        self._inputs.append((topic, _type_name(cls), reliable))
        self._entities.append(self.create_subscription(
            cls, topic, callback, qos, callback_group=group,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False)))

    def _start_cameras(self, cls_img) -> None:
        """
        Subscribe to the cameras on a node of their own, read by their own thread.

        The camera messages are the node's hot path; ``CameraReader`` takes each one as it
        arrives, without an executor's walk over this node's entities or a hop to its thread
        pool. The node ``<name>_cameras`` appears in the ROS graph beside this one.
        """
        self._camera_node = rclpy.create_node(
            f"{self.get_name()}_cameras", namespace=self.get_namespace(), context=self.context,
            start_parameter_services=False, enable_rosout=False,
            parameter_overrides=[Parameter("start_type_description_service", value=False)])
        topics = []
        for name, topic in self.camera_topics.items():
            self._inputs.append((topic, _type_name(cls_img), False))
            topics.append((cls_img, topic, lambda m, n=name, t=topic: self._on_image(n, t, m)))
        self._camera_reader = CameraReader(
            self._camera_node, topics, qos_profile_sensor_data,
            on_error=lambda exc: self.get_logger().error(f"camera intake stopped: {exc}"))

    def _stop_cameras(self) -> None:
        reader, node = self._camera_reader, self._camera_node
        self._camera_reader = self._camera_node = None
        if reader is not None:
            reader.stop()
        if node is not None:
            node.destroy_node()

    def destroy_node(self):
        self._stop_cameras()
        return super().destroy_node()

    def _check_inputs(self) -> None:
        """Find publishers on the input topics that the node cannot hear; log and keep them."""
        problems = {}
        for topic, type_name, reliable in self._inputs:
            for info in self.get_publishers_info_by_topic(topic):
                who = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                if info.topic_type != type_name:
                    problems[topic] = (f"publisher {who} sends {info.topic_type}, this node "
                                       f"subscribes with {type_name}")
                elif reliable and info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT:
                    problems[topic] = (f"publisher {who} is best-effort, this node subscribes "
                                       "reliable")
        for topic, text in problems.items():
            self._log_throttled(f"input:{topic}", f"{topic}: {text}; its messages do not arrive",
                                period=10.0)
        self._input_problems = problems

    def on_activate(self, state) -> TransitionCallbackReturn:
        with self._lock:
            self._exec.clear()
            self._sequence_at_activate = self._sequence
            self._running = True
            self._active = True
        self._worker = threading.Thread(target=self._worker_loop, name="clap_inference",
                                        daemon=True)
        self._worker.start()
        self._lifecycle_label = "active"
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_inference()
        with self._pub_lock:
            self._active = False
            with self._lock:
                self._exec.clear()
            if self._last_cmd is not None:
                self._publish_command(self._last_cmd)  # the hold: last message on the wire
        self._lifecycle_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._destroy_entities()
        self.policy = None
        self._last_cmd = None
        self._lifecycle_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        if self._active:
            self.on_deactivate(state)
        self._destroy_entities()
        self.policy = None
        self._lifecycle_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _stop_inference(self):
        self._running = False
        with self._wake:
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            if self._worker.is_alive():
                self.get_logger().error("inference worker did not stop within 30 s")
            self._worker = None

    def _destroy_entities(self):
        self._stop_cameras()
        for entity in self._entities:
            if hasattr(entity, "cancel"):
                entity.cancel()
                self.destroy_timer(entity)
            elif hasattr(entity, "publish"):
                self.destroy_publisher(entity)
            else:
                self.destroy_subscription(entity)
        self._entities = []
        self._inputs = []
        self._input_problems = {}
        self._pubs = {}
        self._sync = None

    # ---------------------------------------------------------------- inputs
    def _log_throttled(self, key: str, text: str, period: float = 2.0):
        now = time.monotonic()
        if now - self._log_times.get(key, -1e9) >= period:
            self._log_times[key] = now
            self.get_logger().warning(text)

    def _on_image(self, name: str, topic: str, msg):
        try:
            rgb = image_msg_to_rgb(msg)
        except (ImageEncodingError, ValueError) as exc:
            self._last_error = f"{topic}: image skipped: {exc}"
            self._log_throttled(f"img:{topic}", self._last_error)
            return
        sync = self._sync
        if sync is None:
            return
        sync.add(name, stamp_seconds(msg.header.stamp), (rgb, msg.header.stamp),
                 received=time.monotonic())
        synced = sync.latest(self._now())
        if synced is not None and synced.stamps() != self._last_complete:
            with self._wake:  # a newer complete set exists: wake the worker
                self._last_complete = synced.stamps()
                self._sets_completed += 1
                self._wake.notify_all()

    def _on_instruction_topic(self, msg: String):
        self._set_instruction(msg.data, reset_queue=False)

    def _set_instruction(self, text: str, reset_queue: bool) -> str:
        with self._lock:
            previous = self._instruction
            self._instruction = text
            if reset_queue or not text:
                if self._exec is not None:
                    self._exec.clear()
            if text != previous:  # the old subtask belonged to the old instruction
                self._subtask_index = 0
                self._subtask = ""
        return previous

    def _current_state(self) -> np.ndarray | None:
        if not self._p("use_state"):
            return None
        parts = []
        for arm in ARM_OFFSETS:
            pose, grip = self._state.get(f"{arm}_pose"), self._state.get(f"{arm}_gripper")
            if pose is None or grip is None:
                return None
            parts.append(pose_to_vector(pose, float(grip)))
        return np.concatenate(parts)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ---------------------------------------------------------------- inference worker
    def _worker_loop(self):
        # Inference starts only right after a new complete camera set arrived (a set that
        # completed while the model was busy is not used: it would be up to one frame old),
        # so every chunk is computed from the freshest observation there is.
        seen = self._sets_completed
        while self._running:
            with self._wake:
                self._wake.wait_for(lambda: self._sets_completed != seen or not self._running,
                                    timeout=0.5)
                fresh = self._sets_completed != seen
                seen = self._sets_completed
            if not self._running:
                break
            if not fresh:
                continue
            with self._lock:
                instruction = self._instruction
                step = self._tick
                want = bool(instruction) and self._exec.needs_plan(step)
            if not want or self._sync is None:
                continue
            synced = self._sync.take_new(self._now())
            if synced is None:
                continue
            self._infer(synced, instruction)
            with self._wake:
                seen = self._sets_completed  # wait for a set newer than the model's run

    def _infer(self, synced, instruction: str) -> None:
        """Run the model on one camera set and hand the checked chunk to the executor."""
        with self._lock:
            obs_step = self._tick
            prefix = self._exec.prefix_for(obs_step)
            # Prefix rows the new chunk never gets to execute: row 0 is this tick's (already
            # sent), then one per tick the model is expected to take. RTC freezes them.
            frozen = self._delay.delay + 1
            seed = self._seed + self._sequence
        images = {name: item.payload[0] for name, item in synced.items.items()}
        try:
            pred = self.policy.predict(images, instruction, self._current_state(),
                                       mode=self._p("mode"), prev_chunk=prefix,
                                       inference_delay=frozen if prefix is not None else 0,
                                       seed=seed)
        except Exception as exc:  # noqa: BLE001 - the node keeps holding, error reported
            self._last_error = f"predict failed: {exc}"
            self._log_throttled("predict", self._last_error)
            return
        if not self._running:
            return  # deactivated while the model ran: nothing more goes out
        actions = np.asarray(pred.actions)
        problem = SafetyFilter.chunk_problem(
            actions, (self._exec.config.chunk_len, self._exec.config.action_dim))
        if problem:
            self._last_error = f"chunk rejected: {problem}"
            self._log_throttled("chunk", self._last_error)
            with self._lock:
                self._exec.clear()
                self._holding_reason = self._last_error
            return
        with self._lock:
            if instruction != self._instruction:
                return  # instruction changed while the model ran
            ready = self._tick
            self._delay.record(ready - obs_step)
            self._exec.add_chunk(actions, obs_step)
            self._holding_reason = ""
            sequence = self._sequence
            self._sequence += 1
        self._latencies.append(float(pred.latency))
        newest = max(synced.items.values(), key=lambda item: item.stamp)
        self._publish_chunk(actions, pred, newest.payload[1], sequence)

    def _publish_chunk(self, actions, pred, obs_stamp, sequence: int):
        header = Header(frame_id=self.frame_id, stamp=obs_stamp)  # the camera's own stamp
        msg = ActionChunk(header=header, step_period=to_duration(self.dt),
                          horizon=actions.shape[0], action_dim=actions.shape[1],
                          dimension_names=list(self.policy.action_names),
                          data=actions.astype(np.float32).ravel().tolist(),
                          source=str(pred.mode), inference_latency=to_duration(pred.latency),
                          sequence=sequence)
        pubs = self._pubs
        if not pubs or not self._running:
            return
        msg.pipeline_latency = to_duration(self._now() - stamp_seconds(obs_stamp))
        pubs["chunk"].publish(msg)
        markers = chunk_markers(actions, header, float(self._p("gripper_min")),
                                float(self._p("gripper_max")))
        pubs["markers"].publish(markers)
        for arm, path in chunk_paths(actions, header).items():
            pubs[f"{arm}_path"].publish(path)
        if pred.subtask != self._subtask:
            self._subtask = pred.subtask
            pubs["subtask"].publish(Subtask(header=header, instruction=self._instruction,
                                            subtask=pred.subtask, index=self._subtask_index))
            self._subtask_index += 1

    # ---------------------------------------------------------------- control
    def _stale(self) -> str:
        sync = self._sync
        if sync is None:
            return "not configured"
        ages = sync.ages(self._now())
        problems = self._input_problems
        bad = [f"{t} ({'none' if a < 0 else f'{a * 1000:.0f} ms'}"
               + (f"; {problems[t]})" if t in problems else ")")
               for t, a in ((self.camera_topics[k], a) for k, a in ages.items())
               if a < 0 or a > sync.max_age]
        return ", ".join(bad)

    def _on_control(self):
        with self._pub_lock:
            with self._lock:
                self._tick += 1
                step = self._tick
            if not self._active:
                return
            stale = self._stale()
            with self._lock:
                if stale:
                    self._exec.clear()
                    self._holding_reason = f"stale camera: {stale}"
                    target = None
                elif not self._instruction:
                    target = None
                    self._holding_reason = "no instruction"
                else:
                    target = self._exec.action_at(step)
            if stale and self._last_error != f"stale camera: {stale}":
                self._log_throttled("stale", f"holding: stale camera {stale}")
            previous = self._last_cmd
            if previous is None:
                previous = self._current_state()
            if target is None:
                if previous is not None:
                    self._last_cmd = previous
                    self._publish_command(previous)
                return
            safe, _ = self._safety.filter(target, previous)
            self._last_cmd = safe
            self._publish_command(safe)

    def _publish_command(self, command: np.ndarray):
        pubs = self._pubs
        if not pubs:
            return
        header = Header(frame_id=self.frame_id, stamp=self.get_clock().now().to_msg())
        for arm, o in ARM_OFFSETS.items():
            pubs[f"{arm}_pose"].publish(pose_stamped(header, command[o:o + 7]))
            pubs[f"{arm}_gripper"].publish(Float64(data=float(command[o + 6])))

    def _policy_state(self) -> int:
        if self._last_error.startswith(("configure failed", "predict failed")):
            return PolicyStatus.STATE_ERROR
        if not self._active or not self._instruction:
            return PolicyStatus.STATE_IDLE
        if self._holding_reason:
            return PolicyStatus.STATE_HOLDING
        return PolicyStatus.STATE_RUNNING

    def _on_status(self):
        pubs = self._pubs
        if not pubs:
            return
        self._status_calls += 1
        if self._status_calls % max(1, int(2.0 * float(self._p("status_rate_hz")))) == 1:
            self._check_inputs()  # every 2 s
        now = self._now()
        ages = self._sync.ages(now) if self._sync else {}
        lat = list(self._latencies)
        with self._lock:
            depth = self._exec.remaining(self._tick) if self._exec else 0
        msg = PolicyStatus(
            lifecycle_state=self._lifecycle_label, policy_state=self._policy_state(),
            instruction=self._instruction, subtask=self._subtask, mode=self._p("mode"),
            cameras=[CameraStatus(name=k, topic=self.camera_topics[k], age=float(a),
                                  fresh=bool(0 <= a <= self._sync.max_age))
                     for k, a in ages.items()],
            last_latency=lat[-1] if lat else 0.0,
            p95_latency=float(np.percentile(lat, 95)) if lat else 0.0,
            queue_depth=depth, chunks=self._sequence,
            last_error=self._holding_reason or self._last_error)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        pubs["status"].publish(msg)

    # ---------------------------------------------------------------- services and action
    def _on_set_instruction(self, request, response):
        response.previous_instruction = self._set_instruction(request.instruction,
                                                              request.reset_queue)
        response.success = True
        response.message = ("holding: empty instruction" if not request.instruction
                            else f"following: {request.instruction}")
        return response

    def _on_start_episode(self, request, response):
        with self._lock:
            if self._episode is not None:
                response.success = False
                response.message = f"episode {self._episode['id']} is still running"
                response.episode_id = self._episode["id"]
                return response
            self._episode_counter += 1
            episode_id = request.episode_id or (
                f"ep-{self._episode_counter:04d}-{uuid.uuid4().hex[:6]}")
            now = self.get_clock().now()
            self._episode = {"id": episode_id, "instruction": request.instruction,
                             "seed": int(request.seed), "start": time.monotonic(),
                             "start_wall": time.time()}
            self._seed = int(request.seed)
        self._episode_log.start(episode_id, request.instruction, request.seed,
                                self._episode["start_wall"])
        self._set_instruction(request.instruction, reset_queue=True)
        response.success = True
        response.message = f"episode {episode_id} started, seed {request.seed}"
        response.episode_id = episode_id
        response.start_time = now.to_msg()
        return response

    def _on_end_episode(self, request, response):
        with self._lock:
            episode = self._episode
            if episode is None or episode["id"] != request.episode_id:
                response.recorded = False
                running = f"; running: {episode['id']!r}" if episode else "; none is running"
                response.message = f"no running episode {request.episode_id!r}{running}"
                return response
            self._episode = None
        duration = time.monotonic() - episode["start"]
        try:
            self._episode_log.end(episode["id"], episode["instruction"], episode["seed"],
                                  request.success, request.reward, request.notes,
                                  episode["start_wall"], time.time(), duration)
        except OSError as exc:
            response.recorded = False
            response.message = f"episode log {self._episode_log.path}: {exc}"
            return response
        self._set_instruction("", reset_queue=True)  # the episode is over: hold
        response.recorded = True
        response.duration = duration
        response.message = f"recorded in {self._episode_log.path}"
        return response

    def _on_goal(self, goal):
        return GoalResponse.ACCEPT if goal.instruction else GoalResponse.REJECT

    def _execute_task(self, goal_handle):
        request = goal_handle.request
        timeout = request.timeout.sec + request.timeout.nanosec * 1e-9
        with self._goal_lock:
            self._active_goal = goal_handle
        self._set_instruction(request.instruction, reset_queue=True)
        start = time.monotonic()
        chunks0 = self._sequence
        result = ExecuteTask.Result()
        try:
            while True:
                elapsed = time.monotonic() - start
                if goal_handle.is_cancel_requested:
                    self._set_instruction("", reset_queue=True)
                    goal_handle.canceled()
                    result.message = "cancelled: holding the last commanded pose"
                    break
                if self._instruction != request.instruction:
                    goal_handle.abort()
                    result.message = f"instruction replaced by {self._instruction!r}"
                    break
                if timeout > 0 and elapsed >= timeout:
                    self._set_instruction("", reset_queue=True)
                    goal_handle.abort()
                    result.message = f"timed out after {timeout:.1f} s: holding"
                    break
                if not rclpy.ok():
                    goal_handle.abort()
                    result.message = "shutting down"
                    break
                lat = list(self._latencies)
                with self._lock:
                    depth = self._exec.remaining(self._tick) if self._exec else 0
                goal_handle.publish_feedback(ExecuteTask.Feedback(
                    subtask=self._subtask, elapsed=to_duration(elapsed),
                    latency=lat[-1] if lat else 0.0, queue_depth=depth))
                time.sleep(0.1)
        finally:
            with self._goal_lock:
                self._active_goal = None
        result.success = False
        result.chunks = self._sequence - chunks0
        return result


def main(args=None):
    """
    Run the ``policy_node`` executable.

    SIGINT is handled by Python (KeyboardInterrupt), not by rclpy's handler, which would shut
    the context down first: on Ctrl-C the node deactivates while it can still publish, so the
    hold command goes out as the last message before shutdown.
    """
    rclpy.init(args=args)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: dump thread stacks
    node = PolicyNode()
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    if node.get_parameter("autostart").value:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node._active and rclpy.ok():
            node.on_deactivate(None)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
