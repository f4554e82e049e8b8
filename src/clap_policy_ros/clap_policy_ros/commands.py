"""
The robot's command: a safe 14-D target -> per arm a PoseStamped target and a Float64 gripper.

The only place the command messages are built. The control loop (control_loop.py) decides the
target, this module turns it into messages and publishes them, stamped with the node's clock
and in the configured frame. Layout: per arm [x, y, z, roll, pitch, yaw, gripper] (Euler xyz,
radians), left at 0, right at 7 (the contract's ``ActionLayout``, clap_train.interface).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from clap_train.interface import DEFAULT_LAYOUT, ActionLayout, ArmSlices
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Float64, Header

from .conversions import euler_xyz_to_quat, xyz_quat_to_pose


def pose_stamped(header: Header, command: np.ndarray, arm: ArmSlices) -> PoseStamped:
    """Build a PoseStamped from ``arm``'s position and Euler angles in ``command``."""
    quat = euler_xyz_to_quat(np.asarray(command[arm.euler], np.float64))
    return xyz_quat_to_pose(header, command[arm.position], quat)


def command_messages(header: Header, command: np.ndarray, layout: ActionLayout = DEFAULT_LAYOUT
                     ) -> dict[str, tuple[PoseStamped, Float64]]:
    """Build each arm's (target pose, gripper command) from a 14-D command."""
    return {a.name: (pose_stamped(header, command, a), Float64(data=float(command[a.gripper])))
            for a in layout.arm_slices}


class CommandPublisher:
    """
    Publishes 14-D commands on the contract's per-arm pose and gripper topics.

    ``create_publisher(msg class, topic)`` makes the publishers (the node's QoS and bookkeeping);
    ``arms``: the contract's action arms (``name``, ``pose.topic``, ``gripper.topic``), in the
    order of the command's layout.
    """

    def __init__(self, create_publisher: Callable, arms, frame_id: str, clock):
        self._pubs = {arm.name: (create_publisher(PoseStamped, arm.pose.topic),
                                 create_publisher(Float64, arm.gripper.topic)) for arm in arms}
        self._layout = ActionLayout(tuple(arm.name for arm in arms))
        self._frame_id = frame_id
        self._clock = clock

    def publish(self, command: np.ndarray) -> None:
        """Publish one command, stamped now: per arm the target pose, then the gripper."""
        header = Header(frame_id=self._frame_id, stamp=self._clock.now().to_msg())
        for arm, (pose, gripper) in command_messages(header, command, self._layout).items():
            pose_pub, gripper_pub = self._pubs[arm]
            pose_pub.publish(pose)
            gripper_pub.publish(gripper)
