"""
The policy node's parameters: declared with descriptors, read at configure as ``NodeParams``.

Read-only parameters (unsafe to change live) are fixed for the node's life, so the snapshot taken
at configure is what the node runs with. The live ones (``LIVE_CHECKS``) are checked when set;
the node forwards ``mode``, ``seed``, ``sync_slop`` and ``max_age`` to the objects that use them
(``ensemble_m`` takes effect at the next configure, ``instruction`` is the initial one only).
Defaults that come from the topic contract (``None`` below) are filled in from it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from clap_train.data.contract import load_contract
from clap_train.interface import DEFAULT_LAYOUT, ActionLayout
from rcl_interfaces.msg import ParameterDescriptor

from .chunk_executor import EXECUTOR_MODES, ExecutorConfig
from .safety import SafetyLimits

_CASTS = {"float": float, "int": int, "bool": bool, "str": str}
CAMERA_MESSAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")

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


def declare_parameters(node):
    """Declare every parameter on ``node``; return the topic contract the defaults came from."""
    contract = None
    for name, (default, read_only, text) in PARAMETERS.items():
        if default is None:  # contract_file is declared first, so it is known here
            if contract is None:
                contract = load_contract(node.get_parameter("contract_file").value or None)
            default = _contract_default(contract, name)
        node.declare_parameter(name, default, ParameterDescriptor(
            description=text, read_only=read_only))
    return contract


def _contract_default(contract, name: str):
    if name == "camera_topics":
        return [c.topic for c in contract.cameras]
    if name == "camera_message_type":
        return contract.cameras[0].type
    if name == "frame_id":
        return contract.frame_id
    raise KeyError(name)


def live_change_problem(params) -> str | None:
    """Say why a live change of ``params`` (rclpy Parameters) is refused; None when allowed."""
    for p in params:
        check = LIVE_CHECKS.get(p.name)
        if check is not None and not check(p.value):
            return f"{p.name}={p.value!r} is not allowed"
    return None


@dataclasses.dataclass(frozen=True)
class NodeParams:
    """Every parameter's value, as the node runs with it (see the module docstring)."""

    contract_file: str
    model_dir: str
    policy_class: str
    device: str
    mode: str
    executor: str
    control_rate_hz: float
    replan_every: int
    ensemble_m: float
    warmup_chunks: int
    sync_slop: float
    max_age: float
    camera_topics: tuple[str, ...]
    camera_message_type: str
    use_state: bool
    frame_id: str
    left_workspace_min: tuple[float, ...]
    left_workspace_max: tuple[float, ...]
    right_workspace_min: tuple[float, ...]
    right_workspace_max: tuple[float, ...]
    max_linear_speed: float
    max_angular_speed: float
    gripper_min: float
    gripper_max: float
    seed: int
    instruction: str
    episode_log: str
    status_rate_hz: float
    autostart: bool

    @classmethod
    def read(cls, value: Callable[[str], object]) -> NodeParams:
        """Build from ``value(name)`` (e.g. a node's ``get_parameter(name).value``)."""
        kwargs = {}
        for field in dataclasses.fields(cls):  # annotations are strings (__future__)
            raw = value(field.name)
            kwargs[field.name] = (tuple(raw) if field.type.startswith("tuple")
                                  else _CASTS[field.type](raw))
        return cls(**kwargs)

    @property
    def dt(self) -> float:
        """Return the control period (s)."""
        return 1.0 / self.control_rate_hz

    def check_cameras(self, contract) -> None:
        """Raise ValueError when the camera parameters do not fit the contract."""
        if len(self.camera_topics) != len(contract.cameras):
            raise ValueError(f"camera_topics has {len(self.camera_topics)} topics, the contract "
                             f"{contract.source} has {len(contract.cameras)} cameras")
        if self.camera_message_type not in CAMERA_MESSAGE_TYPES:
            raise ValueError(f"camera_message_type {self.camera_message_type!r} is not Image "
                             "or CompressedImage")

    def executor_config(self, chunk_len: int, action_dim: int,
                        layout: ActionLayout = DEFAULT_LAYOUT) -> ExecutorConfig:
        """Return the chunk executor's configuration for a policy's chunk shape and layout."""
        return ExecutorConfig(mode=self.executor, chunk_len=int(chunk_len),
                              action_dim=int(action_dim), replan_every=self.replan_every,
                              ensemble_m=self.ensemble_m,
                              angle_dims=tuple(layout.euler_indices))

    def safety_limits(self) -> SafetyLimits:
        """Return the safety filter's limits (workspace, speeds, gripper range, period)."""
        return SafetyLimits(
            left_min=self.left_workspace_min, left_max=self.left_workspace_max,
            right_min=self.right_workspace_min, right_max=self.right_workspace_max,
            max_linear_speed=self.max_linear_speed, max_angular_speed=self.max_angular_speed,
            gripper_min=self.gripper_min, gripper_max=self.gripper_max, dt=self.dt)
