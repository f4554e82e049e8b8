"""The DDS side of ``sim eval``: the evaluation node beside the bridge, and the policy node's process.

``EvalNode`` collects the policy's ActionChunks (the contract's ``outputs.action_chunk``) and, for
``--policy scripted``, plays the scripted demonstrator: it answers each state message from the
bridge with the plan's targets for that step. ``start_policy_node`` runs the real policy node
through clap_policy_ros.client (autostart, sim time).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
from clap_msgs.msg import ActionChunk
from clap_policy_ros import client
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64

from .bridge import SimBridge, stamp_ns
from .eval_report import EvalError
from .scene import ARMS


class EvalNode(Node):
    """Collects the policy's chunks (on ``chunk_topic``; None: none); plays the scripted policy when asked."""

    def __init__(self, bridge: SimBridge, chunk_topic: str | None):
        super().__init__("clap_sim_eval")
        self.bridge = bridge
        self.lock = threading.Lock()
        self.chunks: list[tuple[float, float, np.ndarray, float]] = []  # (t, dt, data[H,D], latency)
        self.arrivals: list[int] = []  # the bridge's step when each chunk arrived
        self.script = None  # (trajectory, episode start ns)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        if chunk_topic is not None:
            self.create_subscription(ActionChunk, chunk_topic, self._on_chunk, qos)
        topics = bridge.topics
        self.pub_pose = {a: self.create_publisher(PoseStamped, topics.command[a].pose, qos) for a in ARMS}
        self.pub_grip = {a: self.create_publisher(Float64, topics.command[a].gripper, qos) for a in ARMS}
        self.create_subscription(PoseStamped, topics.state["right"].pose, self._on_state, qos)

    def _on_chunk(self, msg) -> None:
        h, d = int(msg.horizon), int(msg.action_dim)
        data = np.asarray(msg.data, dtype=np.float64)
        if h * d != data.size:
            self.get_logger().warning(f"action chunk: {data.size} values for {h}x{d}; ignored")
            return
        lat = msg.inference_latency.sec + msg.inference_latency.nanosec * 1e-9
        dt = msg.step_period.sec + msg.step_period.nanosec * 1e-9
        step = self.bridge.step_count
        with self.lock:
            self.chunks.append((stamp_ns(msg.header.stamp) * 1e-9, dt, data.reshape(h, d), lat))
            self.arrivals.append(step)

    def _on_state(self, msg: PoseStamped) -> None:
        """Scripted policy: answer the observation at sim time t with the plan's step-t targets."""
        script = self.script
        if script is None:
            return
        traj, start_ns = script
        t = stamp_ns(msg.header.stamp)
        step = int(round((t - start_ns) / self.bridge.period_ns))
        if step < 0:
            return
        frame = self.bridge.topics.frame_id
        for arm, (pos, quat, grip) in traj.target(step).items():
            self.pub_grip[arm].publish(Float64(data=float(grip)))
        for arm, (pos, quat, grip) in traj.target(step).items():
            out = PoseStamped()
            out.header.stamp, out.header.frame_id = msg.header.stamp, frame
            out.pose.position.x, out.pose.position.y, out.pose.position.z = (float(v) for v in pos)
            out.pose.orientation.w, out.pose.orientation.x = float(quat[0]), float(quat[1])
            out.pose.orientation.y, out.pose.orientation.z = float(quat[2]), float(quat[3])
            self.pub_pose[arm].publish(out)


def start_policy_node(args, out: Path) -> tuple[subprocess.Popen, Path]:
    """The real policy node for ``args.policy`` (autostart, sim time), its log in ``out``."""
    model_dir = Path(args.policy).expanduser().resolve()
    if not model_dir.is_dir():
        raise EvalError(f"--policy {args.policy}: not a directory (give a policy checkpoint folder or 'scripted')")
    params = {
        "model_dir": str(model_dir), "autostart": True, "use_sim_time": True, "mode": args.mode,
        "episode_log": str(out / "episodes.jsonl"), "seed": int(args.seed),
        "contract_file": str(args.contract.resolve()) if args.contract else ""}
    if args.executor:
        params["executor"] = args.executor
    if args.replan_every:
        params["replan_every"] = int(args.replan_every)
    if args.ensemble_m is not None:
        params["ensemble_m"] = float(args.ensemble_m)
    files = [client.write_params(out / "policy_params.yaml", params)]
    if args.params_file is not None:
        if not args.params_file.is_file():
            raise EvalError(f"--params-file {args.params_file}: no such file")
        files.append(args.params_file.resolve())  # the user's parameters win
    log_path = out / "policy_node.log"
    return client.start_policy_node(files, log_path, new_session=True), log_path
