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


def main(argv: list[str] | None = None) -> int:
    from clap_sim.tasks import TASKS
    from clap_train.data.layout import DEFAULT_LAYOUT

    folder = pathlib.Path((argv or sys.argv[1:])[0])
    ev = json.loads((folder / "eval.json").read_text())
    task = TASKS[ev["task"]]()
    rows = []
    for e in ev["per_episode"]:
        spec = task.sample(e["seed"])
        target = np.load(folder / f"steps_{e['episode']:03d}.npz")["target"][:60]
        drop = {}
        for arm in ("left", "right"):
            z = DEFAULT_LAYOUT.arm(arm).index("z")
            drop[arm] = target[0, z] - target[:, z].min()
        moved = "left" if drop["left"] > drop["right"] else "right"
        rows.append((e["seed"], spec.extra["arm"], moved, e["max_reward"]))
        print(*rows[-1])
    right = sum(task_arm == moved for _, task_arm, moved, _ in rows)
    print(f"the task's arm moved first: {right}/{len(rows)}; touched the named cube: "
          f"{sum(r[3] >= 1 for r in rows)}/{len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
