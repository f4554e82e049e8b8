"""
The CLAP policy node: synchronized cameras in, safe 30 Hz end-effector commands out.

A LifecycleNode ``clap_policy``; this module only wires the pieces together:

- configure: reads the parameters (``NodeParams``, parameters.py), loads the policy
  (``ClapPolicy.load``), creates publishers, subscriptions and timers.
- activate: starts the inference worker thread and the control output.
- deactivate: stops inference first (joins the worker), then publishes a hold command (the last
  commanded pose) as the last message on the command topics.
- cleanup: frees the model and every entity created in configure.

One camera frame's way: cameras.py (its own thread: image conversion, clap_train.data.images ->
synchronizer, freshest complete set within slop) -> inference_worker.py (a plain thread, off the
executor: ``predict`` when the chunk executor wants a plan; chunk checked, handed to the
executor; chunk_publisher.py: ActionChunk + RViz views) -> control_loop.py (control timer, its
own callback group: the plan's action for this tick through the safety filter, never waiting
for the model) -> commands.py (PoseStamped + gripper publishers). Shared state and its lock:
run_state.py. Services and the action: episodes.py. PolicyStatus: status.py. Safety: stale
cameras -> hold within max_age + one tick; NaN/inf chunks rejected; workspace/speed/gripper
limits (safety.py). Every topic the node subscribes or publishes, the camera message types,
each camera's max_age and the frame come from the topic contract (``contract_file``; its
``outputs:`` section names the /clap/* topics); a topic is moved by remapping it.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import signal
import sys
import threading

import rclpy
from clap_msgs.msg import PolicyStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import Float64, String

from .cameras import CameraIntake, message_class
from .chunk_executor import ChunkExecutor, DelayEstimator
from .chunk_publisher import ChunkPublisher
from .commands import CommandPublisher
from .control_loop import ControlLoop
from .episode_log import EpisodeLog
from .episodes import Episodes
from .executors import MultiThreadedExecutor
from .inference_worker import InferenceWorker, load_policy
from .parameters import NodeParams, declare_parameters, live_change_problem, load_node_contract
from .robot_state import RobotState
from .run_state import RunState
from .safety import SafetyFilter
from .status import InputCheck, StatusReporter, ThrottledLog
from .synchronizer import FreshestSetSynchronizer

NODE_NAME = "clap_policy"
# One thread per callback group that can be busy at once (default group: lifecycle and
# parameter services; services; state and instruction inputs; control; status; and the
# action's reentrant group, one running goal plus goal/cancel requests), plus one, so that the
# control timer never waits for a thread. The cameras have a thread of their own.
EXECUTOR_THREADS = 8
WORKER_STOP_TIMEOUT = 30.0  # s


class PolicyNode(LifecycleNode):
    """LifecycleNode ``clap_policy``; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        value = self._value
        self._contract = load_node_contract(value("contract_file"))
        self._state = RunState(instruction=value("instruction"), seed=int(value("seed")),
                               mode=value("mode"))
        self._robot = RobotState(enabled=bool(value("use_state")),
                                 layout=self._contract.state.layout)
        self._log = ThrottledLog(self.get_logger())
        self._pub_lock = threading.Lock()  # a control tick's command vs the deactivation hold
        self._active = False  # control output on (between activate and deactivate)
        self._lifecycle_label = "unconfigured"
        self.policy = None
        # created in configure, dropped in cleanup / shutdown
        self._sync: FreshestSetSynchronizer | None = None
        self._worker: InferenceWorker | None = None
        self._control: ControlLoop | None = None
        self._cameras: CameraIntake | None = None
        self._inputs: InputCheck | None = None
        self._commands: CommandPublisher | None = None
        self._chunks: ChunkPublisher | None = None
        self._status: StatusReporter | None = None
        self._entities: list = []  # publishers, subscriptions and timers of this node
        self._episodes = Episodes(
            self, self._state, EpisodeLog(os.path.expanduser(value("episode_log"))),
            ok=self.context.ok)

    @property
    def lifecycle_state(self) -> str:
        """Return the lifecycle state's label (unconfigured, inactive, active, finalized)."""
        return self._lifecycle_label

    def _value(self, name: str):
        return self.get_parameter(name).value

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_set_parameters(self, params):
        problem = live_change_problem(params)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        sync = self._sync
        for p in params:
            if p.name == "seed":
                self._state.seed = int(p.value)
            elif p.name == "mode":
                self._state.mode = p.value
            elif sync is not None and p.name == "sync_slop":
                sync.slop = float(p.value)
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - reported, and the transition fails cleanly
            self._state.last_error = f"configure failed: {exc}"
            self.get_logger().error(self._state.last_error)
            self._destroy_entities()
            self.policy = self._worker = self._control = None
            return TransitionCallbackReturn.FAILURE
        self._lifecycle_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        contract, st = self._contract, self._state
        p = NodeParams.read(self._value)
        outputs, frame_id = contract.node_outputs(), contract.frame_id
        camera_topics = {c.name: c.topic for c in contract.cameras}
        self.policy = load_policy(p.policy_class, p.model_dir, p.device, self.get_logger())
        layout = contract.action.layout
        st.executor = ChunkExecutor(p.executor_config(self.policy.chunk_len,
                                                      self.policy.action_dim, layout))
        st.delay = DelayEstimator(warmup=p.warmup_chunks)
        self._control = ControlLoop(st, SafetyFilter(p.safety_limits(), layout))
        self._sync = FreshestSetSynchronizer(
            list(camera_topics), slop=p.sync_slop,
            max_age={c.name: c.max_age_s for c in contract.cameras})
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        publisher = functools.partial(self._publisher, qos=reliable)
        self._commands = CommandPublisher(publisher, contract.action.arms, frame_id,
                                          self.get_clock())
        self._chunks = ChunkPublisher(
            publisher, layout, outputs, contract.subtask.topic if contract.subtask else None,
            frame_id, p.dt, self.policy.action_names, (p.gripper_min, p.gripper_max), self._now)
        self._inputs = InputCheck(self, self._log.warn)
        self._status = StatusReporter(
            publisher(PolicyStatus, outputs.status), st, self._sync, camera_topics, self._inputs,
            frame_id, self.get_clock(), p.status_rate_hz,
            lifecycle=lambda: (self._lifecycle_label, self._active))
        self._worker = InferenceWorker(self.policy, st, self._sync, self._now, self._robot.vector,
                                       on_chunk=self._on_chunk, warn=self._log.warn)
        for camera in contract.cameras:
            self._inputs.add(camera.topic, message_class(camera.type), reliable=False)
        self._cameras = CameraIntake(self, contract.cameras, self._sync, self._now,
                                     on_new_set=self._worker.notify_new_set,
                                     on_bad_image=self._on_bad_image)
        inputs = MutuallyExclusiveCallbackGroup()  # state and instruction
        if p.use_state:
            for arm in contract.state.arms:
                self._subscription(PoseStamped, arm.pose.topic,
                                   functools.partial(self._robot.set_pose, arm.name),
                                   qos_profile_sensor_data, inputs)
                self._subscription(Float64, arm.gripper.topic,
                                   functools.partial(self._robot.set_gripper, arm.name),
                                   qos_profile_sensor_data, inputs)
        self._subscription(String, contract.instruction.topic, self._on_instruction_topic,
                           reliable, inputs)
        self._entities += [
            self.create_timer(p.dt, self._on_control,
                              callback_group=MutuallyExclusiveCallbackGroup()),
            self.create_timer(1.0 / p.status_rate_hz, self._on_status,
                              callback_group=MutuallyExclusiveCallbackGroup())]

    # rclpy gives every publisher and subscription default QoS-event handlers, each one more
    # waitable that its Python executor walks on every wake-up (39 of them here: 0.4 ms added to
    # each camera's way to the model). The node goes without them; InputCheck reports the
    # mismatches they would have (wrong message type, best-effort publisher on a reliable input).
    def _publisher(self, cls, topic, qos):
        pub = self.create_publisher(
            cls, topic, qos, event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))
        self._entities.append(pub)
        return pub

    def _subscription(self, cls, topic, callback, qos, group):
        self._inputs.add(topic, cls, qos.reliability == ReliabilityPolicy.RELIABLE)
        self._entities.append(self.create_subscription(
            cls, topic, callback, qos, callback_group=group,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False)))

    def on_activate(self, state) -> TransitionCallbackReturn:
        with self._state.lock:
            self._state.executor.clear()
            self._active = True
        self._worker.start()
        self._lifecycle_label = "active"
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_control()
        self._lifecycle_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._destroy_entities()
        self.policy = self._worker = self._control = None
        self._lifecycle_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        if self._active:
            self._stop_control()
        self._destroy_entities()
        self.policy = self._worker = None
        self._lifecycle_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _stop_control(self) -> None:
        """Stop inference first, then send the hold (the last command) as the last message."""
        if not self._worker.stop(timeout=WORKER_STOP_TIMEOUT):
            self.get_logger().error(
                f"inference worker did not stop within {WORKER_STOP_TIMEOUT:.0f} s")
        with self._pub_lock:
            self._active = False
            with self._state.lock:
                self._state.executor.clear()
            hold = self._control.last_cmd
            if hold is not None:
                self._publish_command(hold)

    def _destroy_entities(self) -> None:
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
        self._inputs = self._commands = self._chunks = self._status = self._sync = None

    def _stop_cameras(self) -> None:
        cameras, self._cameras = self._cameras, None
        if cameras is not None:
            cameras.stop()

    def destroy_node(self):
        self._stop_cameras()
        return super().destroy_node()

    # ---------------------------------------------------------------- callbacks
    def _on_bad_image(self, topic: str, exc: Exception) -> None:
        self._state.last_error = f"{topic}: image skipped: {exc}"
        self._log.warn(f"img:{topic}", self._state.last_error)

    def _on_instruction_topic(self, msg: String) -> None:
        self._state.set_instruction(msg.data, reset_queue=False)

    def _on_chunk(self, actions, prediction, obs_stamp, sequence: int) -> None:
        """Publish an accepted chunk (inference worker thread), unless inference was stopped."""
        chunks, worker = self._chunks, self._worker
        msg = chunks.message(actions, prediction, obs_stamp, sequence) if chunks else None
        if msg is None or worker is None or not worker.running:
            return
        chunks.publish(msg, actions, self._state.note_subtask(prediction.subtask))

    def _on_control(self) -> None:
        with self._pub_lock:
            step = self._state.advance()
            if not self._active:
                return
            cameras, inputs = self._cameras, self._inputs
            stale = (cameras.stale(self._now(), inputs.problems)
                     if cameras is not None and inputs is not None else "not configured")
            if stale:
                self._log.warn("stale", f"holding: stale camera {stale}")
            command = self._control.tick(step, stale, self._robot.vector)
            if command is not None:
                self._publish_command(command)

    def _publish_command(self, command) -> None:
        commands = self._commands
        if commands is not None:
            commands.publish(command)

    def _on_status(self) -> None:
        status = self._status
        if status is not None:
            status.publish()


def _transition(node: PolicyNode, trigger) -> None:
    """Run a lifecycle transition; one the state machine refuses (a race with a manager) is off."""
    try:
        trigger()
    except _rclpy.RCLError as exc:
        node.get_logger().warning(f"lifecycle transition refused: {exc}")


def main(args=None):
    """
    Run the ``policy_node`` executable.

    SIGINT is handled by Python (KeyboardInterrupt), not by rclpy's handler, which would shut
    the context down first: on Ctrl-C the node is deactivated through its lifecycle while it can
    still publish, so the hold command goes out as the last message; the executor stops, and
    the shutdown transition frees the model and every entity.
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
        if rclpy.ok() and node.lifecycle_state == "active":
            _transition(node, node.trigger_deactivate)
        executor.shutdown(timeout_sec=1.0)
        if rclpy.ok() and node.lifecycle_state != "finalized":
            _transition(node, node.trigger_shutdown)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
