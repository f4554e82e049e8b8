"""What a simulated evaluation reports besides success: intervals, latency, trajectories, the video.

The rollout video shows every camera side by side, with the instruction, the step, the reward
stage and the outcome written on the frames.

``EvalError``: the evaluation could not run (policy node missing or not starting, a service
failing, a bad argument); ``sim eval`` prints it and exits with 1.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from clap_train.data.layout import ARM_WIDTH, DEFAULT_LAYOUT
from clap_train.io import atomic_path


class EvalError(RuntimeError):
    """The evaluation could not run (policy node missing, not starting, service failing)."""


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float, float]:
    """Difference p1 - p2 of two independent success rates, with Newcombe's hybrid score 95 % interval."""
    p1, p2 = s1 / n1, s2 / n2
    (l1, u1), (l2, u2) = wilson(s1, n1), wilson(s2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def success_summary(result: dict) -> dict:
    """One cell of a results table from an eval.json: successes, rate, its 95 % interval, mean max reward."""
    lo, hi = wilson(result["successes"], result["episodes"])
    return {"successes": result["successes"], "episodes": result["episodes"], "rate": result["success_rate"],
            "ci95": [round(lo, 3), round(hi, 3)], "mean_max_reward": round(float(
                sum(e["max_reward"] for e in result["per_episode"]) / len(result["per_episode"])), 2),
            "inference_latency_mean_ms": result.get("inference_latency_mean_ms")}


def latency_stats(values) -> dict:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"count": 0}
    return {"count": int(v.size), "mean_ms": float(v.mean() * 1e3), "p50_ms": float(np.percentile(v, 50) * 1e3),
            "p95_ms": float(np.percentile(v, 95) * 1e3), "max_ms": float(v.max() * 1e3)}


def first_chunk(chunks, arrivals, log) -> dict | None:
    """When the episode's first chunk was observed and when it arrived, in sim steps from the episode start.

    ``chunks``: (observation time s, dt, data, latency) in arrival order; ``arrivals``: the sim's
    step at each arrival; ``log``: the bridge's step log (its first time is the episode start).
    """
    if not chunks or not log.times:
        return None
    t_obs, dt = chunks[0][0], chunks[0][1]
    return {"observation_step": int(round((t_obs - log.times[0]) / dt)), "arrival_step": int(arrivals[0])}


def save_steps(path: Path, times, state, target, reward) -> None:
    """One episode's per-step record (``sim eval --save-steps``): times, state and target [N, 14], reward."""
    n = min(len(times), len(state))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, times=np.asarray(times[:n]), state=np.asarray(state[:n]),
                     target=np.asarray(target), reward=np.asarray(reward))


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


PANEL = 224  # each camera's height in the rollout video, px


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=14)


def video_frame(images: dict[str, np.ndarray], lines: list[str], panel: int = PANEL) -> np.ndarray:
    """The cameras side by side (each scaled to ``panel`` px high), under a band with ``lines`` of text."""
    from PIL import Image, ImageDraw

    tiles = [Image.fromarray(np.asarray(img, dtype=np.uint8)).resize(
        (round(img.shape[1] * panel / img.shape[0]), panel), Image.Resampling.BILINEAR) for img in images.values()]
    font = _font()
    band = 6 + 18 * (len(lines) + 1)
    width = sum(t.width for t in tiles)
    canvas = Image.new("RGB", (width + width % 2, panel + band + (panel + band) % 2), (20, 20, 20))
    x = 0
    draw = ImageDraw.Draw(canvas)
    for name, tile in zip(images, tiles):
        canvas.paste(tile, (x, band))
        draw.text((x + 4, band + 2), name, fill=(255, 255, 0), font=font)
        x += tile.width
    for i, line in enumerate(lines):
        draw.text((6, 4 + 18 * i), line, fill=(235, 235, 235), font=font)
    return np.asarray(canvas)


def rollout_video(path: Path, frames: list[tuple[int, dict[str, np.ndarray]]], rewards, task, instruction: str,
                  fps: float) -> None:
    """The episode's video: ``frames`` are (step, {camera: image}); ``rewards[k]`` the task's reward after step k."""
    from clap_train.data.video import write_mp4

    best = max(rewards, default=0)
    success = best >= task.max_reward
    end = next((k + 1 for k, r in enumerate(rewards) if r >= task.max_reward), len(rewards))
    stages = task.stages or tuple(str(r) for r in range(task.max_reward + 1))
    outcome = (f"outcome: SUCCESS at step {end}" if success else
               f"outcome: FAILED, max reward {best}/{task.max_reward} ({stages[best]})")
    out = []
    for step, images in frames:
        reward = int(rewards[step - 1]) if 0 < step <= len(rewards) else 0
        out.append(video_frame(images, [f"{task.name}: \"{instruction}\"",
                                        f"step {step}   reward {reward}/{task.max_reward}: {stages[reward]}",
                                        outcome]))
    write_mp4(path, out, fps=fps)
