"""``sim eval --lockstep``: the evaluation without node or DDS (``clap_sim.rollout`` per seed).

The policy runs in this process and the simulation waits for each prediction: what the policy
has learned apart from timing (inference delay, executor, transport), faster than real time.
It writes the same eval.json, trajectories.png and rollout.mp4 as the evaluation over DDS.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from clap_train.io import atomic_write_text
from tqdm import tqdm

from .eval_report import EvalError, plot_trajectories, rollout_video, save_steps
from .tasks import TASKS


def run_lockstep(args) -> dict:
    """The evaluation without node or DDS: ``clap_sim.rollout`` per seed, the same eval.json."""
    from clap_train.policy import ClapPolicy

    from .eval import episode_seed
    from .rollout import rollout

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.episodes < 1:
        raise EvalError(f"--episodes must be >= 1, got {args.episodes}")
    if args.policy == "scripted" or not Path(args.policy).expanduser().is_dir():
        raise EvalError(f"--lockstep needs a policy directory, got --policy {args.policy}")
    policy = ClapPolicy.load(Path(args.policy).expanduser())
    task = TASKS[args.task]()
    scene = task.make_scene(image_size=args.image_size)
    rate = scene.rate_hz
    executor, replan = args.executor or "open_loop", args.replan_every or 8
    episodes, first = [], None
    try:
        bar = tqdm(range(args.episodes), desc=f"eval {args.task} (lock-step, {args.mode}, {executor})",
                   unit="episode")
        for i in bar:
            seed = episode_seed(args, i)
            noise_seed = args.noise_seed + (i if args.repeat_seed else 0)  # a repeated scene, other noise
            t0 = time.monotonic()
            r = rollout(policy, task, scene, seed, mode=args.mode, executor=executor, replan_every=replan,
                        max_steps=args.steps, early_stop=not args.no_early_stop,
                        keep_frames=(i == 0 and not args.no_video), noise_seed=noise_seed,
                        ensemble_m=args.ensemble_m)
            first = first or r
            if args.save_steps:
                save_steps(out / f"steps_{i:03d}.npz", np.arange(len(r.state)) / rate, r.state, r.target, r.reward)
            episodes.append({"episode": i, "seed": seed, "success": bool(r.success), "max_reward": r.max_reward,
                             "steps": r.steps, "wall_s": round(time.monotonic() - t0, 3), "chunks": r.predictions})
            bar.set_postfix(success=f"{sum(e['success'] for e in episodes)}/{len(episodes)}")
        bar.close()
    finally:
        scene.close()
    n_ok = sum(e["success"] for e in episodes)
    summary = {
        "task": args.task, "policy": str(Path(args.policy).resolve()), "mode": args.mode, "lockstep": True,
        "executor": executor, "replan_every": replan, "episodes": len(episodes), "successes": n_ok,
        "success_rate": n_ok / len(episodes), "first_seed": args.seed,
        "mean_max_reward": float(np.mean([e["max_reward"] for e in episodes])),
        "inference_latency_mean_ms": None, "per_episode": episodes,
        "trajectories_png": str(out / "trajectories.png"),
        "rollout_mp4": None if args.no_video else str(out / "rollout.mp4"),
    }
    times = np.arange(len(first.state)) / rate
    plot_trajectories(out / "trajectories.png", times, first.state, first.target,
                      [(t / rate, 1.0 / rate, c, 0.0) for t, c in first.chunks],
                      f"{args.task}, seed {args.seed} (lock-step): predicted vs executed "
                      f"({'success' if first.success else 'failure'})")
    if not args.no_video and first.frames:
        rollout_video(out / "rollout.mp4", first.frames, first.reward, task,
                      task.sample(episode_seed(args, 0)).instruction, fps=rate / replan)
    atomic_write_text(out / "eval.json", json.dumps(summary, indent=1) + "\n")
    return summary
