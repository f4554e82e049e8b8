"""Per-dimension normalisation of state and action vectors: [q01, q99] -> [-1, 1].

The statistics come from a dataset's ``meta/stats.json`` (LeRobot format, with quantiles q01
and q99 per dimension). A checkpoint stores :meth:`Normalizer.to_dict` so that the deployed
policy de-normalises with exactly the numbers it was trained with. Values outside [q01, q99]
map linearly outside [-1, 1] (no clipping unless asked).

A dimension that barely varies gets a floor on its half-range (``min_half``, 1e-3 robot units:
a millimetre, a milliradian), as ACT floors its standard deviation at 0.01. A dimension that
never varies then maps to 0, and a model's output there, whatever it is (a flow head returns
some of its input noise on a dimension it has no signal for), comes back within a few
millimetres of the constant instead of a full unit away from it.

Written by hand: it is a dozen lines of arithmetic on numpy arrays or torch tensors, and
LeRobot's own normaliser lives inside its policy modules (not importable here).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

DEFAULT_KEYS = ("observation.state", "action")


class Normalizer:
    """Maps each dimension's [q01, q99] to [-1, 1] for a few features (``observation.state``, ``action``)."""

    def __init__(self, low: Mapping[str, Any], high: Mapping[str, Any], min_half: float = 1e-3):
        if set(low) != set(high):
            raise ValueError(f"low and high name different features: {sorted(low)} vs {sorted(high)}")
        if min_half <= 0:
            raise ValueError(f"min_half must be positive, got {min_half}")
        self.min_half = float(min_half)
        self.low = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in low.items()}
        self.high = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in high.items()}
        for k in self.low:
            if self.low[k].shape != self.high[k].shape:
                raise ValueError(f"{k}: q01 has shape {self.low[k].shape} but q99 {self.high[k].shape}")
            if np.any(self.high[k] < self.low[k]):
                raise ValueError(f"{k}: q99 < q01 in some dimension")

    @classmethod
    def from_stats(cls, stats: Mapping[str, Mapping[str, Any]], keys: Iterable[str] = DEFAULT_KEYS) -> Normalizer:
        """From a stats dict in the meta/stats.json format; keys missing from ``stats`` are skipped."""
        low, high = {}, {}
        for key in keys:
            if key not in stats:
                continue
            entry = stats[key]
            if "q01" not in entry or "q99" not in entry:
                raise ValueError(f"stats for {key} lack q01/q99 (have {sorted(entry)})")
            low[key], high[key] = entry["q01"], entry["q99"]
        return cls(low, high)

    @classmethod
    def from_stats_file(cls, path: str | pathlib.Path, keys: Iterable[str] = DEFAULT_KEYS) -> Normalizer:
        path = pathlib.Path(path)
        try:
            stats = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read normalisation stats {path}: {exc}") from exc
        try:
            return cls.from_stats(stats, keys)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    @property
    def keys(self) -> list[str]:
        return sorted(self.low)

    def _params(self, key: str, like: Any) -> tuple[Any, Any, Any]:
        if key not in self.low:
            raise KeyError(f"no normalisation stats for {key!r}; have {self.keys}")
        low, high = self.low[key], self.high[key]
        center = (high + low) / 2.0
        half = np.maximum((high - low) / 2.0, self.min_half)
        if like.shape[-1] != low.shape[0]:
            raise ValueError(f"{key}: expected a last axis of {low.shape[0]}, got shape {tuple(like.shape)}")
        if _is_torch(like):
            import torch

            return (torch.as_tensor(center, dtype=like.dtype, device=like.device),
                    torch.as_tensor(half, dtype=like.dtype, device=like.device))
        dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64
        return center.astype(dtype), half.astype(dtype)

    def normalize(self, key: str, x: Any, clip: bool = False) -> Any:
        """Robot units -> [-1, 1] (numpy array or torch tensor, last axis = feature dim)."""
        x = x if _is_torch(x) else np.asarray(x)
        center, half = self._params(key, x)
        y = (x - center) / half
        if clip:
            y = y.clamp(-1, 1) if _is_torch(y) else np.clip(y, -1, 1)
        return y

    def unnormalize(self, key: str, y: Any) -> Any:
        """[-1, 1] -> robot units."""
        y = y if _is_torch(y) else np.asarray(y)
        center, half = self._params(key, y)
        return y * half + center

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {k: {"q01": self.low[k].tolist(), "q99": self.high[k].tolist()} for k in self.keys}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> Normalizer:
        return cls.from_stats(data, keys=list(data))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")
