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

Outputs in ``--out``: ``eval.json`` (per-episode success and reward, success rate, latency
statistics), ``trajectories.png`` (predicted vs executed end-effector trajectories of the first
episode), ``rollout.mp4`` (head camera of the first episode), and the policy node's log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from clap_train.cli import find_ros_executable
from clap_train.data.layout import ARM_WIDTH, DEFAULT_LAYOUT
from clap_train.io import atomic_path, atomic_write_text
from geometry_msgs.msg import PoseStamped
from clap_policy_ros.chunk_executor import EXECUTOR_MODES
from clap_policy_ros.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64
from tqdm import tqdm

from .bridge import EXECUTOR_THREADS, SimBridge, stamp_ns
from .human_videos import write_mp4
from .scene import ARMS
from .scripted import scripted_trajectory
from .tasks import TASKS


class EvalError(RuntimeError):
    """The evaluation could not run (policy node missing, not starting, service failing)."""


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
    p.add_argument("--lockstep", action="store_true",
                   help="no node, no DDS: the policy runs in this process and the sim waits for it")
    p.add_argument("--noise-seed", type=int, default=0,
                   help="--lockstep: base seed of the flow noise (repeat a seed with other noise)")
    p.add_argument("--params-file", type=Path, default=None, help="extra ROS parameters for the policy node")
    p.add_argument("--contract", type=Path, default=None, help="topic contract YAML (default: astribot)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the policy node")
    p.add_argument("--no-early-stop", action="store_true", help="run every episode for all its steps")
    p.add_argument("--no-video", action="store_true", help="skip rollout.mp4")
    return p


def policy_node_executable() -> str:
    """clap_policy_ros' policy_node, through the ament index (or PATH)."""
    found = find_ros_executable("clap_policy_ros", "policy_node")
    if found is None:
        raise EvalError("clap_policy_ros' policy_node executable was not found; build the workspace and "
                        "source scripts/env.sh (or your ROS workspace's setup)")
    return found


class EvalNode(Node):
    """Collects the policy's chunks and status; plays the scripted policy when asked."""

    def __init__(self, bridge: SimBridge):
        super().__init__("clap_sim_eval")
        self.bridge = bridge
        self.lock = threading.Lock()
        self.chunks: list[tuple[float, float, np.ndarray, float]] = []  # (t, dt, data[H,D], latency)
        self.script = None  # (trajectory, episode start ns)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        try:
            from clap_msgs.msg import ActionChunk

            self.create_subscription(ActionChunk, "/clap/action_chunk", self._on_chunk, qos)
        except ImportError:  # clap_msgs not built: only the scripted policy can run
            pass
        topics = bridge.topics
        self.pub_pose = {a: self.create_publisher(PoseStamped, topics.command[a].pose, qos) for a in ARMS}
        self.pub_grip = {a: self.create_publisher(Float64, topics.command[a].gripper, qos) for a in ARMS}
        self.create_subscription(PoseStamped, topics.state["right"].pose, self._on_state, qos)

    def _on_chunk(self, msg) -> None:
        h, d = int(msg.horizon), int(msg.action_dim)
        data = np.asarray(msg.data, dtype=np.float64)
        if h * d != data.size:
            self.get_logger().warning(f"/clap/action_chunk: {data.size} values for {h}x{d}; ignored")
            return
        lat = msg.inference_latency.sec + msg.inference_latency.nanosec * 1e-9
        dt = msg.step_period.sec + msg.step_period.nanosec * 1e-9
        with self.lock:
            self.chunks.append((stamp_ns(msg.header.stamp) * 1e-9, dt, data.reshape(h, d), lat))

    def _on_state(self, msg: PoseStamped) -> None:
        """Scripted policy: answer the observation at sim time t with the plan's step-t targets."""
        script = self.script
        if script is None:
            return
        traj, start_ns = script
        t = stamp_ns(msg.header.stamp)
        step = int(round((t - start_ns) / self.bridge.period_ns))
        if step < 0:
            return
        frame = self.bridge.topics.frame_id
        for arm, (pos, quat, grip) in traj.target(step).items():
            self.pub_grip[arm].publish(Float64(data=float(grip)))
        for arm, (pos, quat, grip) in traj.target(step).items():
            out = PoseStamped()
            out.header.stamp, out.header.frame_id = msg.header.stamp, frame
            out.pose.position.x, out.pose.position.y, out.pose.position.z = (float(v) for v in pos)
            out.pose.orientation.w, out.pose.orientation.x = float(quat[0]), float(quat[1])
            out.pose.orientation.y, out.pose.orientation.z = float(quat[2]), float(quat[3])
            self.pub_pose[arm].publish(out)


def call(node: Node, srv_type, name: str, request, timeout: float):
    """Call a service and wait for the answer (the executor spins in another thread)."""
    client = node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise EvalError(f"service {name} did not appear within {timeout:.0f}s")
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > end:
                raise EvalError(f"service {name} did not answer within {timeout:.0f}s")
            time.sleep(0.01)
        return future.result()
    finally:
        node.destroy_client(client)


def wait_active(node: Node, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    """Wait until the policy node's lifecycle state is 'active'."""
    from lifecycle_msgs.srv import GetState

    end = time.monotonic() + timeout
    label = "unknown"
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise EvalError(f"the policy node exited with code {proc.returncode} while starting; see {log_path}:\n"
                            + tail(log_path))
        try:
            label = call(node, GetState, "/clap_policy/get_state", GetState.Request(), 5.0).current_state.label
        except EvalError:
            label = "no answer"
        if label == "active":
            return
        # autostart failed (e.g. the model does not load): the node stays up, unconfigured.
        failed = [line for line in tail(log_path, 200).splitlines()
                  if "[ERROR]" in line and ("configure" in line or "activate" in line)]
        if failed and label in ("unconfigured", "inactive", "finalized"):
            raise EvalError(f"the policy node did not start (state: {label}): {failed[-1]}\nsee {log_path}")
        time.sleep(0.5)
    raise EvalError(f"the policy node is not active after {timeout:.0f}s (state: {label}); see {log_path}:\n"
                    + tail(log_path))


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def latency_stats(values) -> dict:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"count": 0}
    return {"count": int(v.size), "mean_ms": float(v.mean() * 1e3), "p50_ms": float(np.percentile(v, 50) * 1e3),
            "p95_ms": float(np.percentile(v, 95) * 1e3), "max_ms": float(v.max() * 1e3)}


def plot_trajectories(path: Path, times, state, target, chunks, title: str) -> None:
    """Executed (state), commanded and predicted (chunks) trajectories, one panel per dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.asarray(times)
    t0 = times[0] if len(times) else 0.0
    state, target = np.asarray(state), np.asarray(target)
    fig, axes = plt.subplots(ARM_WIDTH, len(DEFAULT_LAYOUT.arms), figsize=(12, 14), sharex=True)
    for d, name in enumerate(DEFAULT_LAYOUT.names):  # one column per arm
        ax = axes[d % ARM_WIDTH, d // ARM_WIDTH]
        for i, (t, dt, data, _) in enumerate(chunks):
            if data.shape[1] > d:
                ax.plot(t - t0 + dt * np.arange(len(data)), data[:, d], color="tab:orange", alpha=0.35, lw=0.8,
                        label="predicted chunks" if i == 0 else None)
        if len(target):
            ax.plot(times[:len(target)] - t0, target[:, d], color="tab:blue", ls="--", lw=1, label="commanded")
        if len(state):
            ax.plot(times[:len(state)] - t0, state[:, d], color="black", lw=1.2, label="executed")
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 1].set_xlabel("time (s)")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def start_policy_node(args, out: Path) -> tuple[subprocess.Popen, Path]:
    model_dir = Path(args.policy).expanduser().resolve()
    if not model_dir.is_dir():
        raise EvalError(f"--policy {args.policy}: not a directory (give a policy checkpoint folder or 'scripted')")
    params = {"clap_policy": {"ros__parameters": {
        "model_dir": str(model_dir), "autostart": True, "use_sim_time": True, "mode": args.mode,
        "episode_log": str(out / "episodes.jsonl"), "seed": int(args.seed),
        "contract_file": str(args.contract.resolve()) if args.contract else ""}}}
    if args.executor:
        params["clap_policy"]["ros__parameters"]["executor"] = args.executor
    if args.replan_every:
        params["clap_policy"]["ros__parameters"]["replan_every"] = int(args.replan_every)
    params_file = out / "policy_params.yaml"
    atomic_write_text(params_file, yaml.safe_dump(params, sort_keys=False))
    cmd = [policy_node_executable(), "--ros-args", "--params-file", str(params_file)]
    if args.params_file is not None:
        if not args.params_file.is_file():
            raise EvalError(f"--params-file {args.params_file}: no such file")
        cmd += ["--params-file", str(args.params_file.resolve())]
    log_path = out / "policy_node.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                            start_new_session=True)
    log.close()
    return proc, log_path


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        evaluator = EvalNode(bridge)
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS + 1)  # + the eval node's group
        executor.add_node(bridge)
        executor.add_node(evaluator)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        if not scripted:
            proc, log_path = start_policy_node(args, out)
            # The node's timers run on sim time: give it a clock while it starts.
            bridge.reset(args.seed)
            wait_active(evaluator, proc, log_path, args.startup_timeout)
            from clap_msgs.srv import EndEpisode, StartEpisode
        max_steps = args.steps or int(round(bridge.task.episode_seconds * bridge.topics.rate_hz))
        episodes = []
        first_log = None
        first_chunks: list = []
        bar = tqdm(range(args.episodes), desc=f"eval {args.task} ({'scripted' if scripted else 'policy'})",
                   unit="episode")
        for i in bar:
            seed = args.seed + i
            instruction = bridge.reset(seed, record_frames=(i == 0 and not args.no_video))
            with evaluator.lock:
                evaluator.chunks = []
            episode_id = f"{args.task}-{seed}"
            if scripted:
                evaluator.script = (scripted_trajectory(bridge.spec, rate_hz=bridge.topics.rate_hz), bridge.clock_ns)
            else:
                res = call(evaluator, StartEpisode, "/clap_policy/start_episode",
                           StartEpisode.Request(instruction=instruction, episode_id=episode_id, seed=seed), 30.0)
                if not res.success:
                    raise EvalError(f"/clap_policy/start_episode refused episode {episode_id}: {res.message}")
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
                                    f"see {out / 'policy_node.log'}:\n" + tail(out / "policy_node.log"))
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
                call(evaluator, EndEpisode, "/clap_policy/end_episode",
                     EndEpisode.Request(episode_id=episode_id, success=success, reward=float(best),
                                        notes=f"sim {args.task} seed {seed}"), 30.0)
            with evaluator.lock:
                chunks = list(evaluator.chunks)
            if i == 0:
                first_log, first_chunks = log, chunks
            episodes.append({"episode": i, "seed": seed, "instruction": instruction, "success": bool(success),
                             "max_reward": int(best), "steps": int(steps), "wall_s": round(wall, 3),
                             "chunks": len(chunks),
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
            write_mp4(out / "rollout.mp4", first_log.frames, fps=bridge.topics.rate_hz)
        atomic_write_text(out / "eval.json", json.dumps(summary, indent=1) + "\n")
        return summary
    finally:
        stop_process(proc)
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if spinner is not None:
            spinner.join(timeout=5.0)
        for node in (evaluator, bridge):
            if node is not None:
                node.destroy_node()
        rclpy.try_shutdown()


def run_lockstep(args) -> dict:
    """The evaluation without node or DDS: ``clap_sim.rollout`` per seed, the same eval.json."""
    from clap_train.policy import ClapPolicy

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
            seed = args.seed + i
            t0 = time.monotonic()
            r = rollout(policy, task, scene, seed, mode=args.mode, executor=executor, replan_every=replan,
                        max_steps=args.steps, early_stop=not args.no_early_stop,
                        keep_frames=(i == 0 and not args.no_video), noise_seed=args.noise_seed)
            first = first or r
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
    if not args.no_video and first.head_frames:
        write_mp4(out / "rollout.mp4", first.head_frames, fps=rate / replan)
    atomic_write_text(out / "eval.json", json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run_lockstep(args) if args.lockstep else run_eval(args)
    except EvalError as exc:
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
