"""
The robot's command: a safe 14-D target -> per arm a PoseStamped target and a Float64 gripper.

The only place the command messages are built. The control loop (control_loop.py) decides the
target, this module turns it into messages and publishes them, stamped with the node's clock
and in the configured frame. Layout: per arm [x, y, z, roll, pitch, yaw, gripper] (Euler xyz,
radians), left at 0, right at 7 (``safety.ARM_OFFSETS``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Float64, Header

from .conversions import euler_xyz_to_quat, xyz_quat_to_pose
from .safety import ARM_OFFSETS


def pose_stamped(header: Header, arm_row: np.ndarray) -> PoseStamped:
    """Build a PoseStamped from one arm's 7 values [x, y, z, roll, pitch, yaw, gripper]."""
    quat = euler_xyz_to_quat(np.asarray(arm_row[3:6], np.float64))
    return xyz_quat_to_pose(header, arm_row[:3], quat)


def command_messages(header: Header,
                     command: np.ndarray) -> dict[str, tuple[PoseStamped, Float64]]:
    """Build each arm's (target pose, gripper command) from a 14-D command."""
    return {arm: (pose_stamped(header, command[o:o + 7]), Float64(data=float(command[o + 6])))
            for arm, o in ARM_OFFSETS.items()}


class CommandPublisher:
    """
    Publishes 14-D commands on the contract's per-arm pose and gripper topics.

    ``create_publisher(msg class, topic)`` makes the publishers (the node's QoS and bookkeeping);
    ``arms``: the contract's action arms (``name``, ``pose.topic``, ``gripper.topic``).
    """

    def __init__(self, create_publisher: Callable, arms, frame_id: str, clock):
        self._pubs = {arm.name: (create_publisher(PoseStamped, arm.pose.topic),
                                 create_publisher(Float64, arm.gripper.topic)) for arm in arms}
        self._frame_id = frame_id
        self._clock = clock

    def publish(self, command: np.ndarray) -> None:
        """Publish one command, stamped now: per arm the target pose, then the gripper."""
        header = Header(frame_id=self._frame_id, stamp=self._clock.now().to_msg())
        for arm, (pose, gripper) in command_messages(header, command).items():
            pose_pub, gripper_pub = self._pubs[arm]
            pose_pub.publish(pose)
            gripper_pub.publish(gripper)
