#!/usr/bin/env python3
"""One generalist policy for transfer_cube, insertion and coloured_cubes, beside each task's own policy (issue 22).

    python bench/generalist.py --set-rf stage2.steps=18000 --set-ntp loop.steps=6000   # the lead's budget
    python bench/generalist.py --tasks transfer_cube insertion --no-single            # a part of it

The ``generalist`` recipe of ``clap_sim.pipeline`` (clap_sim/generalist.py says it in full):

1. Per task ``--demos`` demonstrations and ``--human-videos`` human-look videos, converted; the
   Act-VAE and the VD-VAE on every task's data; each task's videos labelled.
2. The generalist, CLAP-NTP then CLAP-RF + KM on every task's data (``--configs``, ``--set-ntp``,
   ``--set-rf``), and each task's single-task policy at the same per-task budget (``--budget
   per_task``: 1/len(tasks) of the generalist's steps; ``same_steps``: as many steps), two
   one-thread jobs at a time (``--no-parallel``: one after another).
3. Each policy on each of its tasks through the policy node over DDS (one evaluation at a time,
   temporal ensembling, a new chunk every tick), ``--episodes`` seeds from ``--eval-seed``
   (default 2000); a learning curve per task from the generalist's intermediate RF exports
   (``export_every``) in lock-step, ``--curve-episodes`` each (``--skip-curve``: none).

Report: per task both policies' success (Wilson 95 %), their difference (Newcombe 95 %), the
issue's goals, the histogram of each episode's maximum reward with the task's reward stages, the
curves and the CPU hours; a figure per task (OUT/<task>.png). The policy: OUT/policy. Results:
OUT/result.json, OUT/result.md (OUT = bench/out/generalist), and bench/results/generalist.json.
Every step resumes: a finished one is skipped.
"""

from __future__ import annotations

import sys
import time

from clap_sim import generalist
from clap_sim.pipeline import stage_env
from clap_sim.steps import run_side_by_side, write_result
from clap_train.train.runner import failed, run_steps


def main(argv: list[str] | None = None) -> int:
    args, bench, steps, batch = generalist.parse_args(argv, __doc__)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = stage_env()
    t0 = time.monotonic()
    done = run_steps(bench.data(out), env)
    if failed(done):
        print(f"generalist: a data step failed: {done[-1]}", file=sys.stderr)
        return 1
    trained = run_side_by_side(bench.training(out, steps), env, args.parallel)
    if any(failed(t) for t in trained.values()):
        print(f"generalist: a training run failed: {trained}", file=sys.stderr)
        return 1
    link = out / "policy"
    if not link.is_symlink():
        link.symlink_to(bench.policy(out, "generalist").relative_to(out))
    # over DDS one at a time: two simulations on one ROS domain would hear each other, and timing counts
    for key, step in bench.evaluations(out).items():
        if failed(run_steps([step], env)):
            print(f"generalist: the evaluation {key} failed", file=sys.stderr)
            return 1
    if not args.skip_curve:
        curve = run_side_by_side(bench.curve(out), env, args.parallel)
        if any(failed(t) for t in curve.values()):
            print(f"generalist: a learning-curve evaluation failed: {curve}", file=sys.stderr)
            return 1
    table = generalist.table(out, bench)
    curves = {} if args.skip_curve else generalist.curves(out, bench, batch)
    result = {"tasks": list(bench.tasks), "demos": bench.demos, "human_videos": bench.human_videos,
              "configs": str(bench.configs), "ntp_set": list(bench.ntp_set), "rf_set": list(bench.rf_set),
              "budget": bench.budget, "generalist_steps": steps,
              "single_overrides": {k: list(v) for k, v in bench.single_overrides(steps).items()} if bench.single
              else None, "episodes": bench.episodes, "eval_seed": bench.eval_seed, "policy": str(out / "policy"),
              "table": table, "curves": curves, "cpu": generalist.cpu(out, bench),
              "wall_seconds_this_run": round(time.monotonic() - t0, 1)}
    for task in bench.tasks:
        if task in table:
            generalist.plot_task(out / f"{task}.png", task, table[task], curves.get(task, []))
    write_result(out, result, generalist.markdown(result), copy_to=args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
