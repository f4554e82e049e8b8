"""Lock-step closed loop in one process: the simulation waits while the policy thinks.

``sim eval --lockstep`` uses this to measure what a policy has learned, apart from timing: no
DDS, no policy node, no inference delay. At every re-plan tick the scene renders the three
cameras at the bridge's size, the state is read as the bridge publishes it, ``ClapPolicy.predict``
runs, and the chunk is executed with the node's own ``ChunkExecutor`` (open loop or temporal
ensembling; ``rtc`` guides each new chunk toward the rest of the current one, with one frozen
row, the tick already sent). Cameras are rendered only when the policy is called, so an episode
costs its predictions plus physics.

ROS-free (the chunk executor is pure numpy).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from clap_policy_ros.chunk_executor import ChunkExecutor, ExecutorConfig

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
    state: np.ndarray  # [T+1, 14] measured
    target: np.ndarray  # [T, 14] commanded
    chunks: list[tuple[int, np.ndarray]]  # (tick, [H, 14]) predicted
    head_frames: list[np.ndarray]


def rollout(policy, task: Task, scene: BimanualScene, seed: int, *, mode: str = "rf",
            executor: str = "open_loop", replan_every: int = 8, max_steps: int | None = None,
            use_state: bool = True, early_stop: bool = True, keep_frames: bool = False,
            noise_seed: int = 0) -> Rollout:
    """Run one seeded episode of ``task`` with ``policy`` (a ``ClapPolicy``) in lock-step.

    The flow noise of the k-th prediction is seeded with (noise_seed, seed, k).
    """
    spec = task.reset(scene, seed)
    steps = max_steps or int(round(task.episode_seconds * scene.rate_hz))
    plan = ChunkExecutor(ExecutorConfig(mode=executor, chunk_len=policy.chunk_len, action_dim=policy.action_dim,
                                        replan_every=replan_every))
    states, targets, chunks, frames = [], [], [], []
    best, calls, step = 0, 0, 0
    while step < steps:
        state = vector14({arm: scene.arm_pose(arm) for arm in ARMS})
        states.append(state)
        if plan.needs_plan(step):
            images = scene.render_all()
            if keep_frames:
                frames.append(images["head"])
            prefix = plan.prefix_for(step)
            pred = policy.predict(images, spec.instruction, state if use_state else None, mode=mode,
                                  prev_chunk=prefix, inference_delay=1 if prefix is not None else 0,
                                  seed=(noise_seed * 1_000_003 + seed) * 1000 + calls)
            calls += 1
            plan.add_chunk(pred.actions, step)
            chunks.append((step, np.asarray(pred.actions, dtype=np.float64)))
        action = plan.action_at(step)
        targets.append(action)
        apply_vector14(scene, action)
        scene.step()
        step += 1
        best = max(best, int(task.reward(scene, spec)))
        if early_stop and best >= task.max_reward:
            break
    states.append(vector14({arm: scene.arm_pose(arm) for arm in ARMS}))
    return Rollout(seed, best >= task.max_reward, best, step, calls, np.asarray(states), np.asarray(targets),
                   chunks, frames)
