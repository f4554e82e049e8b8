#!/usr/bin/env python3
"""Every CLAP ingredient ablated on the sim, in closed loop, with >= 3 training seeds per arm (issue 21, item 3).

    python bench/ablation.py --set-ntp loop.steps=4000 --set-rf stage2.steps=8000   # the lead's budget
    python bench/ablation.py --arms full no_km --seeds 0 --episodes 5              # a part of the table

The ``ablation`` recipe of ``clap_sim.pipeline`` (clap_sim/ablation.py says what each arm is):

1. Data, once for every arm: ``--demos`` robot demonstrations of coloured_cubes, ``--human-videos``
   human-look videos of coloured_cubes_novel, converted; the Act-VAE, the VD-VAE and its pseudo
   labels; a second VD-VAE with lambda_con = 0 and its labels on a copy of the videos.
2. The arms (``--arms``: full, no_human, no_contrastive, no_ntp, no_km, ntp_only), each per
   training seed (``--seeds``): every CLAP-NTP, then every CLAP-RF (no_km starts from full's
   CLAP-NTP of its seed), two one-thread jobs at a time (``--no-parallel``: one after another),
   with the configs in ``--configs`` and ``--set-ntp`` / ``--set-rf`` overrides for every arm.
3. Every policy in lock-step (temporal ensembling, a new chunk every tick) on ``--episodes``
   seeds from ``--eval-seed`` (default 2000, the test block; choose recipes on 1000..) of
   coloured_cubes (in distribution) and coloured_cubes_novel (out of distribution).

Report: per arm and variant the successes pooled over the training seeds (Wilson 95 %) and per
seed; per claim the pooled difference (Newcombe 95 %) beside the issue's goal; the CPU hours.
OUT/result.json, OUT/result.md (OUT = bench/out/ablation), and bench/results/ablation.json.
Every step resumes: a finished one is skipped, so the same command continues an interrupted table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys
import time

from clap_sim import ablation
from clap_sim.pipeline import stage_env
from clap_sim.steps import StepSeconds, run_side_by_side, write_result
from clap_train.train.runner import failed, run_steps


def main(argv: list[str] | None = None) -> int:
    args, bench = ablation.parse_args(argv, __doc__)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = stage_env()
    seconds = StepSeconds(out / "step_seconds.json")
    t0, cpu0 = time.monotonic(), _children_cpu()
    try:
        return _run(args, bench, out, env, seconds, t0, cpu0)
    finally:
        _add_cpu(out / "cpu_seconds.json", _children_cpu() - cpu0)


def _run(args: argparse.Namespace, bench: ablation.Ablation, out: pathlib.Path, env: dict[str, str],
         seconds: StepSeconds, t0: float, cpu0: float) -> int:
    done = run_steps(bench.data(out), env)
    seconds.add(done)
    if failed(done):
        print(f"ablation: a data step failed: {done[-1]}", file=sys.stderr)
        return 1
    for phase, plans in zip(("CLAP-NTP", "CLAP-RF"), bench.training(out)):
        trained = run_side_by_side(plans, env, args.parallel)
        seconds.add(trained)
        if any(failed(t) for t in trained.values()):
            print(f"ablation: a {phase} run failed: {trained}", file=sys.stderr)
            return 1
    evaluated = run_side_by_side(bench.evaluations(out), env, args.parallel)
    seconds.add(evaluated)
    if any(failed(t) for t in evaluated.values()):
        print(f"ablation: an evaluation failed: {evaluated}", file=sys.stderr)
        return 1
    cells = ablation.collect(out, bench)
    result = {"task": bench.task, "novel": bench.novel, "demos": bench.demos, "human_videos": bench.human_videos,
              "human_fraction": bench.human_fraction, "configs": str(bench.configs), "ntp_set": list(bench.ntp_set),
              "rf_set": list(bench.rf_set), "seeds": list(bench.seeds), "episodes": bench.episodes,
              "eval_seed": bench.eval_seed, "arms": list(bench.arms), "cells": cells,
              "claims": ablation.claims(cells), "wall_seconds_this_run": round(time.monotonic() - t0, 1)}
    measured = _read_cpu(out / "cpu_seconds.json") + _children_cpu() - cpu0  # earlier runs + this one
    result["cpu"] = ablation.cpu_accounting(out, bench, seconds, measured)
    write_result(out, result, ablation.markdown(result), copy_to=args.results)
    return 0


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished child processes: every step it ran."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _read_cpu(path: pathlib.Path) -> float:
    return sum(json.loads(path.read_text())) if path.is_file() else 0.0


def _add_cpu(path: pathlib.Path, secs: float) -> None:
    """Append this invocation's child CPU seconds (earlier, resumed invocations keep theirs)."""
    runs = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps([*runs, round(secs, 1)]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
