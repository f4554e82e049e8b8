"""Feature statistics for meta/stats.json (LeRobot's keys: min, max, mean, std, count, q01..q99).

Vectors (state, action) get exact statistics over every frame of the dataset: they are small
(14 floats a frame), so the converter recomputes them from all episodes when it finalises.
Images get per-channel statistics from a sample of frames per episode (shape [3, 1, 1], values in
[0, 1]) and are pooled across episodes (quantiles as count-weighted means, like LeRobot's own
aggregation). numpy does the arithmetic; LeRobot's compute_stats cannot be imported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QKEYS = ("q01", "q10", "q50", "q90", "q99")


def vector_stats(values: np.ndarray) -> dict[str, list]:
    """Exact stats of [N, D] values along N."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if len(v) == 0:
        raise ValueError("no values to compute statistics of")
    out = {
        "min": v.min(0),
        "max": v.max(0),
        "mean": v.mean(0),
        "std": v.std(0),
        "count": np.array([len(v)]),
    }
    qs = np.quantile(v, QUANTILES, axis=0)
    for key, q in zip(QKEYS, qs):
        out[key] = q
    return {k: np.asarray(x).tolist() for k, x in out.items()}


def image_stats(frames: Sequence[np.ndarray], stride: int = 4) -> dict[str, list]:
    """Per-channel stats of HxWx3 uint8 frames, scaled to [0, 1], shaped [3, 1, 1] like LeRobot's."""
    px = np.concatenate([f[::stride, ::stride].reshape(-1, 3) for f in frames]).astype(np.float64) / 255.0
    s = vector_stats(px)
    out = {k: np.asarray(v).reshape(3, 1, 1).tolist() for k, v in s.items() if k != "count"}
    out["count"] = [len(frames)]
    return out


def pool_stats(parts: Sequence[dict[str, list]]) -> dict[str, list]:
    """Combine per-episode stats (count-weighted; exact for min/max/mean/std)."""
    if not parts:
        raise ValueError("no statistics to pool")
    counts = np.array([p["count"][0] for p in parts], dtype=np.float64)
    w = counts / counts.sum()
    arr = {k: np.stack([np.asarray(p[k], dtype=np.float64) for p in parts]) for k in parts[0] if k != "count"}
    shape = (-1,) + (1,) * (arr["mean"].ndim - 1)
    wb = w.reshape(shape)
    mean = (arr["mean"] * wb).sum(0)
    var = ((arr["std"] ** 2 + (arr["mean"] - mean) ** 2) * wb).sum(0)
    out = {"min": arr["min"].min(0), "max": arr["max"].max(0), "mean": mean, "std": np.sqrt(var)}
    for k in QKEYS:
        if k in arr:
            out[k] = (arr[k] * wb).sum(0)
    res = {k: v.tolist() for k, v in out.items()}
    res["count"] = [int(counts.sum())]
    return res
