"""
Safety filter between the chunk executor and the command publishers (pure numpy, no ROS).

Rejects chunks with NaN/inf or a wrong shape, clamps each target to the per-arm workspace box,
limits the per-tick step to the maximum linear and angular speed, and clamps the grippers to
their range. Staleness (camera older than max age -> hold) is decided by the node, which owns
the clocks; ``hold`` here just says what holding means (repeat the last commanded target).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from clap_train.data.rotations import wrap_to_pi
from clap_train.interface import DEFAULT_LAYOUT, ActionLayout


@dataclasses.dataclass(frozen=True)
class Box:
    """One arm's workspace: the box its end-effector targets are clamped to (xyz, m)."""

    low: tuple[float, float, float] = (-1.0, -1.0, 0.0)
    high: tuple[float, float, float] = (1.0, 1.0, 2.0)

    def check(self, arm: str) -> None:
        """Raise ValueError naming ``arm`` unless the box has 3 values a side and is not empty."""
        if len(self.low) != 3 or len(self.high) != 3:
            raise ValueError(f"{arm} workspace bounds need 3 values each, got {self.low}, {self.high}")
        if any(a >= b for a, b in zip(self.low, self.high)):
            raise ValueError(f"{arm} workspace min {tuple(self.low)} must be below max {tuple(self.high)}")


@dataclasses.dataclass
class SafetyLimits:
    """Per-arm workspace (arm name -> Box; default: the default layout's arms), speed limits, gripper range."""

    workspace: dict[str, Box] = dataclasses.field(
        default_factory=lambda: {arm: Box() for arm in DEFAULT_LAYOUT.arms})
    max_linear_speed: float = 0.5  # m/s, per arm
    max_angular_speed: float = 2.0  # rad/s, per arm (norm of the Euler-angle step)
    gripper_min: float = 0.0
    gripper_max: float = 1.0
    dt: float = 1.0 / 30.0

    def __post_init__(self):
        for arm, box in self.workspace.items():
            box.check(arm)
        if self.max_linear_speed <= 0 or self.max_angular_speed <= 0:
            raise ValueError("max_linear_speed and max_angular_speed must be > 0")
        if self.gripper_min >= self.gripper_max:
            raise ValueError(f"gripper range [{self.gripper_min}, {self.gripper_max}] is empty")
        if self.dt <= 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")


class SafetyFilter:
    """Validates chunks and makes each target safe relative to the last commanded one."""

    def __init__(self, limits: SafetyLimits, layout: ActionLayout = DEFAULT_LAYOUT):
        missing = [arm for arm in layout.arms if arm not in limits.workspace]
        if missing:
            raise ValueError(f"no workspace limits for arm(s) {missing} (the limits have "
                             f"{list(limits.workspace)})")
        self.limits = limits
        self._arms = layout.arm_slices

    @staticmethod
    def chunk_problem(actions: np.ndarray, shape: tuple[int, int]) -> str | None:
        """Say why a chunk must be rejected (wrong shape, NaN or inf); None when usable."""
        actions = np.asarray(actions)
        if actions.shape != tuple(shape):
            return f"chunk shape {actions.shape} != {tuple(shape)}"
        bad = ~np.isfinite(actions)
        if bad.any():
            rows, cols = np.nonzero(bad)
            return (f"chunk has {int(bad.sum())} non-finite value(s) "
                    f"(first at row {int(rows[0])}, column {int(cols[0])})")
        return None

    def filter(self, target: np.ndarray,
               previous: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
        """Return a safe version of ``target`` and the limits that acted (empty if none)."""
        lim = self.limits
        target = np.asarray(target, dtype=np.float64)
        if not np.all(np.isfinite(target)):
            raise ValueError("target has non-finite values")
        out = target.copy()
        acted: list[str] = []
        for a in self._arms:
            arm, xyz, rpy, grip = a.name, a.position, a.euler, a.gripper
            box = lim.workspace[arm]
            lo, hi = np.asarray(box.low), np.asarray(box.high)
            pos = np.clip(out[xyz], lo, hi)
            if not np.allclose(pos, out[xyz]):
                acted.append(f"{arm}_workspace")
            out[xyz] = pos
            out[rpy] = wrap_to_pi(out[rpy])
            g = float(np.clip(out[grip], lim.gripper_min, lim.gripper_max))
            if g != out[grip]:
                acted.append(f"{arm}_gripper_range")
            out[grip] = g
            if previous is None:
                continue
            prev = np.asarray(previous, dtype=np.float64)
            step = out[xyz] - prev[xyz]
            dist = float(np.linalg.norm(step))
            max_step = lim.max_linear_speed * lim.dt
            if dist > max_step:
                out[xyz] = prev[xyz] + step * (max_step / dist)
                acted.append(f"{arm}_linear_speed")
            dang = wrap_to_pi(out[rpy] - prev[rpy])
            ang = float(np.linalg.norm(dang))
            max_ang = lim.max_angular_speed * lim.dt
            if ang > max_ang:
                out[rpy] = wrap_to_pi(prev[rpy] + dang * (max_ang / ang))
                acted.append(f"{arm}_angular_speed")
        return out, acted
