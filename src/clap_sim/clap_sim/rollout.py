"""Lock-step closed loop in one process: the simulation waits while the policy thinks.

``sim eval --lockstep`` uses this to measure what a policy has learned, apart from timing: no
DDS, no policy node, no inference delay. It runs the node's own control path without ROS: the
plan is the node's ``ChunkExecutor`` in a ``RunState``, and every tick goes through the node's
``ControlLoop`` (the safety filter: workspace, speed and gripper limits relative to the last
command; the episode-restart rule: the first command starts from the measured pose), built from
the node's default parameters (``NodeParams``) with this executor. At every re-plan tick the
scene renders the three cameras at the bridge's size, the state is read as the bridge publishes
it, ``ClapPolicy.predict`` runs, and a chunk the node would reject (NaN, wrong shape) is dropped
as the node drops it. ``rtc`` guides each new chunk toward the rest of the current one, with one
frozen row, the tick already sent. Cameras are rendered only when the policy is called, so an
episode costs its predictions plus physics.

ROS-free (the executor, the control loop and the safety filter are pure numpy).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from clap_policy_ros.chunk_executor import ChunkExecutor
from clap_policy_ros.control_loop import ControlLoop
from clap_policy_ros.parameters import NodeParams
from clap_policy_ros.run_state import RunState
from clap_policy_ros.safety import SafetyFilter
from clap_train.data.layout import DEFAULT_LAYOUT as LAYOUT

from .scene import ARMS, BimanualScene
from .tasks import Task
from .vectors import apply_vector14, vector14


@dataclasses.dataclass
class Rollout:
    """One lock-step episode."""

    seed: int
    success: bool
    max_reward: int
    steps: int
    predictions: int
    state: np.ndarray  # [T+1, D] measured
    target: np.ndarray  # [T, D] commanded (after the safety filter)
    chunks: list[tuple[int, np.ndarray]]  # (tick, [H, D]) predicted
    frames: list[tuple[int, dict[str, np.ndarray]]]  # (step, camera -> image) where kept
    reward: np.ndarray  # [T] the task's reward after each step


def control_path(policy, instruction: str, executor: str, replan_every: int, rate_hz: float,
                 seed: int = 0, ensemble_m: float | None = None) -> tuple[RunState, ControlLoop]:
    """The node's plan and control loop for ``policy``, as the node configures them (default parameters)."""
    weights = {} if ensemble_m is None else {"ensemble_m": float(ensemble_m)}  # else the node's default
    params = NodeParams(executor=executor, replan_every=replan_every, control_rate_hz=float(rate_hz), seed=seed,
                        **weights)
    state = RunState(instruction=instruction, seed=seed)
    state.executor = ChunkExecutor(params.executor_config(policy.chunk_len, policy.action_dim, LAYOUT))
    state.from_measured = True  # an episode starts: the first command starts from the measured pose
    return state, ControlLoop(state, SafetyFilter(params.safety_limits(LAYOUT), LAYOUT))


def rollout(policy, task: Task, scene: BimanualScene, seed: int, *, mode: str = "rf",
            executor: str = "open_loop", replan_every: int = 8, max_steps: int | None = None,
            use_state: bool = True, early_stop: bool = True, keep_frames: bool = False,
            noise_seed: int = 0, ensemble_m: float | None = None) -> Rollout:
    """Run one seeded episode of ``task`` with ``policy`` (a ``ClapPolicy``) in lock-step.

    The flow noise of the k-th prediction is seeded with (noise_seed, seed, k).
    """
    spec = task.reset(scene, seed)
    steps = max_steps or int(round(task.episode_seconds * scene.rate_hz))
    run, control = control_path(policy, spec.instruction, executor, replan_every, scene.rate_hz,
                                ensemble_m=ensemble_m)
    plan = run.executor
    shape = (plan.config.chunk_len, plan.config.action_dim)
    states, targets, chunks, frames, rewards = [], [], [], [], []
    best, calls, step = 0, 0, 0
    while step < steps:
        state = vector14({arm: scene.arm_pose(arm) for arm in ARMS})
        states.append(state)
        if plan.needs_plan(step):
            images = scene.render_all()
            if keep_frames:
                frames.append((step, images))
            prefix = plan.prefix_for(step)
            pred = policy.predict(images, spec.instruction, state if use_state else None, mode=mode,
                                  prev_chunk=prefix, inference_delay=1 if prefix is not None else 0,
                                  seed=(noise_seed * 1_000_003 + seed) * 1000 + calls)
            calls += 1
            actions = np.asarray(pred.actions, dtype=np.float64)
            if SafetyFilter.chunk_problem(actions, shape) is None:
                plan.add_chunk(actions, step)
                chunks.append((step, actions))
            else:  # the node rejects it and holds
                plan.clear()
        action = control.tick(step, "", lambda: state)
        targets.append(action)
        apply_vector14(scene, action)
        scene.step()
        step += 1
        rewards.append(int(task.reward(scene, spec)))
        best = max(best, rewards[-1])
        if early_stop and best >= task.max_reward:
            break
    states.append(vector14({arm: scene.arm_pose(arm) for arm in ARMS}))
    return Rollout(seed, best >= task.max_reward, best, step, calls, np.asarray(states), np.asarray(targets),
                   chunks, frames, np.asarray(rewards))
