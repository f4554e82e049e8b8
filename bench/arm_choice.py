"""Coloured cubes: which arm each evaluated episode moves first, against the arm the task needs.

    clap sim eval --task coloured_cubes --lockstep --save-steps --out DIR ...
    python bench/arm_choice.py DIR

Reads DIR/eval.json and DIR/steps_NNN.npz (``--save-steps``). An episode's arm is the one whose
commanded z drops more in the first 3 s (60 ticks at 20 Hz); the task's arm is the scene spec's
(the named cube's side). Prints one row per episode and the count that moved the task's arm.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

LEFT_Z, RIGHT_Z = 2, 9  # the action layout: per arm xyz, Euler xyz, gripper; left first


def main(argv: list[str] | None = None) -> int:
    from clap_sim.tasks import TASKS

    folder = pathlib.Path((argv or sys.argv[1:])[0])
    ev = json.loads((folder / "eval.json").read_text())
    task = TASKS[ev["task"]]()
    rows = []
    for e in ev["per_episode"]:
        spec = task.sample(e["seed"])
        target = np.load(folder / f"steps_{e['episode']:03d}.npz")["target"][:60]
        drop_l, drop_r = target[0, LEFT_Z] - target[:, LEFT_Z].min(), target[0, RIGHT_Z] - target[:, RIGHT_Z].min()
        rows.append((e["seed"], spec.extra["arm"], "left" if drop_l > drop_r else "right", e["max_reward"]))
        print(*rows[-1])
    right = sum(task_arm == moved for _, task_arm, moved, _ in rows)
    print(f"the task's arm moved first: {right}/{len(rows)}; touched the named cube: "
          f"{sum(r[3] >= 1 for r in rows)}/{len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
