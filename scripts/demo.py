#!/usr/bin/env python3
"""`make demo`: the whole CLAP pipeline on the embedded default, on CPU, in one command.

Stages (each a real `clap` / `clap sim` job, run as a subprocess with its own progress bar):
scripted demonstrations in the ALOHA end-effector simulation recorded as rosbag2 -> human-look
videos -> `clap convert` / `clap convert-videos` -> Act-VAE -> VD-VAE (robot + human) -> pseudo
action tokens for the human videos -> CLAP-NTP -> CLAP-RF + Knowledge Matching -> closed-loop
evaluation through the real policy node over DDS, on seeds the policy was trained on and on
held-out seeds. Prints both success rates, the time each stage took, and where the plots and
videos are; writes the same to OUT/summary.md.

A stage whose output already exists is skipped (`--fresh` starts over), so an interrupted demo
continues where it stopped. ``bench/closed_loop.py`` runs the same training stages with larger
budgets (``--configs``) and evaluates the full ladder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_CONFIGS = ROOT / "config" / "train" / "demo"
TRAIN_SEED, HELDOUT_SEED = 0, 1000  # recordings use seeds 0..N-1; held-out evaluation starts at 1000
# ACT-style temporal ensembling with a new chunk every tick: the executor under which the
# small CPU policies succeed (bench/RESULTS.md, "A policy that performs")
EVAL_EXECUTOR = ("--executor", "temporal_ensemble", "--replan-every", "1")


@dataclasses.dataclass
class Stage:
    name: str
    cmd: list[str]
    marker: pathlib.Path  # the stage is done when this exists


def training_stages(out: pathlib.Path, task: str, demos: int, human_videos: int, configs: pathlib.Path,
                    human_task: str | None = None) -> list[Stage]:
    """Record, convert and train every CLAP stage; the policy lands in ``out/runs/rf/policy``."""
    return (data_stages(out, task, demos, human_videos, configs, human_task)
            + policy_stages(out, out / "runs", configs))


def data_stages(out: pathlib.Path, task: str, demos: int, human_videos: int, configs: pathlib.Path,
                human_task: str | None = None) -> list[Stage]:
    """Demonstrations of ``task`` and human-look videos of ``human_task`` (default: the same task),
    converted; the Act-VAE and the VD-VAE trained; the human videos pseudo-labelled."""
    bags, videos = out / "bags", out / "human_videos"
    robot_ds, human_ds = out / "dataset", out / "human_dataset"
    runs = out / "runs"
    act = runs / "act_vae" / "act_vae"
    return [
        Stage("record scripted demos", ["clap", "sim", "record", "--task", task, "--episodes", str(demos),
                                        "--out", str(bags), "--seed", str(TRAIN_SEED)], bags / ".done"),
        Stage("render human videos", ["clap", "sim", "human-videos", "--task", human_task or task,
                                      "--episodes", str(human_videos), "--out", str(videos), "--seed", "500"],
              videos / ".done"),
        Stage("convert bags", ["clap", "convert", str(bags), "--out", str(robot_ds), "--workers", "2"],
              robot_ds / ".done"),
        Stage("convert human videos", ["clap", "convert-videos", str(videos), "--out", str(human_ds)],
              human_ds / ".done"),
        Stage("train Act-VAE", ["clap", "train", "act-vae", "--config", str(configs / "act_vae.yaml"),
                                "--dataset", str(robot_ds), "--run-dir", str(runs / "act_vae"), "--resume"],
              act / "config.json"),
        Stage("train VD-VAE", ["clap", "train", "vd-vae", "--config", str(configs / "vd_vae.yaml"),
                               "--set", f"act_vae={act}", "--dataset", str(robot_ds), "--human-dataset", str(human_ds),
                               "--run-dir", str(runs / "vd_vae"), "--resume"],
              runs / "vd_vae" / "vd_vae" / "config.json"),
        Stage("label human videos", ["clap", "label-videos", "--vd-vae", str(runs / "vd_vae" / "vd_vae"),
                                     "--dataset", str(human_ds)], human_ds / ".labelled"),
    ]


def policy_stages(out: pathlib.Path, runs: pathlib.Path, configs: pathlib.Path, ntp_set: tuple[str, ...] = (),
                  rf_set: tuple[str, ...] = (), human_ds: pathlib.Path | None = None) -> list[Stage]:
    """CLAP-NTP, then CLAP-RF + KM from it, on ``out``'s datasets and Act-VAE, into ``runs``;
    ``ntp_set`` / ``rf_set``: extra config overrides of each stage; ``human_ds``: another labelled
    human-video dataset than ``out``'s."""
    robot_ds, human_ds = out / "dataset", human_ds or out / "human_dataset"
    act = out / "runs" / "act_vae" / "act_vae"
    return [
        Stage("train CLAP-NTP", ["clap", "train", "ntp", "--config", str(configs / "ntp.yaml"),
                                 "--set", f"act_vae={act}", *ntp_set,
                                 "--dataset", str(robot_ds), "--human-dataset", str(human_ds),
                                 "--run-dir", str(runs / "ntp"), "--resume"], runs / "ntp" / "policy"),
        Stage("train CLAP-RF + KM", ["clap", "train", "rf", "--config", str(configs / "rf.yaml"),
                                     "--set", f"init={runs / 'ntp' / 'policy'}", *rf_set, "--dataset", str(robot_ds),
                                     "--human-dataset", str(human_ds), "--run-dir", str(runs / "rf"), "--resume"],
              runs / "rf" / "policy"),
    ]


def eval_stage(name: str, out: pathlib.Path, task: str, policy: pathlib.Path, seed: int, episodes: int,
               *extra: str) -> Stage:
    """Closed loop through the policy node over DDS (``clap sim eval``)."""
    return Stage(name, ["clap", "sim", "eval", "--task", task, "--episodes", str(episodes), "--seed", str(seed),
                        "--policy", str(policy), "--out", str(out), *extra], out / "eval.json")


def run_stages(plan: list[Stage], env: dict[str, str]) -> list[tuple[str, float, str]]:
    """Run the stages whose marker is missing; stop at the first failure (its timings say which)."""
    timings: list[tuple[str, float, str]] = []
    for i, stage in enumerate(plan, 1):
        if stage.marker.exists():
            print(f"\n[{i}/{len(plan)}] {stage.name}: done before, skipped ({stage.marker})", flush=True)
            timings.append((stage.name, 0.0, "skipped"))
            continue
        print(f"\n[{i}/{len(plan)}] {stage.name}\n$ {shlex.join(stage.cmd)}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(stage.cmd, env=env, cwd=ROOT)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            timings.append((stage.name, took, f"FAILED (exit {proc.returncode})"))
            return timings
        if stage.marker.name in (".done", ".labelled"):
            stage.marker.write_text(f"{time.time()}\n")
        timings.append((stage.name, took, "ok"))
    return timings


def failed(timings: list[tuple[str, float, str]]) -> bool:
    """Whether ``run_stages`` stopped at a failed stage."""
    return any(status.startswith("FAILED") for _, _, status in timings)


def stage_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "demo", help="where everything goes")
    parser.add_argument("--task", default="transfer_cube")
    parser.add_argument("--episodes", type=int, default=20, help="scripted robot demonstrations (seeds 0..N-1)")
    parser.add_argument("--human-episodes", type=int, default=6, help="human-look videos")
    parser.add_argument("--eval-episodes", type=int, default=5,
                        help="closed-loop episodes on training seeds and on held-out seeds, each")
    parser.add_argument("--configs", type=pathlib.Path, default=DEMO_CONFIGS, help="folder of the stage configs")
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    policy = out / "runs" / "rf" / "policy"
    evals = {"train": (out / "eval_train_seeds", TRAIN_SEED), "heldout": (out / "eval_heldout_seeds", HELDOUT_SEED)}
    plan = training_stages(out, args.task, args.episodes, args.human_episodes, args.configs)
    plan += [eval_stage(f"closed-loop eval, {'training' if k == 'train' else 'held-out'} seeds", d, args.task,
                        policy, seed, min(args.eval_episodes, args.episodes) if k == "train" else args.eval_episodes,
                        *EVAL_EXECUTOR) for k, (d, seed) in evals.items()]
    start = time.monotonic()
    timings = run_stages(plan, stage_env())
    results = {k: json.loads((d / "eval.json").read_text()) for k, (d, _) in evals.items()
               if (d / "eval.json").is_file()}
    _summary(out, timings, time.monotonic() - start, results)
    failed = [t for t in timings if t[2].startswith("FAILED")]
    if failed:
        print(f"\ndemo: stage '{failed[0][0]}' failed; fix it and re-run `make demo` to continue from this stage",
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
            *(f"- {k} seeds: predicted vs executed trajectories {r.get('trajectories_png')}, "
              f"rollout video {r.get('rollout_mp4')}" for k, r in results.items()),
            f"- training curves: TensorBoard logs under {out / 'runs'}",
            f"- datasets: {out / 'dataset'} (robot), {out / 'human_dataset'} (human videos)",
        ]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print("\n" + text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
