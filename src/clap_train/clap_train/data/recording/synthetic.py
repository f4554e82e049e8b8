"""Scripted bimanual episodes and cheap top-down renderings, made without a simulator.

What it is for: the Act-VAE and VD-VAE need data whose actions are smooth, physically plausible
end-effector trajectories and whose images change *because of* those actions. This module makes
both from a seed, in numpy only, so tests, demos and benchmarks run before any robot data exists.

- ``make_episode(seed)``: both arms (or one) pick an object and place it: reach, descend, grasp
  (gripper closes), lift, carry, place (gripper opens), retreat; minimum-jerk segments at 30 Hz.
  About a third of the episodes turn the wrist yaw across +-pi, so wrap handling is exercised.
  Layout is the 14-D contract's (``clap_train.data.layout.DEFAULT_LAYOUT``): [left x,y,z,
  roll,pitch,yaw, gripper, right x,y,z, roll,pitch,yaw, gripper]; ``state[t]`` is the pose at t,
  ``action[t]`` the commanded pose for t+1.
- ``render(episode, t, camera, look)``: a top-down drawing of the table, objects, place mats and
  both arms (a thick segment from shoulder to end effector) and end effectors (disc size = height, a line =
  yaw, two finger dots = gripper opening) on a
  per-episode background colour; wrist cameras are zoomed views centred on their end effector.
  ``look="human"`` draws the same motion differently (striped background, skin-coloured hands):
  the "human video" variant.
- ``SyntheticDataset``: yields training samples in the format of contract 3 (the same dict as
  ``clap_train.data.samples.dataset.ClapDataset``); ``human=True`` gives human samples (head camera only,
  zero actions and state, ``action_pad`` all True, ``is_robot`` False;
    ``chunk(i)`` still gives the true motion for evaluation). ``collate_samples`` stacks them.

Written by hand because no library generates this kind of toy bimanual data; the numbers that
matter (rate, layout, normalisation to [-1, 1] via q01/q99) follow the project contracts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clap_train.data.samples.action_space import ActionSpace
from clap_train.data.layout import DEFAULT_LAYOUT as LAYOUT
from clap_train.data.samples.normalize import Normalizer

FPS = 30
CAMERAS = ("head", "left_wrist", "right_wrist")
COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
    "purple": (150, 60, 190), "orange": (240, 140, 30), "cyan": (40, 200, 210), "white": (240, 240, 240),
}
_YAW = tuple(LAYOUT.indices("yaw"))  # yaw columns of the 14-D layout


def wrap_to_pi(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x) + np.pi) % (2 * np.pi) - np.pi


@dataclasses.dataclass
class Episode:
    """One scripted episode: poses [T, 14], actions [T, 14], object tracks and texts."""

    seed: int
    state: np.ndarray  # [T, 14] float32, yaw wrapped to [-pi, pi)
    action: np.ndarray  # [T, 14] float32, target pose for the next step
    objects: np.ndarray  # [T, 2, 3] object centres (left arm's, right arm's)
    mats: np.ndarray  # [2, 2] place-mat centres (x, y)
    object_colors: tuple[str, str]
    background: tuple[int, int, int]
    instruction: str
    subtasks: list[str]  # per frame

    @property
    def length(self) -> int:
        return self.state.shape[0]


def _min_jerk(s: np.ndarray) -> np.ndarray:
    return 10 * s**3 - 15 * s**4 + 6 * s**5


def _segments(rng: np.random.Generator, length: int, names: Sequence[str]) -> list[tuple[str, int, int]]:
    w = rng.uniform(0.7, 1.3, len(names))
    bounds = np.round(np.concatenate([[0], np.cumsum(w) / w.sum()]) * (length - 1)).astype(int)
    return [(n, int(a), int(b)) for n, a, b in zip(names, bounds[:-1], bounds[1:])]


def _arm_track(rng: np.random.Generator, length: int, side: float, active: bool):
    """Poses [T, 7], object track [T, 3], mat (x, y) and per-frame phase names for one arm."""
    home = np.array([0.30, 0.28 * side, 0.30])
    obj = np.array([rng.uniform(0.38, 0.62), side * rng.uniform(0.08, 0.36), 0.02])
    mat = np.array([rng.uniform(0.38, 0.62), side * rng.uniform(0.08, 0.36)])
    while np.linalg.norm(mat - obj[:2]) < 0.12:
        mat = np.array([rng.uniform(0.38, 0.62), side * rng.uniform(0.08, 0.36)])
    if rng.random() < 0.35:  # start near +-pi and turn across it
        yaw0 = math.pi - rng.uniform(0.0, 0.3)
        if rng.random() < 0.5:
            yaw0 = -yaw0
        yaw_obj = yaw0 + np.sign(yaw0) * rng.uniform(0.4, 1.0)
    else:
        yaw0 = rng.uniform(-math.pi, math.pi)
        yaw_obj = yaw0 + rng.uniform(-1.2, 1.2)
    yaw_place = yaw_obj + rng.uniform(-0.8, 0.8)
    rp0 = rng.uniform(-0.15, 0.15, 2)
    rp_g = rng.uniform(-0.25, 0.25, 2)
    # way-points: (name, position, roll/pitch, yaw (unwrapped), gripper)
    open_, closed = 1.0, rng.uniform(0.0, 0.15)
    wps = [
        ("start", home, rp0, yaw0, open_),
        ("reach", obj + [0, 0, 0.14], rp_g, yaw_obj, open_),
        ("descend", obj + [0, 0, 0.015], rp_g, yaw_obj, open_),
        ("grasp", obj + [0, 0, 0.015], rp_g, yaw_obj, closed),
        ("lift", obj + [0, 0, 0.20], rp0, yaw_obj, closed),
        ("carry", np.r_[mat, 0.20], rp0, yaw_place, closed),
        ("place", np.r_[mat, 0.035], rp_g * 0.5, yaw_place, closed),
        ("release", np.r_[mat, 0.035], rp_g * 0.5, yaw_place, open_),
        ("retreat", np.r_[mat, 0.0] * 0.5 + home * [0.5, 0.5, 0] + [0, 0, 0.26], rp0, yaw_place, open_),
    ]
    if not active:  # idle arm: small drift around home
        wps = [("idle", home + rng.uniform(-0.02, 0.02, 3), rp0, yaw0, open_) for _ in range(3)]
    names = [w[0] for w in wps[1:]]
    segs = _segments(rng, length, names)
    pose = np.zeros((length, 7))
    phase = [""] * length
    for (name, a, b), w0, w1 in zip(segs, wps[:-1], wps[1:]):
        n = b - a
        s = _min_jerk(np.linspace(0.0, 1.0, n + 1))[:, None]
        v0 = np.r_[w0[1], w0[2], w0[3], w0[4]]
        v1 = np.r_[w1[1], w1[2], w1[3], w1[4]]
        pose[a : b + 1] = v0 + (v1 - v0) * s
        for t in range(a, b + 1):
            phase[t] = name
    # slow, small wobble so chunks are not piecewise-trivial
    t = np.arange(length) / FPS
    f = rng.uniform(0.3, 0.8, 6)
    ph = rng.uniform(0, 2 * np.pi, 6)
    pose[:, :6] += np.sin(2 * np.pi * f * t[:, None] + ph) * np.array([0.004, 0.004, 0.003, 0.02, 0.02, 0.02])
    # object follows the gripper between grasp and release
    obj_track = np.repeat(obj[None], length, axis=0)
    held = [i for i, p in enumerate(phase) if p in ("lift", "carry", "place")] if active else []
    if held:
        g0, g1 = held[0], held[-1]
        obj_track[g0 : g1 + 1] = pose[g0 : g1 + 1, :3] - [0, 0, 0.015]
        obj_track[g1 + 1 :] = np.r_[pose[g1, :2], 0.02]
        obj_track[g0 : g1 + 1, 2] = np.maximum(obj_track[g0 : g1 + 1, 2], 0.02)
    return pose, obj_track, mat, phase


def make_episode(seed: int, length: int = 150) -> Episode:
    """A scripted bimanual pick-and-place episode of ``length`` frames at 30 Hz."""
    if length < 16:
        raise ValueError(f"synthetic episodes need >= 16 frames, got {length}")
    rng = np.random.default_rng(seed)
    mode = rng.choice(["both", "left", "right"], p=[0.5, 0.25, 0.25])
    lp, lo, lm, lph = _arm_track(rng, length + 1, +1.0, mode in ("both", "left"))
    rp, ro, rm, rph = _arm_track(rng, length + 1, -1.0, mode in ("both", "right"))
    poses = np.concatenate([lp, rp], axis=1)
    poses[:, list(_YAW)] = wrap_to_pi(poses[:, list(_YAW)])
    names = list(COLORS)
    c = rng.choice(len(names), 2, replace=False)
    colors = (names[c[0]], names[c[1]])
    bg = tuple(int(v) for v in rng.integers(60, 200, 3))
    arms = {"both": "both arms", "left": "the left arm", "right": "the right arm"}[mode]
    if mode == "both":
        instr = f"put the {colors[0]} block and the {colors[1]} block on their mats"
    else:
        instr = f"use {arms} to put the {colors[0 if mode == 'left' else 1]} block on the mat"
    active = lph if mode != "right" else rph
    subtasks = [f"{p} ({arms})" for p in active[:length]]
    return Episode(
        seed=seed,
        state=poses[:length].astype(np.float32),
        action=poses[1 : length + 1].astype(np.float32),
        objects=np.stack([lo, ro], axis=1)[:length].astype(np.float32),
        mats=np.stack([lm, rm]).astype(np.float32),
        object_colors=colors,
        background=bg,
        instruction=instr,
        subtasks=subtasks,
    )


# ------------------------------------------------------------------------------------------------
# rendering

_HEAD_VIEW = (0.45, 0.0, 0.42)  # centre x, centre y, half-width of the view (m)
_WRIST_HALF = 0.16


def _grid(size: int, cx: float, cy: float, half: float) -> tuple[np.ndarray, np.ndarray]:
    # image rows go from far (large x) to near; columns from left (+y) to right (-y)
    lin = (np.arange(size) + 0.5) / size * 2 - 1
    xs = cx - lin * half
    ys = cy - lin * half
    return xs[:, None], ys[None, :]


def render(episode: Episode, t: int, camera: str = "head", size: int = 64, look: str = "robot") -> np.ndarray:
    """HxWx3 uint8 top-down drawing of frame ``t`` seen by ``camera`` ("head"/"left_wrist"/"right_wrist")."""
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera {camera!r}; choose from {', '.join(CAMERAS)}")
    t = int(np.clip(t, 0, episode.length - 1))
    s = episode.state[t]
    if camera == "head":
        cx, cy, half = _HEAD_VIEW
    else:
        arm = LAYOUT.arm("left" if camera == "left_wrist" else "right")
        cx, cy, half = float(s[arm.index("x")]), float(s[arm.index("y")]), _WRIST_HALF
    X, Y = _grid(size, cx, cy, half)
    img = np.empty((size, size, 3), np.float32)
    bg = np.array(episode.background, np.float32)
    if look == "human":
        stripes = (np.floor((X + Y) / 0.05) % 2)[..., None]
        img[:] = bg[::-1] * (0.75 + 0.25 * stripes)
    else:
        img[:] = bg
        table = (X > 0.15) & (X < 0.75) & (np.abs(Y) < 0.45)
        img[np.broadcast_to(table, (size, size))] = bg * 0.6 + 60
    for k in range(2):  # place mats (outlined squares)
        mx, my = episode.mats[k]
        d = np.maximum(np.abs(X - mx), np.abs(Y - my))
        ring = (d < 0.05) & (d > 0.038)
        img[np.broadcast_to(ring, (size, size))] = (250, 250, 250) if look == "robot" else (30, 30, 30)
    for k in range(2):  # objects (squares, drawn a little bigger when lifted)
        ox, oy, oz = episode.objects[t, k]
        r = 0.025 * (1 + 1.5 * (oz - 0.02))
        m = (np.abs(X - ox) < r) & (np.abs(Y - oy) < r)
        img[np.broadcast_to(m, (size, size))] = COLORS[episode.object_colors[k]]
    for arm, base in ((LAYOUT.arm("left"), (150, 30, 30)), (LAYOUT.arm("right"), (30, 30, 150))):
        x, y, z, yaw, g = (float(s[arm.index(f)]) for f in ("x", "y", "z", "yaw", "gripper"))
        rad = 0.025 + 0.1 * z
        col = np.array((225, 180, 150) if look == "human" else base, np.float32)
        # the arm (or forearm) seen from above: a thick segment from its shoulder to the end effector
        sx, sy = 0.02, 0.30 * (1.0 if arm.name == "left" else -1.0)
        vx, vy = x - sx, y - sy
        u = np.clip(((X - sx) * vx + (Y - sy) * vy) / max(vx * vx + vy * vy, 1e-9), 0.0, 1.0)
        link = (X - sx - u * vx) ** 2 + (Y - sy - u * vy) ** 2 < 0.018**2
        img[link] = img[link] * 0.4 + col * 0.45
        disc = (X - x) ** 2 + (Y - y) ** 2 < rad**2
        img[disc] = img[disc] * 0.3 + col * 0.7
        # yaw pointer
        ux, uy = math.cos(yaw), math.sin(yaw)
        along = (X - x) * ux + (Y - y) * uy
        across = -(X - x) * uy + (Y - y) * ux
        line = (along > 0) & (along < rad * 1.6) & (np.abs(across) < 0.006)
        img[line] = (255, 255, 255) if look == "robot" else (90, 50, 30)
        # fingers: two dots across the yaw direction, separated by the gripper opening
        for sgn in (-1, 1):
            fx = x + sgn * (0.01 + 0.035 * g) * -uy
            fy = y + sgn * (0.01 + 0.035 * g) * ux
            dot = (X - fx) ** 2 + (Y - fy) ** 2 < 0.008**2
            img[dot] = (20, 20, 20) if look == "robot" else (120, 70, 50)
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# statistics (meta/stats.json format: per key min/max/mean/std/q01/q99); normalisation is the
# project's clap_train.data.samples.normalize.Normalizer


def chunk_unwrap(chunk: np.ndarray) -> np.ndarray:
    """Unwrap the yaw columns of a [T, 14] chunk along time, keeping row 0 wrapped."""
    out = np.array(chunk, dtype=np.float64, copy=True)
    for c in _YAW:
        out[:, c] = np.unwrap(out[:, c])
        out[:, c] += wrap_to_pi(out[0, c]) - out[0, c]
    return out


def compute_stats(episodes: Sequence[Episode], chunk_len: int = 32) -> dict[str, dict[str, list[float]]]:
    """Stats of actions (as unwrapped chunks) and states, in meta/stats.json's format."""
    acts = []
    for ep in episodes:
        for t in range(0, ep.length, max(1, chunk_len // 4)):
            acts.append(chunk_unwrap(_chunk(ep.action, t, chunk_len)[0]))
    a = np.concatenate(acts)
    s = np.concatenate([ep.state for ep in episodes]).astype(np.float64)

    def stats(x: np.ndarray) -> dict[str, list[float]]:
        return {
            "min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "q01": np.quantile(x, 0.01, axis=0).tolist(),
            "q99": np.quantile(x, 0.99, axis=0).tolist(), "count": [int(x.shape[0])],
        }

    return {"action": stats(a), "observation.state": stats(s)}


def _chunk(actions: np.ndarray, t: int, chunk_len: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(t, t + chunk_len)
    pad = idx >= actions.shape[0]
    return actions[np.minimum(idx, actions.shape[0] - 1)], pad


# ------------------------------------------------------------------------------------------------
# the training-sample view (contract 3)


class SyntheticDataset(Dataset):
    """Samples of ``num_episodes`` scripted episodes in the contract-3 format.

    ``images=False`` leaves out the image keys (the Act-VAE needs only actions, and rendering
    costs time). ``stats`` (meta/stats.json format) fixes the normalisation; default: computed
    from these episodes. ``human=True``: human-video samples (head camera only, other look, zero
    actions/state, ``is_robot`` False).
    """

    def __init__(
        self,
        num_episodes: int,
        seed: int = 0,
        episode_len: int = 150,
        chunk_len: int = 32,
        future_offset: int = 32,
        image_size: int = 64,
        images: bool = True,
        human: bool = False,
        stats: dict[str, Any] | None = None,
        frame_stride: int = 1,
    ):
        if num_episodes <= 0:
            raise ValueError(f"num_episodes must be positive, got {num_episodes}")
        self.episodes = [make_episode(seed * 100_003 + i, episode_len) for i in range(num_episodes)]
        self.chunk_len, self.future_offset, self.image_size = chunk_len, future_offset, image_size
        self.images, self.human = images, human
        self.stats = stats or compute_stats(self.episodes, chunk_len)
        self.normalizer = Normalizer.from_stats(self.stats)
        self.action_space = ActionSpace("absolute", self.normalizer, LAYOUT.euler_indices)
        self.index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(0, ep.length, frame_stride)]

    def __len__(self) -> int:
        return len(self.index)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item ``i``'s state [14], action chunk [chunk_len, 14] (robot units) and pad mask."""
        e, t = self.index[i]
        raw, pad = _chunk(self.episodes[e].action, t, self.chunk_len)
        return self.episodes[e].state[t].astype(np.float64), chunk_unwrap(raw), pad

    def chunk(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Model-space action chunk [chunk_len, 14] and pad mask of item ``i`` (also for human items)."""
        state, raw, pad = self.raw(i)
        return self.action_space.encode(raw, state), pad

    def image(self, e: int, t: int, camera: str) -> torch.Tensor:
        look = "human" if self.human else "robot"
        arr = render(self.episodes[e], t, camera, self.image_size, look)
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, t = self.index[i]
        ep = self.episodes[e]
        sample: dict[str, Any] = {}
        if self.images:
            cams = ("head",) if self.human else CAMERAS
            zero = torch.zeros(3, self.image_size, self.image_size)
            sample["images"] = {c: self.image(e, t, c) if c in cams else zero for c in CAMERAS}
            sample["image_mask"] = torch.tensor([c in cams for c in CAMERAS])
            sample["future_head"] = self.image(e, min(t + self.future_offset, ep.length - 1), "head")
        chunk, pad = self.chunk(i)
        if self.human:
            sample["action"] = torch.zeros(self.chunk_len, LAYOUT.dim)
            sample["state"] = torch.zeros(LAYOUT.dim)
        else:
            sample["action"] = torch.from_numpy(chunk)
            sample["state"] = torch.from_numpy(self.action_space.encode_state(ep.state[t]))
        sample["action_pad"] = torch.ones(self.chunk_len, dtype=torch.bool) if self.human else torch.from_numpy(pad)
        sample["is_robot"] = not self.human
        sample["instruction"] = ep.instruction
        sample["subtask"] = ep.subtasks[t]
        sample["episode_index"] = e
        sample["frame_index"] = t
        return sample


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (recursively through dicts), keep strings as lists, ints/bools as tensors."""
    first = samples[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        items = [s[key] for s in samples]
        if isinstance(value, torch.Tensor):
            out[key] = torch.stack(items)
        elif isinstance(value, dict):
            out[key] = collate_samples(items)
        elif isinstance(value, bool):
            out[key] = torch.tensor(items, dtype=torch.bool)
        elif isinstance(value, int):
            out[key] = torch.tensor(items, dtype=torch.long)
        else:
            out[key] = items
    return out
