"""The "human video" variant: scripted motions rendered with the robot's look changed.

CLAP's VD-VAE learns from videos in which no robot actions exist (people doing the task). We
stand in for them with the same scripted demonstrations as the robot data, rendered from the
head camera only, with the arms hidden or recoloured and the gripper visuals swapped (the
gripper housing hidden, the fingers skin-coloured), and with no action or state topics at all.
Each episode is one mp4 (H.264 through PyAV) plus an entry in ``instructions.json``: a list of
``{"file": "<name>.mp4", "instruction": "..."}`` that ``clap convert-videos`` reads.

ROS-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from clap_train.data.video import write_mp4
from clap_train.io import atomic_write_text
from tqdm import tqdm

from .scene import ARMS, BimanualScene
from .scripted import run_scripted
from .tasks import make_task

LOOKS = ("hidden", "recoloured")
SKIN = [(0.87, 0.72, 0.60, 1.0), (0.55, 0.38, 0.26, 1.0), (0.96, 0.80, 0.69, 1.0), (0.36, 0.24, 0.16, 1.0)]
ARM_LINKS = ("1_base", "2_shoulder", "3_upper_arm", "4_upper_forearm", "5_lower_forearm", "6_wrist")
GRIPPER_HOUSING = ("7_gripper", "8_gripper_prop", "9_gripper_bar")
FINGERS = ("10_left_gripper_finger", "10_right_gripper_finger")


def apply_look(scene: BimanualScene, look: str, rng: np.random.Generator) -> None:
    """Change how the robot looks (cameras only; physics is untouched).

    ``hidden``: arm links invisible; ``recoloured``: arm links a random sleeve colour. Both:
    gripper housing hidden and fingers skin-coloured, so the "hand" looks unlike the gripper.
    """
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; choose from {', '.join(LOOKS)}")
    skin = SKIN[int(rng.integers(len(SKIN)))]
    sleeve = (*rng.uniform(0.1, 0.9, size=3), 1.0)
    for arm in ARMS:
        links = [f"vx300s_{arm}/{g}" for g in ARM_LINKS]
        scene.set_geom_rgba(links, (0, 0, 0, 0) if look == "hidden" else sleeve)
        scene.set_geom_rgba([f"vx300s_{arm}/{g}" for g in GRIPPER_HOUSING], (0, 0, 0, 0))
        scene.set_geom_rgba([f"vx300s_{arm}/{g}" for g in FINGERS], skin)


@dataclass
class HumanVideo:
    file: str
    instruction: str
    seed: int
    look: str
    frames: int
    success: bool


def record_human_videos(task_name: str, episodes: int, out_dir: str | Path, *, seed: int = 0,
                        image_size: int = 224, n_steps: int | None = None, camera: str = "head",
                        looks: tuple[str, ...] = LOOKS, progress: bool = True) -> list[HumanVideo]:
    """Render ``episodes`` scripted episodes as human-look videos.

    Seeds are seed, seed+1, ...; ``out_dir`` receives ``<task>_<seed>.mp4`` files and
    ``instructions.json``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = make_task(task_name)
    videos: list[HumanVideo] = []
    for i in tqdm(range(episodes), desc=f"human videos {task_name}", unit="video", disable=not progress):
        s = seed + i
        rng = np.random.default_rng(10_000 + s)
        look = looks[i % len(looks)]
        scene = task.make_scene(image_size=image_size, render=True)
        try:
            apply_look(scene, look, rng)
            frames: list[np.ndarray] = []
            success, _, spec, _ = run_scripted(task, s, n_steps=n_steps, scene=scene,
                                               on_step=lambda k, sc, traj: frames.append(sc.render(camera)))
        finally:
            scene.close()
        name = f"{task_name}_{s:06d}.mp4"
        write_mp4(out_dir / name, frames, fps=scene.rate_hz)
        videos.append(HumanVideo(name, spec.instruction, s, look, len(frames), bool(success)))
    index = out_dir / "instructions.json"
    entries = [{"file": v.file, "instruction": v.instruction} for v in videos]
    if index.exists():  # keep entries of other tasks already in the folder
        names = {e["file"] for e in entries}
        try:
            old = json.loads(index.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{index} is not valid JSON ({exc}); move it away or fix it") from exc
        entries = [e for e in old if e.get("file") not in names] + entries
    atomic_write_text(index, json.dumps(entries, indent=1) + "\n")
    return videos
