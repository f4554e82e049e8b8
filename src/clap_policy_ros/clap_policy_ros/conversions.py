"""
Conversions the node shares with the bag converter (all from clap_train.data).

The converter and this node must turn a camera message into the same array and a pose into
the same Euler triple, so both call clap_train.data.images (cameras.py) / .rotations; this
module only adds the ROS-message-shaped glue (PoseStamped + Float64 -> 14-D state, xyz + quaternion ->
PoseStamped, seconds <-> builtin_interfaces).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from clap_train.data.rotations import euler_xyz_to_quat, quat_to_euler_xyz, wrap_to_pi
from geometry_msgs.msg import PoseStamped

__all__ = ["euler_xyz_to_quat", "pose_to_vector", "stamp_seconds", "to_duration", "wrap_to_pi",
           "xyz_quat_to_pose"]


def pose_to_vector(pose_msg, gripper: float) -> np.ndarray:
    """Build one arm's 7 values [x, y, z, roll, pitch, yaw, gripper] from pose + gripper."""
    p, q = pose_msg.pose.position, pose_msg.pose.orientation
    euler = quat_to_euler_xyz(np.array([q.x, q.y, q.z, q.w], dtype=np.float64))
    return np.array([p.x, p.y, p.z, *euler, gripper], dtype=np.float64)


def xyz_quat_to_pose(header, xyz, quat_xyzw) -> PoseStamped:
    """Build a PoseStamped from a position and an [x, y, z, w] quaternion."""
    msg = PoseStamped()
    msg.header = header
    p, o = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = float(xyz[0]), float(xyz[1]), float(xyz[2])
    o.x, o.y, o.z, o.w = (float(v) for v in quat_xyzw)
    return msg


def to_duration(seconds: float) -> Duration:
    """Convert seconds to builtin_interfaces/Duration."""
    seconds = max(0.0, float(seconds))
    return Duration(sec=int(seconds), nanosec=int(round((seconds % 1.0) * 1e9)) % 1_000_000_000)


def stamp_seconds(stamp) -> float:
    """Convert builtin_interfaces/Time to seconds."""
    return stamp.sec + stamp.nanosec * 1e-9
