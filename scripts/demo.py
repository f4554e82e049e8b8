#!/usr/bin/env python3
"""`make demo`: the whole CLAP pipeline on the embedded default, on CPU, in one command.

Stages (each a real `clap` / `clap sim` job, run as a subprocess with its own progress bar):
scripted demonstrations in the ALOHA end-effector simulation recorded as rosbag2 -> human-look
videos -> `clap convert` / `clap convert-videos` -> Act-VAE -> VD-VAE (robot + human) -> pseudo
action tokens for the human videos -> CLAP-NTP -> CLAP-RF + Knowledge Matching -> closed-loop
evaluation through the real policy node over DDS, on held-out seeds (with the rollout video) and,
with ``--train-eval-episodes N``, on seeds the policy was trained on. Prints the success rates, the
time each stage took, and where the plots and videos are; writes the same to OUT/summary.md.

The steps are the ``demo`` recipe of ``clap_sim.pipeline`` (run by clap_train's stage runner). A
step whose output already exists is skipped (`--fresh` starts over), so an interrupted demo
continues where it stopped. ``bench/closed_loop.py`` runs the same training stages with larger
budgets (the ``closed_loop`` recipe) and evaluates the full ladder.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from clap_sim.pipeline import Demo, recipe, stage_env
from clap_train.train.runner import failed, run_steps

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "demo", help="where everything goes")
    # Defaults (None): the demo recipe's own (clap_sim.pipeline.Demo), shown in --help.
    parser.add_argument("--task", help=f"default {Demo.task}")
    parser.add_argument("--episodes", type=int,
                        help=f"scripted robot demonstrations (seeds 0..N-1); default {Demo.episodes}")
    parser.add_argument("--human-episodes", type=int, help=f"human-look videos; default {Demo.human_episodes}")
    parser.add_argument("--eval-episodes", type=int,
                        help=f"closed-loop episodes on held-out seeds; default {Demo.eval_episodes}")
    parser.add_argument("--train-eval-episodes", type=int,
                        help=f"closed-loop episodes on training seeds (0: none); default {Demo.train_eval_episodes}")
    parser.add_argument("--configs", type=pathlib.Path, default=None, help="folder of the stage configs")
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    args = parser.parse_args(argv)

    demo = recipe("demo", task=args.task, episodes=args.episodes, human_episodes=args.human_episodes,
                  eval_episodes=args.eval_episodes, train_eval_episodes=args.train_eval_episodes,
                  configs=args.configs)
    out = args.out.resolve()
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    timings = run_steps(demo.steps(out), stage_env())
    evals = demo.evaluations(out)
    results = {k: json.loads((d / "eval.json").read_text()) for k, d in evals.items() if (d / "eval.json").is_file()}
    _summary(out, timings, time.monotonic() - start, results)
    if failed(timings):
        print(f"\ndemo: stage '{timings[-1].name}' failed; fix it and re-run `make demo` to continue from this stage",
              file=sys.stderr)
        return 1
    return 0


def _summary(out: pathlib.Path, timings, total: float, results: dict[str, dict]) -> None:
    lines = ["# CLAP demo", "", "| stage | seconds | status |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {took:.1f} | {status} |" for name, took, status in timings]
    lines += [f"| **total** | **{total:.1f}** | |", ""]
    meaning = {
        "train": "seeds the policy was trained on (the same object poses as its demonstrations): "
                 "whether it learned to do what it was shown",
        "heldout": "seeds it has never seen (new object poses): whether it generalises",
    }
    for key, result in results.items():
        lines.append(f"- Success on {meaning[key]}: **{result['successes']}/{result['episodes']}** "
                     f"({result['success_rate']:.0%}, {result['task']}, seeds from "
                     f"{result['per_episode'][0]['seed']}, policy mode {result.get('mode')})")
    if results:
        any_result = next(iter(results.values()))
        mean, p95 = any_result.get("inference_latency_mean_ms"), any_result.get("inference_latency_p95_ms")
        lines += [
            "",
            f"Policy inference latency (CPU): mean {mean:.1f} ms, p95 {p95:.1f} ms" if mean is not None
            else "Policy inference latency: no chunk was produced",
            "",
            *(f"- {k} seeds: predicted vs executed trajectories {r.get('trajectories_png')}"
              + (f", rollout video {r['rollout_mp4']}" if r.get("rollout_mp4") else "") for k, r in results.items()),
            f"- training curves: TensorBoard logs under {out / 'runs'}",
            f"- datasets: {out / 'dataset'} (robot), {out / 'human_dataset'} (human videos)",
        ]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print("\n" + text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
