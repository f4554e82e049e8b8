"""
RViz views of a predicted chunk: a MarkerArray of both arms' trajectories and a Path per arm.

Each arm's trajectory is a LINE_STRIP plus a SPHERE_LIST whose per-point colour shows the
gripper command (green = open at the top of the gripper range, red = closed at the bottom).
Views only: the robot's command messages are built in commands.py.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from clap_train.interface import DEFAULT_LAYOUT, ActionLayout
from geometry_msgs.msg import Point
from nav_msgs.msg import Path
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from .conversions import euler_xyz_to_quat, xyz_quat_to_pose


def gripper_color(value: float, gripper_min: float, gripper_max: float) -> ColorRGBA:
    """Colour a gripper value: red (closed, gripper_min) to green (open, gripper_max)."""
    t = float(np.clip((value - gripper_min) / (gripper_max - gripper_min), 0.0, 1.0))
    return ColorRGBA(r=1.0 - t, g=t, b=0.1, a=1.0)


def chunk_paths(actions: np.ndarray, header: Header,
                layout: ActionLayout = DEFAULT_LAYOUT) -> dict[str, Path]:
    """Build one nav_msgs/Path per arm through the chunk's poses."""
    out = {}
    for a in layout.arm_slices:
        rows = np.asarray(actions, np.float64)
        quats = euler_xyz_to_quat(rows[:, a.euler])  # all rows in one call
        path = Path()
        path.header = header
        path.poses = [xyz_quat_to_pose(header, row[a.position], q) for row, q in zip(rows, quats)]
        out[a.name] = path
    return out


def chunk_markers(actions: np.ndarray, header: Header, gripper_min: float, gripper_max: float,
                  lifetime_s: float = 2.0, namespace: str = "clap",
                  layout: ActionLayout = DEFAULT_LAYOUT) -> MarkerArray:
    """Build a line strip + gripper-coloured spheres for each arm's predicted trajectory."""
    markers = MarkerArray()
    life = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    for k, a in enumerate(layout.arm_slices):
        arm = a.name
        x, y, z = (a.index(f) for f in ("x", "y", "z"))
        points = [Point(x=float(r[x]), y=float(r[y]), z=float(r[z])) for r in actions]
        colors = [gripper_color(float(r[a.gripper]), gripper_min, gripper_max) for r in actions]
        line = Marker(header=header, ns=f"{namespace}/{arm}", id=2 * k, type=Marker.LINE_STRIP,
                      action=Marker.ADD, points=points, colors=colors, lifetime=life)
        line.pose.orientation.w = 1.0
        line.scale.x = 0.005
        line.color = ColorRGBA(r=0.2, g=0.4, b=1.0, a=0.8)
        spheres = Marker(header=header, ns=f"{namespace}/{arm}", id=2 * k + 1,
                         type=Marker.SPHERE_LIST, action=Marker.ADD, points=points,
                         colors=colors, lifetime=life)
        spheres.pose.orientation.w = 1.0
        spheres.scale.x = spheres.scale.y = spheres.scale.z = 0.015
        spheres.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        markers.markers.extend([line, spheres])
    return markers
