"""
Conversions the node shares with the bag converter (all from clap_train.data).

The converter and this node must turn a camera message into the same array and a pose into
the same Euler triple, so both call clap_train.data.images / .rotations; this module only
adds the ROS-message-shaped glue (PoseStamped + Float64 -> 14-D state).
"""

from __future__ import annotations

import numpy as np
from clap_train.data.images import ImageEncodingError, message_to_rgb
from clap_train.data.rotations import euler_xyz_to_quat, quat_to_euler_xyz, wrap_to_pi

__all__ = ["ImageEncodingError", "euler_xyz_to_quat", "image_msg_to_rgb", "pose_to_vector",
           "wrap_to_pi"]


def image_msg_to_rgb(msg) -> np.ndarray:
    """Convert a sensor_msgs Image or CompressedImage to HxWx3 uint8 (ImageEncodingError)."""
    return message_to_rgb(msg)


def pose_to_vector(pose_msg, gripper: float) -> np.ndarray:
    """Build one arm's 7 values [x, y, z, roll, pitch, yaw, gripper] from pose + gripper."""
    p, q = pose_msg.pose.position, pose_msg.pose.orientation
    euler = quat_to_euler_xyz(np.array([q.x, q.y, q.z, q.w], dtype=np.float64))
    return np.array([p.x, p.y, p.z, *euler, gripper], dtype=np.float64)
