"""Coloured cubes: which arm each evaluated episode moves first, and where its grasp lands.

    clap sim eval --task coloured_cubes --lockstep --save-steps --out DIR ...
    python bench/arm_choice.py DIR [DIR ...]

Reads DIR/eval.json and DIR/steps_NNN.npz (``--save-steps``). An episode's arm is the one whose
commanded z drops more in its first 60 ticks; the task's arm is the scene spec's (the named cube's
side). The grasp point is the task arm's commanded position at its lowest z between ticks 40 and
110 (the demonstrator lowers to the cube by tick 72 and has closed by 93); its reach error is that
point's xy distance to the named cube's centre (the cube is 40 mm wide), and its height the grasp
height (the demonstrator's is 35 mm). Prints one row per episode, the count that moved the task's
arm, and, over every DIR given, success by reach error and, per task arm, success and the episodes
whose gripper stopped above ``HIGH_M``.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

BINS_MM = (0, 10, 15, 20, 30, np.inf)
HIGH_M = 0.04  # a grasp point above this stops short of the cube (the demonstrator's is at 0.035 m)


def episodes(folder: pathlib.Path):
    """(seed, task arm, arm moved first, max reward, success, reach error mm, grasp height m) per episode."""
    from clap_sim.tasks import TASKS
    from clap_train.data.layout import DEFAULT_LAYOUT

    ev = json.loads((folder / "eval.json").read_text())
    task = TASKS[ev["task"]]()
    for e in ev["per_episode"]:
        spec = task.sample(e["seed"])
        target = np.load(folder / f"steps_{e['episode']:03d}.npz")["target"]
        drop = {}
        for arm in ("left", "right"):
            z = DEFAULT_LAYOUT.arm(arm).index("z")
            drop[arm] = target[0, z] - target[:60, z].min()
        moved = "left" if drop["left"] > drop["right"] else "right"
        arm = DEFAULT_LAYOUT.arm(spec.extra["arm"])
        xyz = target[40:110, [arm.index(k) for k in ("x", "y", "z")]]
        low = xyz[int(np.argmin(xyz[:, 2]))]
        cube = spec.objects[f"{spec.extra['target']}_box_joint"][:2]
        reach = float(np.linalg.norm(low[:2] - cube) * 1000)
        yield e["seed"], spec.extra["arm"], moved, e["max_reward"], bool(e["success"]), reach, float(low[2])


def main(argv: list[str] | None = None) -> int:
    rows = []
    for folder in argv or sys.argv[1:]:
        print(f"{folder}\nseed task_arm moved_first max_reward success reach_mm grasp_z_m")
        own = list(episodes(pathlib.Path(folder)))
        for seed, task_arm, moved, reward, ok, reach, z in own:
            print(seed, task_arm, moved, reward, int(ok), f"{reach:.1f}", f"{z:.3f}")
        right = sum(r[1] == r[2] for r in own)
        print(f"the task's arm moved first: {right}/{len(own)}; touched the named cube: "
              f"{sum(r[3] >= 1 for r in own)}/{len(own)}; median reach error "
              f"{np.median([r[5] for r in own]):.1f} mm\n")
        rows += own
    reach, ok = np.array([r[5] for r in rows]), np.array([r[4] for r in rows])
    print("reach error | success")
    for lo, hi in zip(BINS_MM[:-1], BINS_MM[1:]):
        m = (reach >= lo) & (reach < hi)
        print(f"{lo:g}-{hi:g} mm | {int(ok[m].sum())}/{int(m.sum())}")
    print(f"\ntask arm | success | grasp point above {HIGH_M * 1000:g} mm")
    for arm in ("left", "right"):
        own = [r for r in rows if r[1] == arm]
        print(f"{arm} | {sum(r[4] for r in own)}/{len(own)} | {sum(r[6] > HIGH_M for r in own)}/{len(own)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
