"""
The robot's measured state: the newest per-arm end-effector pose and gripper message.

Fed by the node's state subscriptions; ``vector()`` gives the policy's 14-D state (per arm of the
layout [x, y, z, roll, pitch, yaw, gripper], conversions.pose_to_vector, the converter's code), or
None while an arm's pose or gripper has not arrived yet or when state is off (``use_state``).
"""

from __future__ import annotations

import numpy as np
from clap_train.interface import DEFAULT_LAYOUT, ActionLayout

from .conversions import pose_to_vector


class RobotState:
    """The newest state messages per arm of ``layout`` (the contract's state layout)."""

    def __init__(self, enabled: bool = True, layout: ActionLayout = DEFAULT_LAYOUT):
        self.enabled = enabled
        self.layout = layout
        self._msgs: dict[str, object] = {}

    def set_pose(self, arm: str, msg) -> None:
        """Keep the newest geometry_msgs/PoseStamped of ``arm``."""
        self._msgs[f"{arm}_pose"] = msg

    def set_gripper(self, arm: str, msg) -> None:
        """Keep the newest std_msgs/Float64 gripper value of ``arm``."""
        self._msgs[f"{arm}_gripper"] = msg.data

    def vector(self) -> np.ndarray | None:
        """Return the 14-D state, or None (state off, or an arm not heard from yet)."""
        if not self.enabled:
            return None
        parts = []
        for arm in self.layout.arms:
            pose, grip = self._msgs.get(f"{arm}_pose"), self._msgs.get(f"{arm}_gripper")
            if pose is None or grip is None:
                return None
            parts.append(pose_to_vector(pose, float(grip)))
        return np.concatenate(parts)
