"""
The policy node's parameters: declared with descriptors, read at configure as ``NodeParams``.

Read-only parameters (unsafe to change live) are fixed for the node's life, so the snapshot taken
at configure is what the node runs with. The live ones (``LIVE_CHECKS``) are checked when set;
the node forwards ``mode``, ``seed`` and ``sync_slop`` to the objects that use them
(``ensemble_m`` takes effect at the next configure, ``instruction`` is the initial one only).
What the topic contract says (topics, message types, each camera's ``max_age_s``, ``frame_id``)
is no parameter: the node reads it from the contract that ``contract_file`` names (see
``load_node_contract``); a topic is moved by remapping it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from clap_train.data.contract import Contract, load_contract
from clap_train.interface import DEFAULT_LAYOUT, ActionLayout
from rcl_interfaces.msg import ParameterDescriptor

from .chunk_executor import EXECUTOR_MODES, ExecutorConfig
from .safety import SafetyLimits

_CASTS = {"float": float, "int": int, "bool": bool, "str": str}

# name -> (default, read_only, description)
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
    "use_state": (True, True, "feed per-arm state (ee pose + gripper) to the policy"),
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
    "ensemble_m": lambda v: v >= 0,
}


def declare_parameters(node) -> None:
    """Declare every parameter on ``node``."""
    for name, (default, read_only, text) in PARAMETERS.items():
        node.declare_parameter(name, default, ParameterDescriptor(
            description=text, read_only=read_only))


def load_node_contract(path: str) -> Contract:
    """
    Load the topic contract the node runs with (``path`` "" = the default astribot contract).

    Raise ValueError when it lacks what the node needs: an ``outputs:`` section and a
    ``max_age_s`` for every camera (a camera that is never stale would never stop the robot).
    """
    contract = load_contract(path or None)
    contract.node_outputs()
    never = [c.name for c in contract.cameras if c.max_age_s is None]
    if never:
        raise ValueError(f"contract {contract.source}: cameras {never} have no max_age_s; the "
                         "policy node holds the robot on a camera older than it")
    return contract


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
    use_state: bool
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
