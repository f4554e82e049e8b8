#!/usr/bin/env python3
"""Whether human videos of a variant the robot never saw raise closed-loop success on it (issue 13, item 5).

    python bench/human_transfer.py          # ~10 min data + ~45 min training (two arms side by side) + eval

The paper's headline claim (CLAP, Table III: Make Bouquets out of distribution, 10 % -> 45 %),
on the sim:

1. Robot demonstrations of ``coloured_cubes`` (red, green, blue cubes; "pick up the <colour>
   cube"), seeds 0..N-1, and human-look videos (``clap sim human-videos``: arms hidden or
   recoloured, skin-coloured fingers, no actions) of ``coloured_cubes_novel``, whose cubes are
   yellow, magenta and cyan: colours and words no demonstration shows. The Act-VAE trains on
   the demonstrations, the VD-VAE on both, and ``clap label-videos`` gives the human videos
   their pseudo action tokens: the same data stages as ``make demo`` (the ``human_transfer`` recipe of
   ``clap_sim.pipeline``).
2. Policies from the same data, each CLAP-NTP then CLAP-RF + KM with the config/train/closed_loop
   recipe (``--arms``): ``robot_only`` (NTP at ``human_fraction 0``), ``with_human`` (NTP
   co-trained on the pseudo-labelled human videos at ``--human-fraction``) and
   ``with_true_tokens``, the same videos labelled with the Act-VAE tokens of their true actions
   (known for scripted videos only; bench/pseudo_label_quality.py): the upper bound of perfect
   pseudo-labels. Nothing else differs. Two train at a time, one thread each (``--no-parallel``:
   one after another).
3. Each policy in lock-step closed loop (``clap sim eval --lockstep``, temporal ensembling) on
   held-out seeds of the novel variant and of the demonstrated task. The result is each arm's
   success difference to ``robot_only``, in points, with a 95 % Newcombe interval.

Results: OUT/result.json and OUT/result.md (OUT = bench/out/human_transfer). Every stage resumes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from clap_sim.eval_report import newcombe, success_summary
from clap_sim.pipeline import CONFIGS, HumanTransfer, recipe, stage_env
from clap_sim.pseudo_labels import quality, true_token_dataset
from clap_sim.steps import run_side_by_side, write_result
from clap_train.train.runner import failed, run_steps

ROOT = pathlib.Path(__file__).resolve().parents[1]
TASK, NOVEL = HumanTransfer.task, HumanTransfer.novel
ARMS = HumanTransfer.ARMS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demos", type=int, default=50, help="coloured_cubes demonstrations (seeds 0..N-1)")
    p.add_argument("--human-videos", type=int, default=30, help="human-look videos of the novel variant")
    p.add_argument("--human-fraction", type=float, default=0.25, help="share of human samples in with_human's NTP")
    p.add_argument("--configs", type=pathlib.Path, default=CONFIGS / "closed_loop")
    p.add_argument("--rf-steps", type=int, default=None, help="CLAP-RF stage-2 steps (default: the config's)")
    p.add_argument("--episodes", type=int, default=20, help="held-out episodes per cell")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed of the arms (another seed trains into <arm>_s<seed>: a replicate)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="policies to train (robot_only first)")
    p.add_argument("--no-parallel", dest="parallel", action="store_false", help="train the arms in turn")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "out" / "human_transfer")
    args = p.parse_args(argv)
    bench = recipe("human_transfer", demos=args.demos, human_videos=args.human_videos,
                   human_fraction=args.human_fraction, configs=args.configs, rf_steps=args.rf_steps,
                   episodes=args.episodes, seed=args.seed, arms=tuple(args.arms))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = stage_env()
    t0 = time.monotonic()
    timings = run_steps(bench.data(out), env)
    if failed(timings):
        print(f"human_transfer: a data stage failed: {timings[-1]}", file=sys.stderr)
        return 1
    true_tokens = true_token_dataset(out) if "with_true_tokens" in args.arms else None
    trained = run_side_by_side(bench.training(out, true_tokens), env, args.parallel)
    if any(failed(t) for t in trained.values()):
        print(f"human_transfer: a training stage failed: {trained}", file=sys.stderr)
        return 1
    evaluated = run_side_by_side(bench.evaluations(out), env, args.parallel)
    if any(failed(t) for t in evaluated.values()):
        print(f"human_transfer: an evaluation failed: {evaluated}", file=sys.stderr)
        return 1

    cells = {}
    for arm_dir in sorted((out / "eval").iterdir()):  # every arm evaluated so far, this run's or an earlier run's
        for task in (NOVEL, TASK):
            path = arm_dir / task / "eval.json"
            if path.is_file():
                cells[f"{arm_dir.name} {task}"] = success_summary(json.loads(path.read_text()))
    gain = {}
    for key, c in cells.items():
        base = cells.get(f"robot_only {key.split()[1]}")
        if base is not None and not key.startswith("robot_only"):
            d, lo, hi = newcombe(c["successes"], c["episodes"], base["successes"], base["episodes"])
            gain[key] = {"points": round(100 * d, 1), "ci95_points": [round(100 * lo, 1), round(100 * hi, 1)]}
    q = quality(out)
    result = {"demos": args.demos, "human_videos": args.human_videos, "human_fraction": args.human_fraction,
              "configs": str(args.configs), "rf_steps": args.rf_steps, "cells": cells, "gain": gain,
              "pseudo_label_quality": {k: q[k] for k in ("agreement", "baseline", "permutation", "samples")},
              "wall_seconds": round(time.monotonic() - t0, 1)}
    write_result(out, result, _markdown(result))
    return 0


def _markdown(result: dict) -> str:
    lines = [f"# Human videos of an unseen variant ({result['demos']} demonstrations of {TASK}, "
             f"{result['human_videos']} human-look videos of {NOVEL})", "",
             "| policy | task (held-out seeds) | success | 95 % CI | mean max reward |",
             "| --- | --- | ---: | --- | ---: |"]
    for key, c in result["cells"].items():
        arm, task = key.split()
        lines.append(f"| {arm} | {task} | {c['successes']}/{c['episodes']} | {c['ci95'][0]:.2f}-{c['ci95'][1]:.2f} | "
                     f"{c['mean_max_reward']:.2f} |")
    lines.append("")
    for key, g in result["gain"].items():
        arm, task = key.split()
        lines.append(f"- {arm} - robot_only on {task}: {g['points']:+.1f} points "
                     f"(95 % CI {g['ci95_points'][0]:+.1f} to {g['ci95_points'][1]:+.1f})")
    q = result["pseudo_label_quality"]
    lines.append(f"- pseudo tokens of the human videos against their true actions' tokens: agreement "
                 f"{q['agreement']:.3f}, baseline (sum p q) {q['baseline']:.3f} ({q['samples']} frames)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
