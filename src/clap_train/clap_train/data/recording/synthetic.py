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
- ``write_dataset(root, n)`` / ``synthetic_dataset(n)``: ``n`` episodes written as a LeRobot v3.0
  dataset through the converter's writer (``lerobot_format``): state and action unwrapped along
  the episode like a converted recording, one mp4 per camera. ``human=True`` writes the human-video
  variant (head camera only, ``look="human"``, no state or action), as ``clap convert-videos``
  would. The training loader reads them like any other dataset; ``synthetic_dataset`` builds one
  once into a cache folder named by its parameters (``--synthetic N`` of every stage).

Written by hand because no library generates this kind of toy bimanual data; the numbers that
matter (rate, layout, normalisation to [-1, 1] via q01/q99) follow the project contracts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np

from clap_train.data.layout import ARM_WIDTH, EULER
from clap_train.data.layout import DEFAULT_LAYOUT as LAYOUT
from clap_train.data.recording.lerobot_format import ACTION_KEY, STATE_KEY, finalize, store_dir, write_frames
from clap_train.data.rotations import unwrap_vector_euler, wrap_to_pi
from clap_train.data.stats import image_stats
from clap_train.data.video import Mp4Writer
from clap_train.io import atomic_dir

FPS = 30
CAMERAS = ("head", "left_wrist", "right_wrist")
COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
    "purple": (150, 60, 190), "orange": (240, 140, 30), "cyan": (40, 200, 210), "white": (240, 240, 240),
}
_YAW = tuple(LAYOUT.indices("yaw"))  # yaw columns of the 14-D layout


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
    pose = np.zeros((length, ARM_WIDTH))
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
    pose[:, :EULER.stop] += np.sin(2 * np.pi * f * t[:, None] + ph) * np.array([0.004, 0.004, 0.003, 0.02, 0.02, 0.02])
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
# the dataset builder: scripted episodes -> a LeRobot v3.0 dataset (the loader's only input)

STATS_SAMPLES = 48  # frames per camera and episode for image statistics (as the converter)


def episode_seed(seed: int, i: int) -> int:
    """The seed of episode ``i`` of a synthetic dataset with ``seed``."""
    return seed * 100_003 + i


def _write_episode(root: pathlib.Path, ep: Episode, eid: str, image_size: int | None, human: bool) -> None:
    """One episode into the dataset's store (atomically), in the converter's staging format."""
    cameras = () if image_size is None else (("head",) if human else CAMERAS)
    with atomic_dir(store_dir(root) / eid) as tmp:
        n = ep.length
        columns = {"timestamp": np.arange(n) / FPS, "frame_index": np.arange(n), "task": [ep.instruction] * n,
                   "subtask": list(ep.subtasks)}
        if not human:  # unwrapped along the episode, commands on the state's branch, as a converted bag
            poses = unwrap_vector_euler(np.concatenate([ep.state, ep.action[-1:]]), LAYOUT.euler_indices)
            columns[STATE_KEY], columns[ACTION_KEY] = poses[:n], poses[1:]
        write_frames(tmp / "frames.parquet", columns, None if human else LAYOUT.dim)
        infos = {}
        sample_at = set(np.linspace(0, n - 1, min(STATS_SAMPLES, n)).astype(int).tolist())
        for cam in cameras:
            key = f"observation.images.{cam}"
            samples = []
            with Mp4Writer(tmp / f"{key}.mp4", FPS, image_size, image_size) as writer:
                for t in range(n):
                    rgb = render(ep, t, cam, image_size, "human" if human else "robot")
                    writer.write(rgb)
                    if t in sample_at:
                        samples.append(rgb)
            infos[key] = {"file": f"{key}.mp4", "shape": [image_size, image_size], "stats": image_stats(samples)}
        meta = {"kind": "human" if human else "robot", "source": f"synthetic:{ep.seed}", "length": n,
                "vector_names": None if human else LAYOUT.names, "cameras": infos}
        (tmp / "episode.json").write_text(json.dumps(meta, indent=2))


def write_dataset(root: str | os.PathLike, num_episodes: int, *, seed: int = 0, episode_len: int = 150,
                  image_size: int | None = 64, human: bool = False, progress: bool = False) -> pathlib.Path:
    """Write ``num_episodes`` scripted episodes as a LeRobot v3.0 dataset at ``root`` (no videos: image_size None)."""
    from tqdm import tqdm

    if num_episodes <= 0:
        raise ValueError(f"a synthetic dataset needs at least one episode, got {num_episodes}")
    if image_size is not None and (image_size < 8 or image_size % 2):
        raise ValueError(f"synthetic image_size must be an even number >= 8, got {image_size}")
    root = pathlib.Path(root)
    for i in tqdm(range(num_episodes), desc="synthetic episodes", unit="episode", disable=not progress):
        _write_episode(root, make_episode(episode_seed(seed, i), episode_len), f"synthetic_{i:06d}", image_size,
                       human)
    finalize(root, fps=FPS, robot_type=None if human else "synthetic", contract_yaml=None,
             euler_indices=[] if human else LAYOUT.euler_indices,
             report={"synthetic": {"episodes": num_episodes, "seed": seed, "episode_len": episode_len,
                                   "image_size": image_size, "human": human}})
    return root


def cache_root() -> pathlib.Path:
    """Where ``synthetic_dataset`` keeps its datasets: ``$CLAP_CACHE_DIR/synthetic`` or ``~/.cache/clap/synthetic``."""
    env = os.environ.get("CLAP_CACHE_DIR")
    return (pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "clap") / "synthetic"


def synthetic_dataset(num_episodes: int, *, seed: int = 0, episode_len: int = 150, image_size: int | None = 64,
                      human: bool = False, progress: bool = False) -> pathlib.Path:
    """The dataset ``write_dataset`` makes with these parameters, built once into the cache and reused.

    The folder's name holds the parameters and a digest of this module, so a change to the
    generator builds anew. A build goes to a temporary folder that is renamed into place whole.
    """
    version = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:10]
    name = (f"{'human' if human else 'robot'}-n{num_episodes}-seed{seed}-len{episode_len}-"
            f"{'noimages' if image_size is None else f'{image_size}px'}-{version}")
    dest = cache_root() / name
    if (dest / "meta" / "info.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    try:
        write_dataset(tmp, num_episodes, seed=seed, episode_len=episode_len, image_size=image_size, human=human,
                      progress=progress)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process built it first
            if not (dest / "meta" / "info.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
