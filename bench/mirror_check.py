"""How exactly the sim's workcell is mirror-symmetric: the premise of ``mirror: true`` (data/samples/mirror.py).

    python bench/mirror_check.py [--task coloured_cubes] [--scenes 5] [--out bench/results/mirror_check.json]

For each scene: a seeded reset's objects, and random end-effector targets for both arms. The same
scene is built again reflected about x = 0: every object at -x, each arm given the other arm's
target reflected as ``MirrorMap`` reflects it (x, pitch and yaw negated). After 2 s of physics, it
reports per camera the mean absolute pixel difference (0..255) between the mirrored scene's image
and the mirror augmentation's prediction of it (the head flipped; the other wrist, flipped),
beside the difference to the unflipped image (what a wrong map would score), and how far the
reached poses are from each other's reflection.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clap_sim.scene import ARMS  # noqa: I100  first: it selects MuJoCo's EGL backend
import numpy as np  # noqa: I100
from clap_sim.scripted import euler_to_quat_wxyz, quat_wxyz_to_euler
from clap_sim.tasks import make_task
from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.rotations import wrap_to_pi
from clap_train.data.samples.mirror import MirrorMap


def settle(task, objects: dict, vector: np.ndarray, seconds: float = 2.0):
    """Images and reached [14] pose vector of the scene with ``objects`` and arm targets ``vector``."""
    scene = task.make_scene(image_size=224, render=True)
    try:
        scene.reset_arms()
        scene.place_objects(objects)
        for arm in ARMS:
            s = DEFAULT_LAYOUT.arm(arm)
            scene.set_arm_target(arm, vector[s.position], euler_to_quat_wxyz(vector[s.euler]), vector[s.gripper])
        for _ in range(int(seconds * scene.rate_hz)):
            scene.step()
        reached = np.zeros(DEFAULT_LAYOUT.dim)
        for arm in ARMS:
            s, pose = DEFAULT_LAYOUT.arm(arm), scene.arm_pose(arm)
            reached[s.position], reached[s.euler], reached[s.gripper] = pose.pos, quat_wxyz_to_euler(pose.quat), \
                pose.gripper
        return scene.render_all(), reached
    finally:
        scene.close()


def random_targets(rng: np.random.Generator) -> np.ndarray:
    """Both arms' targets over the table, pitched toward it as the demonstrations are."""
    vec = np.zeros(DEFAULT_LAYOUT.dim)
    for arm, side in (("left", -1.0), ("right", 1.0)):
        s = DEFAULT_LAYOUT.arm(arm)
        vec[s.position] = [side * rng.uniform(0.05, 0.2), rng.uniform(0.42, 0.6), rng.uniform(0.08, 0.25)]
        vec[s.euler] = [rng.uniform(-0.3, 0.3), -side * rng.uniform(0.5, 1.1), rng.uniform(-0.3, 0.3)]
        vec[s.gripper] = rng.uniform(0.0, 1.0)
    return vec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="coloured_cubes")
    ap.add_argument("--scenes", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mirror_check.json")
    args = ap.parse_args()
    task, mirror, rng = make_task(args.task), MirrorMap(DEFAULT_LAYOUT), np.random.default_rng(0)
    rows = []
    for k in range(args.scenes):
        spec = task.sample(1000 + k)
        targets = random_targets(rng)
        images, reached = settle(task, spec.objects, targets)
        flipped = {j: np.concatenate([[-p[0]], p[1:]]) for j, p in spec.objects.items()}
        m_images, m_reached = settle(task, flipped, mirror(targets))
        predicted = {"head": images["head"][:, ::-1], "left_wrist": images["right_wrist"][:, ::-1],
                     "right_wrist": images["left_wrist"][:, ::-1]}
        unflipped = {"head": images["head"], "left_wrist": images["right_wrist"], "right_wrist": images["left_wrist"]}
        diff = mirror(reached) - m_reached
        rows.append({
            "seed": spec.seed,
            "mirror_error": {c: float(np.abs(m_images[c].astype(float) - predicted[c]).mean()) for c in predicted},
            "unflipped_error": {c: float(np.abs(m_images[c].astype(float) - unflipped[c]).mean()) for c in predicted},
            "position_error_mm": float(1e3 * np.abs(diff[DEFAULT_LAYOUT.indices("x", "y", "z")]).max()),
            "euler_error_deg": float(np.degrees(np.abs(wrap_to_pi(diff[DEFAULT_LAYOUT.euler_indices])).max())),
        })
        print(json.dumps(rows[-1]))
    cams = list(rows[0]["mirror_error"])
    summary = {"task": args.task, "scenes": rows,
               "mean_mirror_error": {c: float(np.mean([r["mirror_error"][c] for r in rows])) for c in cams},
               "mean_unflipped_error": {c: float(np.mean([r["unflipped_error"][c] for r in rows])) for c in cams}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "scenes"}, indent=1))


if __name__ == "__main__":
    main()
