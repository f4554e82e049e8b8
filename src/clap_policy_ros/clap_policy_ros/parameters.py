"""
The policy node's parameters: one frozen definition (``NodeParams``), declared with descriptors.

Read-only parameters (unsafe to change live) are fixed for the node's life, so the snapshot taken
at configure is what the node runs with. The live ones (``LIVE_CHECKS``) are checked when set;
the node forwards ``mode``, ``seed`` and ``sync_slop`` to the objects that use them
(``ensemble_m`` takes effect at the next configure, ``instruction`` is the initial one only).
What the topic contract says (topics, message types, each camera's ``max_age_s``, ``frame_id``)
is no parameter: the node reads it from the contract that ``contract_file`` names (see
``load_node_contract``); a topic is moved by remapping it. Importing this module needs no ROS:
the lock-step rollout (clap_sim/rollout.py) builds the node's executor and safety filter from it too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from clap_train.data.contract import Contract, load_contract
from clap_train.interface import DEFAULT_LAYOUT, ActionLayout

from .chunk_executor import EXECUTOR_MODES, ExecutorConfig
from .safety import Box, SafetyLimits


def _param(default, read_only: bool, text: str, live: Callable[[object], bool] | None = None):
    """Return a NodeParams field: its default and how the node declares it (descriptor, live check)."""
    factory = (lambda: tuple(default)) if isinstance(default, tuple) else None
    meta = {"read_only": read_only, "text": text, "live": live}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NodeParams:
    """
    Every parameter of the node: its default, whether it is read-only, and what it means.

    The one definition: the node declares its parameters from these fields, reads them back into
    an instance at configure, and config/astribot.yaml sets a subset of them (a test checks it).
    """

    contract_file: str = _param("", True, "topic contract YAML; empty = the default astribot contract")
    model_dir: str = _param("", True, "policy checkpoint directory (ClapPolicy.load)")
    policy_class: str = _param("clap_train.policy:ClapPolicy", True, "module:Class with .load(path)")
    device: str = _param("cpu", True, "torch device for the model")
    mode: str = _param("rf", False, "rf (flow head) or ntp (token decoding)", lambda v: v in ("rf", "ntp"))
    # temporal ensembling measures best (bench/RESULTS.md: 19/20 on unseen transfer-cube seeds
    # through the node, RTC 16/20 at twice the latency), so it is the default until RTC matches it
    executor: str = _param("temporal_ensemble", True, "chunk executor: " + ", ".join(EXECUTOR_MODES))
    control_rate_hz: float = _param(30.0, True, "rate of the target/gripper commands")
    replan_every: int = _param(1, True, "control ticks between new chunks (execution horizon; 1: a new "
                                        "chunk whenever the last inference is done)")
    ensemble_m: float = _param(0.01, False, "temporal ensembling weight m in exp(-m*i), i = 0 the oldest "
                               "prediction (> 0: the oldest weigh most, as ACT; < 0: the newest)",
                               math.isfinite)
    warmup_chunks: int = _param(1, True, "first chunks whose delay is not counted (cold start)")
    sync_slop: float = _param(0.02, False, "max spread of the stamps of one camera set (s)",
                              lambda v: v >= 0)
    use_state: bool = _param(True, True, "feed per-arm state (ee pose + gripper) to the policy")
    workspace_min: tuple[float, ...] = _param(
        (-1.0, -1.0, 0.0) * len(DEFAULT_LAYOUT.arms), True,
        "target box min xyz (m), 3 values per arm of the contract, in its order")
    workspace_max: tuple[float, ...] = _param(
        (1.0, 1.0, 2.0) * len(DEFAULT_LAYOUT.arms), True,
        "target box max xyz (m), 3 values per arm of the contract, in its order")
    max_linear_speed: float = _param(0.5, True, "max end-effector speed per arm (m/s)")
    max_angular_speed: float = _param(2.0, True, "max end-effector angular speed per arm (rad/s)")
    gripper_min: float = _param(0.0, True, "gripper command lower bound")
    gripper_max: float = _param(1.0, True, "gripper command upper bound")
    seed: int = _param(0, False, "base seed of the flow noise (chunk k uses seed + k)")
    instruction: str = _param("", False, "initial instruction; empty = hold")
    episode_log: str = _param("~/.clap/episodes.jsonl", True, "JSON-lines episode log (fsynced)")
    status_rate_hz: float = _param(5.0, True, "PolicyStatus rate")
    autostart: bool = _param(False, True, "configure and activate at start-up (no lifecycle manager)")

    @classmethod
    def read(cls, value: Callable[[str], object]) -> NodeParams:
        """Build from ``value(name)`` (e.g. a node's ``get_parameter(name).value``)."""
        kwargs = {}
        for field in dataclasses.fields(cls):  # annotations are strings (__future__)
            raw = value(field.name)
            kwargs[field.name] = (tuple(float(v) for v in raw) if field.type.startswith("tuple")
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

    def safety_limits(self, layout: ActionLayout = DEFAULT_LAYOUT) -> SafetyLimits:
        """Return the safety filter's limits: each arm of ``layout`` its box, speeds, gripper range."""
        n = 3 * len(layout.arms)
        if len(self.workspace_min) != n or len(self.workspace_max) != n:
            raise ValueError(f"workspace_min and workspace_max need 3 values per arm ({', '.join(layout.arms)}): "
                             f"{n}, got {len(self.workspace_min)} and {len(self.workspace_max)}")
        boxes = {arm: Box(tuple(self.workspace_min[3 * k:3 * k + 3]), tuple(self.workspace_max[3 * k:3 * k + 3]))
                 for k, arm in enumerate(layout.arms)}
        return SafetyLimits(
            workspace=boxes, max_linear_speed=self.max_linear_speed,
            max_angular_speed=self.max_angular_speed, gripper_min=self.gripper_min,
            gripper_max=self.gripper_max, dt=self.dt)


_CASTS = {"float": float, "int": int, "bool": bool, "str": str}
# name -> (default, read_only, description), from NodeParams
PARAMETERS: dict[str, tuple[object, bool, str]] = {
    f.name: ((list(f.default_factory()) if f.default_factory is not dataclasses.MISSING else f.default),
             f.metadata["read_only"], f.metadata["text"]) for f in dataclasses.fields(NodeParams)}
LIVE_CHECKS = {f.name: f.metadata["live"] for f in dataclasses.fields(NodeParams) if f.metadata["live"]}


def declare_parameters(node) -> None:
    """Declare every parameter on ``node``."""
    from rcl_interfaces.msg import ParameterDescriptor

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
