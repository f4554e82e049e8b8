"""The scene's arm poses as the contract's 14-D vector, and back (ROS-free).

The vector's layout is the contract's (``clap_train.data.layout.DEFAULT_LAYOUT``); the scene's arms
(``scene.ARMS``) are its arms.
"""

from __future__ import annotations

import numpy as np
from clap_train.data.layout import DEFAULT_LAYOUT as LAYOUT

from .scene import BimanualScene
from .scripted import euler_to_quat_wxyz, quat_wxyz_to_euler


def vector14(poses: dict) -> np.ndarray:
    """{arm: ArmPose} -> the contract's 14-D vector (Euler xyz)."""
    return LAYOUT.vector({arm: (p.pos, quat_wxyz_to_euler(p.quat), p.gripper) for arm, p in poses.items()})


def apply_vector14(scene: BimanualScene, action: np.ndarray) -> None:
    """Set both arms' targets from a 14-D action (what the node's pose + gripper commands do)."""
    a = np.asarray(action, dtype=np.float64)
    for arm in LAYOUT.arm_slices:
        scene.set_arm_target(arm.name, a[arm.position], euler_to_quat_wxyz(a[arm.euler]), float(a[arm.gripper]))
