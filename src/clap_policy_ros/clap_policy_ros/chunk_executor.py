"""
Executes action chunks at the control rate: open-loop, temporal ensembling, real-time chunking.

Pure Python/numpy (no ROS) so each mode is unit-tested. Steps are integer control ticks; a
chunk predicted from the observation taken at tick ``s`` has its row 0 at tick ``s``. Rows for
ticks that passed while the model ran are skipped, so execution stays aligned with time.

- ``open_loop``: the newest chunk replaces the plan (what naive runners do; jumps at boundaries).
- ``temporal_ensemble``: ACT (Zhao et al. 2023): each tick averages every prediction made for it,
  weights ``exp(-m * i)`` with i = 0 the oldest prediction (m > 0, ACT's 0.01: the oldest weigh most;
  m < 0: the newest, so a change of plan shows sooner); Euler angles are unwrapped against the
  oldest prediction before averaging and re-wrapped after.
- ``rtc``: real-time chunking (Black et al. 2025): executes like open-loop, and hands the policy
  the not-yet-executed rest of the current plan (``prefix_for``) plus the inference delay in
  ticks measured by ``DelayEstimator`` (warm-up calls excluded), so the flow sampler inpaints
  the new chunk onto it.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np
from clap_train.data.rotations import wrap_to_pi
from clap_train.interface import DEFAULT_LAYOUT

EXECUTOR_MODES = ("open_loop", "temporal_ensemble", "rtc")


@dataclasses.dataclass
class ExecutorConfig:
    """How chunks are executed; ``angle_dims``: the Euler-angle columns (the layout's)."""

    mode: str = "rtc"
    chunk_len: int = 32
    action_dim: int = DEFAULT_LAYOUT.dim
    replan_every: int = 10
    ensemble_m: float = 0.01
    angle_dims: tuple[int, ...] = tuple(DEFAULT_LAYOUT.euler_indices)

    def __post_init__(self):
        if self.mode not in EXECUTOR_MODES:
            raise ValueError(f"executor mode {self.mode!r} is not one of {list(EXECUTOR_MODES)}")
        if self.chunk_len < 1 or self.action_dim < 1:
            raise ValueError("chunk_len and action_dim must be >= 1")
        if not 1 <= self.replan_every <= self.chunk_len:
            raise ValueError(
                f"replan_every ({self.replan_every}) must be in [1, chunk_len={self.chunk_len}]")
        if not math.isfinite(self.ensemble_m):
            raise ValueError(f"ensemble_m must be finite, got {self.ensemble_m}")
        if any(not 0 <= d < self.action_dim for d in self.angle_dims):
            raise ValueError(f"angle_dims {self.angle_dims} outside action_dim {self.action_dim}")


@dataclasses.dataclass(frozen=True)
class _Chunk:
    start: int
    actions: np.ndarray


class ChunkExecutor:
    """Holds the plan and returns the action for each control tick."""

    def __init__(self, config: ExecutorConfig):
        self.config = config
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._angle = np.zeros(config.action_dim, dtype=bool)
        self._angle[list(config.angle_dims)] = True

    @property
    def current(self) -> _Chunk | None:
        """Return the newest chunk, or None."""
        return self._chunks[-1] if self._chunks else None

    def clear(self) -> None:
        """Drop every queued action (hold, new instruction, stale camera)."""
        self._chunks.clear()

    def add_chunk(self, actions: np.ndarray, start_step: int) -> None:
        """Add a chunk whose row 0 is the action for tick ``start_step``."""
        actions = np.asarray(actions, dtype=np.float64)
        expected = (self.config.chunk_len, self.config.action_dim)
        if actions.shape != expected:
            raise ValueError(f"chunk shape {actions.shape} != {expected}")
        chunk = _Chunk(int(start_step), actions.copy())
        if self.config.mode == "temporal_ensemble":
            self._chunks.append(chunk)
            while len(self._chunks) > 1 and (
                    self._chunks[0].start + self.config.chunk_len <= chunk.start):
                self._chunks.popleft()
        else:
            self._chunks.clear()
            self._chunks.append(chunk)

    def _row(self, chunk: _Chunk, step: int) -> np.ndarray | None:
        i = step - chunk.start
        if 0 <= i < len(chunk.actions):
            return chunk.actions[i]
        return None

    def action_at(self, step: int) -> np.ndarray | None:
        """Return the action for tick ``step``; None when the plan holds nothing for it."""
        if not self._chunks:
            return None
        if self.config.mode != "temporal_ensemble":
            return self._row(self._chunks[-1], step)
        rows = [r for r in (self._row(c, step) for c in self._chunks) if r is not None]
        if not rows:
            return None
        stacked = np.stack(rows)  # oldest first
        ref = stacked[0]
        delta = stacked[:, self._angle] - ref[self._angle]
        stacked[:, self._angle] = ref[self._angle] + wrap_to_pi(delta)
        weights = np.exp(-self.config.ensemble_m * np.arange(len(rows)))
        out = (weights[:, None] * stacked).sum(0) / weights.sum()
        out[self._angle] = wrap_to_pi(out[self._angle])
        return out

    def remaining(self, step: int) -> int:
        """Count the actions left in the newest chunk from tick ``step`` on (the queue depth)."""
        chunk = self.current
        if chunk is None:
            return 0
        return int(max(0, min(len(chunk.actions), chunk.start + len(chunk.actions) - step)))

    def needs_plan(self, step: int) -> bool:
        """Tell whether a new chunk should be requested at tick ``step``."""
        chunk = self.current
        if chunk is None:
            return True
        return step - chunk.start >= self.config.replan_every or self.remaining(step) == 0

    def prefix_for(self, start_step: int) -> np.ndarray | None:
        """Return (RTC) the plan from tick ``start_step`` on (row 0 = that tick), or None."""
        if self.config.mode != "rtc":
            return None
        chunk = self.current
        if chunk is None:
            return None
        offset = start_step - chunk.start
        if offset < 0 or offset >= len(chunk.actions):
            return None
        return chunk.actions[offset:].astype(np.float32)


class DelayEstimator:
    """
    Inference delay in control ticks, from measured (observation tick -> chunk ready) delays.

    The first ``warmup`` measurements (model cold start: allocation, kernel selection) are not
    counted; the estimate is the largest delay over the last ``window`` measurements.
    """

    def __init__(self, warmup: int = 1, window: int = 10, initial: int = 0):
        if warmup < 0 or window < 1 or initial < 0:
            raise ValueError("warmup >= 0, window >= 1, initial >= 0 required")
        self.warmup = warmup
        self._seen = 0
        self._recent: collections.deque[int] = collections.deque(maxlen=window)
        self._initial = initial

    def record(self, delay_steps: int) -> None:
        """Record one measured delay (ticks between observation and the chunk being usable)."""
        self._seen += 1
        if self._seen <= self.warmup:
            return
        self._recent.append(max(0, int(delay_steps)))

    def record_seconds(self, seconds: float, dt: float) -> None:
        """Record a delay given in seconds at control period ``dt``."""
        self.record(math.ceil(seconds / dt - 1e-9))

    @property
    def delay(self) -> int:
        """Return the current estimate in ticks."""
        return max(self._recent) if self._recent else self._initial
