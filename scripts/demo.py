#!/usr/bin/env python3
"""`make demo`: the whole CLAP pipeline on the embedded default, on CPU, in one command.

Stages (each a real `clap` / `clap sim` job, run as a subprocess with its own progress bar):
scripted demonstrations in the ALOHA end-effector simulation recorded as rosbag2 -> human-look
videos -> `clap convert` / `clap convert-videos` -> Act-VAE -> VD-VAE (robot + human) -> pseudo
action tokens for the human videos -> CLAP-NTP -> CLAP-RF + Knowledge Matching -> closed-loop
evaluation through the real policy node over DDS. Prints the success rate, the time each stage
took, and where the plots and videos are; writes the same to OUT/summary.md.

A stage whose output already exists is skipped (`--fresh` starts over), so an interrupted demo
continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_CONFIGS = ROOT / "config" / "train" / "demo"


def stages(out: pathlib.Path, args: argparse.Namespace) -> list[tuple[str, list[str], pathlib.Path]]:
    """(name, command, marker): the stage is done when its marker exists."""
    bags, human_videos = out / "bags", out / "human_videos"
    robot_ds, human_ds = out / "dataset", out / "human_dataset"
    runs = out / "runs"
    task = args.task
    return [
        ("record scripted demos", ["clap", "sim", "record", "--task", task, "--episodes", str(args.episodes),
                                   "--out", str(bags), "--seed", "0"], bags / ".done"),
        ("render human videos", ["clap", "sim", "human-videos", "--task", task, "--episodes",
                                 str(args.human_episodes), "--out", str(human_videos), "--seed", "500"],
         human_videos / ".done"),
        ("convert bags", ["clap", "convert", str(bags), "--out", str(robot_ds), "--workers", "2"],
         robot_ds / ".done"),
        ("convert human videos", ["clap", "convert-videos", str(human_videos), "--out", str(human_ds)],
         human_ds / ".done"),
        ("train Act-VAE", ["clap", "train", "act-vae", "--config", str(DEMO_CONFIGS / "act_vae.yaml"),
                           "--dataset", str(robot_ds), "--run-dir", str(runs / "act_vae")],
         runs / "act_vae" / "act_vae" / "config.json"),
        ("train VD-VAE", ["clap", "train", "vd-vae", "--config", str(DEMO_CONFIGS / "vd_vae.yaml"),
                          "--act-vae", str(runs / "act_vae" / "act_vae"), "--dataset", str(robot_ds),
                          "--human-dataset", str(human_ds), "--run-dir", str(runs / "vd_vae")],
         runs / "vd_vae" / "vd_vae" / "config.json"),
        ("label human videos", ["clap", "label-videos", "--vd-vae", str(runs / "vd_vae" / "vd_vae"),
                                "--dataset", str(human_ds)], human_ds / ".labelled"),
        ("train CLAP-NTP", ["clap", "train", "ntp", "--config", str(DEMO_CONFIGS / "ntp.yaml"),
                            "--act-vae", str(runs / "act_vae" / "act_vae"), "--dataset", str(robot_ds),
                            "--human-dataset", str(human_ds), "--run-dir", str(runs / "ntp")],
         runs / "ntp" / "policy"),
        ("train CLAP-RF + KM", ["clap", "train", "post", "--config", str(DEMO_CONFIGS / "post.yaml"),
                                "--init", str(runs / "ntp" / "policy"), "--act-vae", str(runs / "act_vae" / "act_vae"),
                                "--dataset", str(robot_ds), "--human-dataset", str(human_ds),
                                "--run-dir", str(runs / "post")], runs / "post" / "policy"),
        ("closed-loop eval", ["clap", "sim", "eval", "--task", task, "--episodes", str(args.eval_episodes),
                              "--policy", str(runs / "post" / "policy"), "--out", str(out / "eval")],
         out / "eval" / "eval.json"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "demo", help="where everything goes")
    parser.add_argument("--task", default="transfer_cube")
    parser.add_argument("--episodes", type=int, default=10, help="scripted robot demonstrations")
    parser.add_argument("--human-episodes", type=int, default=6, help="human-look videos")
    parser.add_argument("--eval-episodes", type=int, default=3, help="closed-loop evaluation episodes")
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    timings: list[tuple[str, float, str]] = []
    start_all = time.monotonic()
    plan = stages(out, args)
    for i, (name, cmd, marker) in enumerate(plan, 1):
        if marker.exists():
            print(f"\n[{i}/{len(plan)}] {name}: done before, skipped ({marker})", flush=True)
            timings.append((name, 0.0, "skipped"))
            continue
        print(f"\n[{i}/{len(plan)}] {name}\n$ {shlex.join(cmd)}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, env=env, cwd=ROOT)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            timings.append((name, took, f"FAILED (exit {proc.returncode})"))
            _summary(out, timings, time.monotonic() - start_all, None)
            print(f"\ndemo: stage '{name}' failed with exit code {proc.returncode}; fix it and re-run "
                  "`make demo` to continue from this stage", file=sys.stderr)
            return proc.returncode
        if marker.name in (".done", ".labelled"):
            marker.write_text(f"{time.time()}\n")
        timings.append((name, took, "ok"))
    result = json.loads((out / "eval" / "eval.json").read_text())
    _summary(out, timings, time.monotonic() - start_all, result)
    return 0


def _summary(out: pathlib.Path, timings, total: float, result: dict | None) -> None:
    lines = ["# CLAP demo", "", "| stage | seconds | status |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {took:.1f} | {status} |" for name, took, status in timings]
    lines += [f"| **total** | **{total:.1f}** | |", ""]
    if result is not None:
        rate = result["success_rate"]
        mean, p95 = result.get("inference_latency_mean_ms"), result.get("inference_latency_p95_ms")
        lines += [
            f"Closed-loop success rate on {result['task']}: **{rate:.0%}** "
            f"({result['successes']}/{result['episodes']} episodes, policy mode {result.get('mode')})",
            f"Policy inference latency (CPU): mean {mean:.1f} ms, p95 {p95:.1f} ms" if mean is not None
            else "Policy inference latency: no chunk was produced",
            "",
            f"- predicted vs executed trajectories: {result.get('trajectories_png')}",
            f"- rollout video: {result.get('rollout_mp4')}",
            f"- rate-distortion and training curves: TensorBoard logs under {out / 'runs'}",
            f"- datasets: {out / 'dataset'} (robot), {out / 'human_dataset'} (human videos)",
        ]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print("\n" + text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
