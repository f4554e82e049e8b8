"""The scene's arm poses as the contract's 14-D vector, and back (ROS-free)."""

from __future__ import annotations

import numpy as np

from .scene import ARMS, BimanualScene
from .scripted import euler_to_quat_wxyz, quat_wxyz_to_euler

ARM_WIDTH = 7  # x, y, z, roll, pitch, yaw, gripper


def vector14(poses: dict) -> np.ndarray:
    """{arm: ArmPose} -> the contract's 14-D vector (Euler xyz)."""
    parts = []
    for arm in ARMS:
        p = poses[arm]
        parts += [p.pos, quat_wxyz_to_euler(p.quat), [p.gripper]]
    return np.concatenate(parts).astype(np.float64)


def apply_vector14(scene: BimanualScene, action: np.ndarray) -> None:
    """Set both arms' targets from a 14-D action (what the node's pose + gripper commands do)."""
    a = np.asarray(action, dtype=np.float64)
    for k, arm in enumerate(ARMS):
        row = a[k * ARM_WIDTH:(k + 1) * ARM_WIDTH]
        scene.set_arm_target(arm, row[:3], euler_to_quat_wxyz(row[3:6]), float(row[6]))
