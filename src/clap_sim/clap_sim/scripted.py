"""Scripted demonstrators: per-task waypoint plans in end-effector space, played at 30 Hz.

The plans are those of the ACT simulation demonstrators (Zhao et al. 2023, transfer cube and
insertion), re-timed from their 50 Hz steps to seconds, plus a pick-and-lift plan for the
coloured-cubes task. Between waypoints positions and grippers are interpolated linearly and
orientations by spherical interpolation. Each waypoint segment carries a subtask label, so a
recorded episode has language subtasks aligned with its actions.

Actions come out two ways: per-arm targets (position, quaternion w,x,y,z, gripper 0..1) that
the scene and the ROS PoseStamped messages use, and the contract's 14-D vector
[left x,y,z, roll,pitch,yaw (Euler xyz, rad), gripper, right ...] (clap_train.data.layout).

ROS-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.rotations import euler_xyz_to_quat, quat_to_euler_xyz
from scipy.spatial.transform import Rotation, Slerp

from .scene import ARMS, START_EE_POS, START_EE_QUAT
from .tasks import EpisodeSpec

RATE_HZ = 30.0


def quat_wxyz_to_euler(q) -> np.ndarray:
    """Convert a MuJoCo quaternion (w, x, y, z) to Euler xyz with the project's shared code."""
    q = np.asarray(q, dtype=np.float64)
    return quat_to_euler_xyz(q[..., [1, 2, 3, 0]])


def euler_to_quat_wxyz(e) -> np.ndarray:
    """Euler xyz (rad) -> MuJoCo quaternion (w, x, y, z), w >= 0."""
    return euler_xyz_to_quat(np.asarray(e, dtype=np.float64))[..., [3, 0, 1, 2]]


def _axis_quat(axis, degrees) -> np.ndarray:
    return Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis, dtype=np.float64)).as_quat()[[3, 0, 1, 2]]


def _mul(q1, q2) -> np.ndarray:
    r = Rotation.from_quat(np.asarray(q1)[[1, 2, 3, 0]]) * Rotation.from_quat(np.asarray(q2)[[1, 2, 3, 0]])
    return r.as_quat()[[3, 0, 1, 2]]


@dataclass(frozen=True)
class Waypoint:
    t: float  # seconds from the episode start
    xyz: np.ndarray
    quat: np.ndarray  # w, x, y, z
    gripper: float  # 0 closed .. 1 open
    subtask: str = ""  # the subtask that ENDS at this waypoint


@dataclass
class Trajectory:
    """A scripted episode: per-step targets for both arms and the subtask of each step."""

    pos: dict[str, np.ndarray]  # arm -> [T, 3]
    quat: dict[str, np.ndarray]  # arm -> [T, 4] wxyz
    gripper: dict[str, np.ndarray]  # arm -> [T]
    subtasks: list[str]  # [T]
    rate_hz: float = RATE_HZ

    def __len__(self) -> int:
        return len(self.subtasks)

    def actions14(self) -> np.ndarray:
        """[T, 14] float32 in the contract layout (Euler xyz in [-pi, pi))."""
        return DEFAULT_LAYOUT.vector({arm: (self.pos[arm], quat_wxyz_to_euler(self.quat[arm]), self.gripper[arm])
                                      for arm in ARMS}).astype(np.float32)

    def target(self, step: int) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
        """Targets at ``step`` as arm -> (pos, quat, gripper), held after the end."""
        i = min(step, len(self) - 1)
        return {arm: (self.pos[arm][i], self.quat[arm][i], float(self.gripper[arm][i])) for arm in ARMS}


def _play(waypoints: list[Waypoint], n_steps: int, rate_hz: float):
    """Interpolate waypoints at the control rate -> (pos [T,3], quat [T,4], grip [T], labels)."""
    times = np.array([w.t for w in waypoints])
    if np.any(np.diff(times) <= 0):
        raise ValueError(f"waypoint times must increase: {times}")
    t = np.arange(n_steps) / rate_hz
    tc = np.clip(t, times[0], times[-1])
    xyz = np.stack([np.interp(tc, times, [w.xyz[k] for w in waypoints]) for k in range(3)], axis=1)
    grip = np.interp(tc, times, [w.gripper for w in waypoints])
    rots = Rotation.from_quat(np.array([w.quat for w in waypoints])[:, [1, 2, 3, 0]])
    quat = Slerp(times, rots)(tc).as_quat()[:, [3, 0, 1, 2]]
    quat = np.where(quat[:, :1] < 0, -quat, quat)
    seg = np.clip(np.searchsorted(times, tc, side="right"), 1, len(times) - 1)
    labels = [waypoints[i].subtask for i in seg]
    return xyz, quat, grip, labels


def _merge_labels(left: list[str], right: list[str]) -> list[str]:
    return [lab_r if lab_r else lab_l for lab_l, lab_r in zip(left, right)]


def _start(arm: str) -> Waypoint:
    return Waypoint(0.0, START_EE_POS[arm].copy(), START_EE_QUAT.copy(), 0.0)


def _s(step: int) -> float:
    """Convert an ACT 50 Hz step index to seconds."""
    return step / 50.0


def transfer_cube_plan(spec: EpisodeSpec):
    box = spec.objects["red_box_joint"][:3]
    pick = _mul(START_EE_QUAT, _axis_quat([0, 1, 0], -60))
    meet_left = _axis_quat([1, 0, 0], 90)
    ident = np.array([1.0, 0, 0, 0])
    meet = np.array([0.0, 0.5, 0.25])
    left = [
        _start("left"),
        Waypoint(_s(100), meet + [-0.1, 0, -0.02], meet_left, 1, "move the left arm to the handover point"),
        Waypoint(_s(260), meet + [0.02, 0, -0.02], meet_left, 1, "move the left gripper onto the cube"),
        Waypoint(_s(310), meet + [0.02, 0, -0.02], meet_left, 0, "close the left gripper on the cube"),
        Waypoint(_s(360), meet + [-0.1, 0, -0.02], ident, 0, "pull the cube to the left"),
        Waypoint(_s(400), meet + [-0.1, 0, -0.02], ident, 0, "hold the cube"),
    ]
    right = [
        _start("right"),
        Waypoint(_s(90), box + [0, 0, 0.08], pick, 1, "move the right gripper above the red cube"),
        Waypoint(_s(130), box + [0, 0, -0.015], pick, 1, "lower the right gripper to the red cube"),
        Waypoint(_s(170), box + [0, 0, -0.015], pick, 0, "grasp the red cube with the right gripper"),
        Waypoint(_s(200), meet + [0.05, 0, 0], pick, 0, "lift the red cube"),
        Waypoint(_s(220), meet, pick, 0, "bring the red cube to the handover point"),
        Waypoint(_s(310), meet, pick, 1, ""),  # the left arm's subtasks name this phase
        Waypoint(_s(360), meet + [0.1, 0, 0], pick, 1, ""),
        Waypoint(_s(400), meet + [0.1, 0, 0], pick, 1, ""),
    ]
    return left, right


def insertion_plan(spec: EpisodeSpec):
    peg = spec.objects["red_peg_joint"][:3]
    socket = spec.objects["blue_socket_joint"][:3]
    pick_r = _mul(START_EE_QUAT, _axis_quat([0, 1, 0], -60))
    pick_l = _mul(START_EE_QUAT, _axis_quat([0, 1, 0], 60))
    meet = np.array([0.0, 0.5, 0.15])
    lift_right = 0.00715
    left = [
        _start("left"),
        Waypoint(_s(120), socket + [0, 0, 0.08], pick_l, 1, ""),
        Waypoint(_s(170), socket + [0, 0, -0.03], pick_l, 1, ""),
        Waypoint(_s(220), socket + [0, 0, -0.03], pick_l, 0, ""),
        Waypoint(_s(285), meet + [-0.1, 0, 0], pick_l, 0, ""),
        Waypoint(_s(340), meet + [-0.05, 0, 0], pick_l, 0, ""),
        Waypoint(_s(400), meet + [-0.05, 0, 0], pick_l, 0, ""),
    ]
    right = [
        _start("right"),
        Waypoint(_s(120), peg + [0, 0, 0.08], pick_r, 1, "move both grippers above the peg and the socket"),
        Waypoint(_s(170), peg + [0, 0, -0.03], pick_r, 1, "lower both grippers"),
        Waypoint(_s(220), peg + [0, 0, -0.03], pick_r, 0, "grasp the peg and the socket"),
        Waypoint(_s(285), meet + [0.1, 0, lift_right], pick_r, 0, "lift both and bring them together"),
        Waypoint(_s(340), meet + [0.05, 0, lift_right], pick_r, 0, "insert the peg into the socket"),
        Waypoint(_s(400), meet + [0.05, 0, lift_right], pick_r, 0, "hold the peg in the socket"),
    ]
    return left, right


def coloured_cubes_plan(spec: EpisodeSpec):
    target, arm = spec.extra["target"], spec.extra["arm"]
    box = spec.objects[f"{target}_box_joint"][:3].copy()
    box[2] = 0.05  # the grasp height of the ACT plans (cubes are dropped from 5 cm)
    # Pitch the gripper down toward the cube; the left arm mirrors the right arm.
    pick = _axis_quat([0, 1, 0], -60 if arm == "right" else 60)
    # The mocap frames of both arms are identity at rest; for the left arm the pitch sign flips.
    if arm == "left":
        pick = _axis_quat([0, 1, 0], 60)
    lift = box + [0, 0, 0.12]
    active = [
        _start(arm),
        Waypoint(1.6, box + [0, 0, 0.08], pick, 1, f"move the {arm} gripper above the {target} cube"),
        Waypoint(2.4, box + [0, 0, -0.015], pick, 1, f"lower the {arm} gripper to the {target} cube"),
        Waypoint(3.1, box + [0, 0, -0.015], pick, 0, f"grasp the {target} cube"),
        Waypoint(4.2, lift, pick, 0, f"lift the {target} cube"),
        Waypoint(5.0, lift, pick, 0, f"hold the {target} cube up"),
    ]
    other = "left" if arm == "right" else "right"
    idle = [_start(other), Waypoint(5.0, START_EE_POS[other].copy(), START_EE_QUAT.copy(), 0.0, "")]
    return (active, idle) if arm == "left" else (idle, active)


PLANS = {"transfer_cube": transfer_cube_plan, "insertion": insertion_plan,
         "coloured_cubes": coloured_cubes_plan, "coloured_cubes_novel": coloured_cubes_plan}


def scripted_trajectory(spec: EpisodeSpec, n_steps: int | None = None,
                        rate_hz: float = RATE_HZ) -> Trajectory:
    """Build the scripted demonstration of ``spec``'s task at ``rate_hz``.

    ``n_steps`` defaults to the plan's full length.
    """
    if spec.task not in PLANS:
        raise ValueError(f"no scripted demonstrator for task {spec.task!r}; choose from {', '.join(PLANS)}")
    left, right = PLANS[spec.task](spec)
    duration = max(left[-1].t, right[-1].t)
    n = int(round(duration * rate_hz)) if n_steps is None else int(n_steps)
    if n < 1:
        raise ValueError(f"n_steps must be >= 1, got {n}")
    out = {}
    for arm, wps in (("left", left), ("right", right)):
        out[arm] = _play(wps, n, rate_hz)
    labels = _merge_labels(out["left"][3], out["right"][3])
    # Fill unlabelled stretches with the previous label (or the first non-empty one).
    first = next((lab for lab in labels if lab), spec.instruction)
    filled, last = [], first
    for lab in labels:
        last = lab or last
        filled.append(last)
    return Trajectory({a: out[a][0] for a in ARMS}, {a: out[a][1] for a in ARMS},
                      {a: out[a][2] for a in ARMS}, filled, rate_hz)


def run_scripted(task, seed: int, *, n_steps: int | None = None, scene=None, render: bool = False,
                 on_step=None):
    """Play the scripted demonstrator of ``task`` (a Task) for one seeded episode.

    ``on_step(step, scene, traj)`` is called after the targets of each step are set and before
    physics advances (a recorder renders there). Returns (success, max_reward, spec, traj).
    """
    own = scene is None
    scene = task.make_scene(render=render) if own else scene
    try:
        spec = task.reset(scene, seed)
        traj = scripted_trajectory(spec, n_steps=n_steps, rate_hz=scene.rate_hz)
        best = 0
        for step in range(len(traj)):
            for arm, (p, q, g) in traj.target(step).items():
                scene.set_arm_target(arm, p, q, g)
            if on_step is not None:
                on_step(step, scene, traj)
            scene.step()
            best = max(best, task.reward(scene, spec))
        return best >= task.max_reward, best, spec, traj
    finally:
        if own:
            scene.close()
