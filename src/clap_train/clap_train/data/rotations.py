"""Euler-angle handling of the 14-D action layout (quaternion <-> Euler xyz, unwrap, wrap).

Conversions use ``scipy.spatial.transform.Rotation`` (extrinsic "xyz", i.e. ROS roll/pitch/yaw:
R = Rz(yaw) Ry(pitch) Rx(roll)); quaternions are in ROS order (x, y, z, w). Unwrapping along
time is numpy's ``np.unwrap``. The bag converter and the live node both call these, so an angle
crossing +-pi is treated the same offline and online.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

TWO_PI = 2.0 * np.pi


def quat_to_euler_xyz(quat: np.ndarray) -> np.ndarray:
    """Quaternions [..., 4] (x, y, z, w) -> Euler angles [..., 3] (roll, pitch, yaw), each in [-pi, pi]."""
    q = np.asarray(quat, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternions need a last axis of 4 (x, y, z, w), got shape {q.shape}")
    norms = np.linalg.norm(q, axis=-1)
    if np.any(~np.isfinite(norms)) or np.any(norms < 1e-9):
        raise ValueError("quaternion with zero or non-finite norm")
    flat = q.reshape(-1, 4)
    euler = Rotation.from_quat(flat).as_euler("xyz")
    return euler.reshape(*q.shape[:-1], 3)


def euler_xyz_to_quat(euler: np.ndarray) -> np.ndarray:
    """Euler angles [..., 3] (roll, pitch, yaw) -> unit quaternions [..., 4] (x, y, z, w), w >= 0."""
    e = np.asarray(euler, dtype=np.float64)
    if e.shape[-1] != 3:
        raise ValueError(f"Euler angles need a last axis of 3 (roll, pitch, yaw), got shape {e.shape}")
    q = Rotation.from_euler("xyz", e.reshape(-1, 3)).as_quat()
    q = np.where(q[:, 3:4] < 0, -q, q)
    return q.reshape(*e.shape[:-1], 4)


def unwrap_euler(angles: np.ndarray, axis: int = 0) -> np.ndarray:
    """Remove 2*pi jumps along ``axis`` (time), so an angle crossing +-pi stays continuous."""
    return np.unwrap(np.asarray(angles, dtype=np.float64), axis=axis)


def wrap_to_pi(angles: np.ndarray) -> np.ndarray:
    """Wrap angles to [-pi, pi)."""
    a = np.asarray(angles)
    return (a + np.pi) % TWO_PI - np.pi


def nearest_branch(angles: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``angles`` shifted by the multiple of 2*pi that brings them nearest to ``reference`` (broadcast).

    The one place this is written: the converter (commands onto the state's branch), the action
    space (a relative chunk onto the state's branch) and the offline evaluation (a prediction
    onto the truth's branch) all call it.
    """
    a = np.asarray(angles, dtype=np.float64)
    return a + TWO_PI * np.round((np.asarray(reference, dtype=np.float64) - a) / TWO_PI)


def canonical_branch(state: np.ndarray, action: np.ndarray, euler_indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Shift each frame's Euler angles by the multiple of 2*pi that wraps its *state* to [-pi, pi).

    The same shift is applied to the actions of that frame, so a chunk stays continuous and starts
    near the wrapped state the live node sees. Used for statistics and by the loader.
    """
    offset = wrap_to_pi(state[..., euler_indices]) - state[..., euler_indices]
    s, a = state.copy(), action.copy()
    s[..., euler_indices] += offset
    a[..., euler_indices] += offset
    return s, a


def unwrap_vector_euler(vectors: np.ndarray, euler_indices: list[int] | tuple[int, ...]) -> np.ndarray:
    """Unwrap the Euler columns of a [T, D] state/action sequence along time (copy)."""
    out = np.array(vectors, dtype=np.float64, copy=True)
    idx = list(euler_indices)
    if len(out) and idx:
        out[:, idx] = unwrap_euler(out[:, idx], axis=0)
    return out


def wrap_vector_euler(vectors: np.ndarray, euler_indices: list[int] | tuple[int, ...]) -> np.ndarray:
    """Wrap the Euler columns of [..., D] vectors to [-pi, pi) (copy)."""
    out = np.array(vectors, copy=True)
    idx = list(euler_indices)
    out[..., idx] = wrap_to_pi(out[..., idx])
    return out
