#!/usr/bin/env python3
"""Closed-loop success of the whole CLAP pipeline in simulation: the evaluation ladder.

    python bench/closed_loop.py --task transfer_cube                 # ~40 min training + ~45 min evaluation
    python bench/closed_loop.py --task transfer_cube --skip-ladder   # training + learning curve only

1. Records ``--demos`` scripted demonstrations (seeds 0..N-1) and ``--human-videos`` human-look
   videos, converts them, and trains every CLAP stage with the configs in ``--configs``
   (Act-VAE, VD-VAE, pseudo labels, CLAP-NTP, CLAP-RF + Knowledge Matching): the ``closed_loop``
   recipe of ``clap_sim.pipeline``, the same stages as ``make demo`` at a larger budget. Each
   stage resumes after a crash; a finished stage is skipped.
2. Learning curve: every intermediate policy the RF stage exported (``export_every``) and the
   final one, in lock-step (``clap sim eval --lockstep``, no inference delay, temporal
   ensembling with a new chunk every tick) on held-out seeds: success against training time.
3. The ladder, through the real policy node over DDS (``clap sim eval``): (a) training seeds,
   (b) held-out seeds, ``--episodes`` each, for RF and NTP and each executor (open_loop,
   temporal_ensemble, rtc); success with a 95 % Wilson interval.

The trained policy is ``OUT/policy`` (OUT = bench/out/closed_loop/<task>), the results
``OUT/result.json`` and ``OUT/result.md``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from clap_sim.eval_report import success_summary
from clap_sim.pipeline import CONFIGS, EXECUTORS, recipe, stage_env
from clap_sim.steps import curve_point_steps, curve_policies, training_seconds, write_result
from clap_train.train.runner import failed, run_steps

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="transfer_cube")
    p.add_argument("--demos", type=int, default=50, help="scripted demonstrations (training seeds 0..N-1)")
    p.add_argument("--human-videos", type=int, default=20)
    p.add_argument("--configs", type=pathlib.Path, default=CONFIGS / "closed_loop")
    p.add_argument("--episodes", type=int, default=20, help="episodes per ladder cell")
    p.add_argument("--curve-episodes", type=int, default=20, help="held-out episodes per learning-curve point")
    p.add_argument("--modes", nargs="+", default=["rf", "ntp"])
    p.add_argument("--executors", nargs="+", default=list(EXECUTORS))
    p.add_argument("--skip-ladder", action="store_true", help="train and draw the learning curve only")
    p.add_argument("--out", type=pathlib.Path, default=None, help="default: bench/out/closed_loop/<task>")
    args = p.parse_args(argv)
    bench = recipe("closed_loop", task=args.task, demos=args.demos, human_videos=args.human_videos,
                   configs=args.configs, episodes=args.episodes, curve_episodes=args.curve_episodes,
                   modes=tuple(args.modes), executors=tuple(args.executors))
    out = (args.out or ROOT / "bench" / "out" / "closed_loop" / args.task).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = stage_env()
    t0 = time.monotonic()
    timings = run_steps(bench.training(out), env)
    if failed(timings):
        print(f"closed_loop: a training stage failed: {timings[-1]}", file=sys.stderr)
        return 1
    policy = out / "runs" / "rf" / "policy"
    link = out / "policy"
    if not link.exists():
        link.symlink_to(policy.relative_to(out))
    result: dict = {"task": args.task, "demos": args.demos, "human_videos": args.human_videos,
                    "configs": str(args.configs), "stage_seconds": {n: round(s, 1) for n, s, _ in timings},
                    "training_loop_seconds": training_seconds(out / "runs")}

    # learning curve: lock-step success of the intermediate policies on held-out seeds
    curve = []
    for point, pol in curve_policies(out / "runs" / "rf").items():
        step = bench.curve_step(out, pol, point)
        if failed(run_steps([step], env)):
            return 1
        r = json.loads(step.marker.read_text())
        curve.append({"policy": str(pol), "point": point, **success_summary(r)})
    curve_point_steps(curve, out / "runs" / "rf")
    result["learning_curve"] = curve
    _plot_curve(curve, out / "learning_curve.png")

    # the ladder through the policy node over DDS
    if not args.skip_ladder:
        ladder = {}
        for key, step in bench.ladder_steps(out, policy).items():
            if failed(run_steps([step], env)):
                return 1
            ladder[key] = success_summary(json.loads(step.marker.read_text()))
        result["ladder"] = ladder
    result["wall_seconds"] = round(time.monotonic() - t0, 1)
    write_result(out, result, _markdown(result))
    return 0


def _markdown(result: dict) -> str:
    lines = [f"# Closed loop: {result['task']} ({result['demos']} demonstrations)", ""]
    secs = result.get("training_loop_seconds", {})
    lines.append("Training loops (s): " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items())
                 + f"; total {sum(secs.values()) / 60:.1f} min")
    lines += ["", "Learning curve (lock-step, held-out seeds):", "",
              "| policy | RF step | RF seconds | success | 95 % CI |",
              "| --- | ---: | ---: | ---: | --- |"]
    for c in result.get("learning_curve", []):
        secs = f"{'~' if c.get('rf_seconds_estimated') else ''}{c.get('rf_seconds') or ''}"
        lines.append(f"| {c['point']} | {c.get('rf_step', '')} | {secs} | "
                     f"{c['successes']}/{c['episodes']} | {c['ci95'][0]:.2f}-{c['ci95'][1]:.2f} |")
    if "ladder" in result:
        lines += ["", "Ladder (policy node over DDS):", "",
                  "| mode | executor | seeds | success | 95 % CI | mean max reward |",
                  "| --- | --- | --- | ---: | --- | ---: |"]
        for key, c in result["ladder"].items():
            mode, executor, part = key.split()
            lines.append(f"| {mode} | {executor} | {'training' if part == 'train' else 'held-out'} | "
                         f"{c['successes']}/{c['episodes']} | {c['ci95'][0]:.2f}-{c['ci95'][1]:.2f} | "
                         f"{c['mean_max_reward']:.2f} |")
    return "\n".join(lines) + "\n"


def _plot_curve(curve: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [c for c in curve if c.get("rf_seconds") is not None]
    if not pts:
        return
    x = [c["rf_seconds"] / 60 for c in pts]
    y = [c["rate"] for c in pts]
    lo = [c["rate"] - c["ci95"][0] for c in pts]
    hi = [c["ci95"][1] - c["rate"] for c in pts]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3)
    ax.set_xlabel("CLAP-RF stage-2 training (min)")
    ax.set_ylabel("held-out success (lock-step)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
