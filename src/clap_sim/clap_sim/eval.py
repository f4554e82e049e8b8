"""``sim eval``: closed-loop evaluation of a policy in the simulation, over real DDS.

    sim eval --task transfer_cube --episodes 10 --policy MODEL_DIR --out runs/eval
    sim eval --task transfer_cube --episodes 2 --policy scripted --out runs/eval_scripted

With a model directory the REAL policy node (``clap_policy_ros``' ``policy_node``, a
LifecycleNode ``clap_policy``) runs as a subprocess, started with ``--ros-args --params-file``
(``autostart: true``, ``use_sim_time: true``, ``model_dir``); this process hosts the sim bridge
(``clap_sim.bridge.SimBridge``) and an evaluation node. Each episode: the bridge resets the scene
with the episode's seed (paused), the runner calls ``/clap_policy/start_episode`` with the
task's instruction, un-pauses the simulation for at most ``--steps`` control steps (stopping early
on success), pauses it, and calls ``/clap_policy/end_episode`` with the outcome.

With ``--policy scripted`` the task's scripted demonstrator plays the policy's part: it answers
each state message from the bridge with the plan's targets for that step, over DDS, and the
bridge runs in lock-step with those commands.

With ``--lockstep`` there is no DDS and no node: the policy runs in this process and the
simulation waits for each prediction (``clap_sim.rollout``). That measures what the policy has
learned apart from timing (inference delay, executor, transport), faster than real time.

Modules: this one (arguments and the run over DDS), eval_node.py (the evaluation node, the
policy node's process), eval_lockstep.py, eval_report.py (latency statistics, the plot).

Outputs in ``--out``: ``eval.json`` (per-episode success and reward, success rate, latency
statistics), ``trajectories.png`` (predicted vs executed end-effector trajectories of the first
episode), ``rollout.mp4`` (the first episode: every camera, with
instruction, step, reward stage and outcome), and the policy node's log.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from clap_msgs.srv import EndEpisode, StartEpisode
from clap_policy_ros import client
from clap_policy_ros.chunk_executor import EXECUTOR_MODES
from clap_policy_ros.executors import MultiThreadedExecutor
from clap_policy_ros.node import NODE_NAME
from clap_train.data.contract import load_contract
from clap_train.io import atomic_write_text
from tqdm import tqdm

from .bridge import EXECUTOR_THREADS, SimBridge
from .eval_lockstep import run_lockstep
from .eval_node import EvalNode, start_policy_node
from .eval_report import EvalError, first_chunk, latency_stats, plot_trajectories, rollout_video, save_steps
from .scripted import scripted_trajectory
from .tasks import TASKS

START_EPISODE = f"/{NODE_NAME}/start_episode"
END_EPISODE = f"/{NODE_NAME}/end_episode"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sim eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="transfer_cube", choices=sorted(TASKS))
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--policy", required=True, help="'scripted' or a policy directory (ClapPolicy.load)")
    p.add_argument("--out", type=Path, required=True, help="folder for eval.json, trajectories.png, rollout.mp4")
    p.add_argument("--seed", type=int, default=1000, help="first episode seed (held-out from recording seeds)")
    p.add_argument("--steps", type=int, default=None, help="max control steps per episode (default: task length)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--real-time-factor", type=float, default=1.0, help="sim seconds per wall second")
    p.add_argument("--mode", choices=("rf", "ntp"), default="rf", help="policy head")
    p.add_argument("--executor", choices=EXECUTOR_MODES, default=None,
                   help="chunk executor (default: the node's parameter; open_loop with --lockstep)")
    p.add_argument("--replan-every", type=int, default=None,
                   help="control ticks between chunks (default: the node's parameter; 8 with --lockstep)")
    p.add_argument("--ensemble-m", type=float, default=None,
                   help="temporal ensembling weight m in exp(-m*i), i = 0 the oldest prediction (default: the "
                        "node's parameter, 0.01 as ACT; < 0 weighs the newest most)")
    p.add_argument("--lockstep", action="store_true",
                   help="no node, no DDS: the policy runs in this process and the sim waits for it")
    p.add_argument("--repeat-seed", action="store_true",
                   help="every episode starts from --seed (one scene, repeated: the spread of closed-loop "
                        "outcomes alone); with --lockstep each repeat draws other flow noise")
    p.add_argument("--noise-seed", type=int, default=0,
                   help="--lockstep: base seed of the flow noise (repeat a seed with other noise)")
    p.add_argument("--params-file", type=Path, default=None, help="extra ROS parameters for the policy node")
    p.add_argument("--contract", type=Path, default=None, help="topic contract YAML (default: astribot)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the policy node")
    p.add_argument("--no-early-stop", action="store_true", help="run every episode for all its steps")
    p.add_argument("--no-video", action="store_true", help="skip rollout.mp4")
    p.add_argument("--save-steps", action="store_true",
                   help="write each episode's per-step state, target and reward to OUT/steps_NNN.npz")
    return p


def episode_seed(args, i: int) -> int:
    """The scene seed of episode ``i``: consecutive seeds from ``--seed``, or ``--seed`` again."""
    return args.seed if args.repeat_seed else args.seed + i


def run_eval(args) -> dict:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scripted = args.policy == "scripted"
    if args.episodes < 1:
        raise EvalError(f"--episodes must be >= 1, got {args.episodes}")
    if not scripted and not Path(args.policy).expanduser().is_dir():
        raise EvalError(f"--policy {args.policy}: not a directory (give a policy checkpoint folder or 'scripted')")
    rclpy.init()
    proc = None
    executor = spinner = None
    bridge = evaluator = None
    try:
        bridge = SimBridge(overrides={
            "task": args.task, "image_size": args.image_size, "real_time_factor": args.real_time_factor,
            "publish_cameras": not scripted, "autostart": False, "sync_commands": scripted,
            "contract_file": str(args.contract.resolve()) if args.contract else ""})
        chunk_topic = None if scripted else load_contract(args.contract).node_outputs().action_chunk
        evaluator = EvalNode(bridge, chunk_topic)
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS + 1)  # + the eval node's group
        executor.add_node(bridge)
        executor.add_node(evaluator)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        if not scripted:
            proc, log_path = start_policy_node(args, out)
            # The node's timers run on sim time: give it a clock while it starts.
            bridge.reset(args.seed)
            client.LifecycleClient(evaluator).wait_active(proc, log_path, args.startup_timeout)
        max_steps = args.steps or int(round(bridge.task.episode_seconds * bridge.topics.rate_hz))
        episodes = []
        first_log = None
        first_chunks: list = []
        bar = tqdm(range(args.episodes), desc=f"eval {args.task} ({'scripted' if scripted else 'policy'})",
                   unit="episode")
        for i in bar:
            seed = episode_seed(args, i)
            instruction = bridge.reset(seed, record_frames=(i == 0 and not args.no_video))
            with evaluator.lock:
                evaluator.chunks, evaluator.arrivals = [], []
            episode_id = f"{args.task}-{seed}"
            if scripted:
                evaluator.script = (scripted_trajectory(bridge.spec, rate_hz=bridge.topics.rate_hz), bridge.clock_ns)
            else:
                res = client.call_once(evaluator, StartEpisode, START_EPISODE,
                                       StartEpisode.Request(instruction=instruction, episode_id=episode_id,
                                                            seed=seed), 30.0)
                if not res.success:
                    raise EvalError(f"{START_EPISODE} refused episode {episode_id}: {res.message}")
            wall0 = time.monotonic()
            # Scripted episodes re-publish the first observation so the lock-step starts.
            with bridge.lock:
                bridge.step_limit = max_steps  # the bridge pauses itself at the episode's end
                bridge.stop_on_success = not args.no_early_stop
                bridge.paused = False
                if scripted:
                    bridge.republish()
            # The episode's wall budget: its sim time at the requested speed, three times over,
            # plus a minute (lock-step waits, a slow first inference on a busy machine).
            deadline = wall0 + 3.0 * max_steps / (bridge.topics.rate_hz * args.real_time_factor) + 60.0
            while True:
                time.sleep(0.02)
                if not spinner.is_alive():
                    raise EvalError(f"the ROS executor of the bridge stopped during episode {episode_id}")
                if time.monotonic() > deadline:
                    with bridge.lock:
                        steps_done = bridge.step_count
                    raise EvalError(f"episode {episode_id} made {steps_done} of {max_steps} steps in "
                                    f"{time.monotonic() - wall0:.0f}s; the simulation is not advancing")
                if proc is not None and proc.poll() is not None:
                    raise EvalError(f"the policy node exited (code {proc.returncode}) during episode {episode_id}; "
                                    f"see {log_path}:\n" + client.tail(log_path))
                with bridge.lock:
                    done = bridge.step_count >= max_steps or (bridge.success and not args.no_early_stop)
                    if done:
                        bridge.paused = True
                        bridge.step_limit = None
                        break
            evaluator.script = None
            wall = time.monotonic() - wall0
            with bridge.lock:
                success, best, steps = bridge.success, bridge.best_reward, bridge.step_count
                log = bridge.log
            if not scripted:
                client.call_once(evaluator, EndEpisode, END_EPISODE,
                                 EndEpisode.Request(episode_id=episode_id, success=success, reward=float(best),
                                                    notes=f"sim {args.task} seed {seed}"), 30.0)
            with evaluator.lock:
                chunks, arrivals = list(evaluator.chunks), list(evaluator.arrivals)
            if i == 0:
                first_log, first_chunks = log, chunks
            if args.save_steps:
                save_steps(out / f"steps_{i:03d}.npz", log.times, log.state, log.target, log.reward)
            episodes.append({"episode": i, "seed": seed, "instruction": instruction, "success": bool(success),
                             "max_reward": int(best), "steps": int(steps), "wall_s": round(wall, 3),
                             "chunks": len(chunks), "first_chunk": first_chunk(chunks, arrivals, log),
                             "inference_latency": latency_stats(c[3] for c in chunks),
                             "command_latency": latency_stats(log.command_latency)})
            bar.set_postfix(success=f"{sum(e['success'] for e in episodes)}/{len(episodes)}")
        bar.close()
        all_inf = [e["inference_latency"] for e in episodes if e["inference_latency"]["count"]]
        summary = {
            "task": args.task, "policy": "scripted" if scripted else str(Path(args.policy).resolve()),
            "mode": None if scripted else args.mode, "episodes": len(episodes),
            "successes": sum(e["success"] for e in episodes),
            "success_rate": sum(e["success"] for e in episodes) / len(episodes),
            "max_steps": max_steps, "real_time_factor": args.real_time_factor,
            "inference_latency_mean_ms": (float(np.mean([s["mean_ms"] for s in all_inf])) if all_inf else None),
            "inference_latency_p95_ms": (float(np.max([s["p95_ms"] for s in all_inf])) if all_inf else None),
            "per_episode": episodes,
            "trajectories_png": str(out / "trajectories.png"),
            "rollout_mp4": None if args.no_video else str(out / "rollout.mp4"),
        }
        if scripted and first_log is not None:
            # The scripted policy's "prediction" is its plan for the episode.
            plan = scripted_trajectory(bridge.task.sample(args.seed), rate_hz=bridge.topics.rate_hz).actions14()
            first_chunks = [(first_log.times[0], 1.0 / bridge.topics.rate_hz, plan.astype(np.float64), 0.0)]
        plot_trajectories(out / "trajectories.png", first_log.times, first_log.state, first_log.target, first_chunks,
                          f"{args.task}, seed {args.seed}: predicted vs executed "
                          f"({'success' if episodes[0]['success'] else 'failure'})")
        if not args.no_video and first_log.frames:
            rollout_video(out / "rollout.mp4", first_log.frames, first_log.reward, bridge.task,
                          episodes[0]["instruction"], fps=bridge.topics.rate_hz)
        atomic_write_text(out / "eval.json", json.dumps(summary, indent=1) + "\n")
        return summary
    finally:
        client.stop_process(proc)
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if spinner is not None:
            spinner.join(timeout=5.0)
        for node in (evaluator, bridge):
            if node is not None:
                node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run_lockstep(args) if args.lockstep else run_eval(args)
    except (EvalError, client.ClientError) as exc:
        print(f"sim eval: {exc}", file=sys.stderr)
        return 1
    lat = summary["inference_latency_mean_ms"]
    print(f"sim eval: {summary['task']}: success {summary['successes']}/{summary['episodes']} "
          f"({100 * summary['success_rate']:.0f} %)"
          + (f", inference latency mean {lat:.1f} ms, p95 {summary['inference_latency_p95_ms']:.1f} ms" if lat else ""))
    print(f"  results: {args.out / 'eval.json'}\n  plot:    {summary['trajectories_png']}"
          + (f"\n  video:   {summary['rollout_mp4']}" if summary["rollout_mp4"] else ""))
    return 0 if summary["successes"] or summary["policy"] != "scripted" else 1


if __name__ == "__main__":
    sys.exit(main())
