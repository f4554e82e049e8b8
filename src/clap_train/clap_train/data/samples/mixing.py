"""Several datasets as one training set: mixing weights, one normaliser, and checks that they fit.

* :class:`DatasetMix`: datasets of one kind (robot, or human videos) as one dataset. Sample ``i``
  draws its dataset with probability proportional to the dataset's weight, then a frame of it
  uniformly, from a generator seeded by ``(seed, i)``: deterministic in ``i``, so a resumed run
  (whose batches depend only on the seed and the step) sees the same samples. Its length is the
  datasets' total, so one pass draws about as many samples as there are frames. Each sample is
  the dataset's own (its instruction, subtask, cameras) and says which dataset it came from
  (``dataset_index``).
* :class:`MixedDataset`: robot and human samples with a fixed human fraction (the same rule).
* :func:`shared_stats`: exact state and action statistics over every frame of several robot
  datasets (each frame on its state's Euler branch, as the converter computes ``meta/stats.json``),
  so that datasets of one embodiment share one normaliser.
* :func:`check_robot` / :func:`check_human`: a bad mix (an empty dataset, another action layout,
  another camera set, a robot dataset among the human videos) is an error naming the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from clap_train.data.rotations import canonical_branch
from clap_train.data.stats import vector_stats

STATE_KEY, ACTION_KEY = "observation.state", "action"


class MixError(ValueError):
    """Datasets that cannot be trained on together; the message names the dataset."""


def _name(ds: Any) -> str:
    return str(getattr(ds, "root", ds))


def check_robot(datasets: Sequence[Any]) -> None:
    """Raise MixError unless every dataset has actions, frames, and the first one's layout and cameras."""
    for ds in datasets:
        if not ds.is_robot:
            raise MixError(f"{_name(ds)}: no '{ACTION_KEY}' feature in meta/info.json: not a robot dataset "
                           "(human videos go in human_datasets / --human-dataset)")
        if len(ds) == 0:
            raise MixError(f"{_name(ds)}: empty dataset (0 frames)")
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.layout != first.layout:
            raise MixError(f"{_name(ds)}: action layout {ds.layout.names} differs from {_name(first)}'s "
                           f"{first.layout.names}; datasets of one embodiment share one layout")
        if set(ds.camera_keys) != set(first.camera_keys):
            raise MixError(f"{_name(ds)}: cameras {sorted(ds.camera_keys)} differ from {_name(first)}'s "
                           f"{sorted(first.camera_keys)}")


def check_human(datasets: Sequence[Any]) -> None:
    """Raise MixError unless every dataset is a human-video dataset with frames and a head camera."""
    for ds in datasets:
        if ds.is_robot:
            raise MixError(f"{_name(ds)}: has '{ACTION_KEY}': a robot dataset given as human videos "
                           "(robot datasets go in datasets / --dataset)")
        if len(ds) == 0:
            raise MixError(f"{_name(ds)}: empty dataset (0 frames)")
        if "head" not in ds.camera_keys:
            raise MixError(f"{_name(ds)}: no observation.images.head video: human videos are head-camera views")


def shared_stats(datasets: Sequence[Any]) -> dict[str, dict[str, list]]:
    """Exact statistics of ``observation.state`` and ``action`` over every frame of ``datasets``.

    Each frame's Euler angles are on the branch that wraps its state to [-pi, pi), as in the
    converter's ``meta/stats.json``; for one dataset the two agree.
    """
    states, actions = [], []
    for ds in datasets:
        s, a = canonical_branch(ds.frames(STATE_KEY), ds.frames(ACTION_KEY), ds.layout.euler_indices)
        states.append(s)
        actions.append(a)
    return {STATE_KEY: vector_stats(np.concatenate(states)), ACTION_KEY: vector_stats(np.concatenate(actions))}


class DatasetMix(Dataset):
    """Datasets of one kind drawn by weight (see the module docstring); ``raw`` and ``action_space`` pass through."""

    def __init__(self, parts: Sequence[Dataset], weights: Sequence[float], seed: int = 0):
        if not parts or len(parts) != len(weights):
            raise ValueError(f"need one weight per dataset, got {len(parts)} datasets and {len(weights)} weights")
        w = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"mixing weights must be positive, got {list(weights)}")
        self.parts, self.seed = list(parts), seed
        self.probabilities = w / w.sum()
        self._len = sum(len(p) for p in self.parts)

    def __len__(self) -> int:
        return self._len

    def locate(self, i: int) -> tuple[int, int]:
        """(dataset, frame) of sample ``i``."""
        rng = np.random.default_rng([self.seed, 1, int(i)])
        k = int(rng.choice(len(self.parts), p=self.probabilities))
        return k, int(rng.integers(len(self.parts[k])))

    def __getitem__(self, i: int) -> dict:
        k, j = self.locate(i)
        return self.parts[k][j]

    def raw(self, i: int):
        k, j = self.locate(i)
        return self.parts[k].raw(j)

    def subtasks_around(self, i: int, radius: int) -> tuple[str, ...]:
        k, j = self.locate(i)
        return self.parts[k].subtasks_around(j, radius)

    @property
    def layout(self):
        return self.parts[0].layout

    @property
    def action_space(self):
        return self.parts[0].action_space

    @action_space.setter
    def action_space(self, space) -> None:
        for part in self.parts:
            part.action_space = space


class MixedDataset(Dataset):
    """Robot and human samples mixed with a fixed human fraction; sample i is deterministic in i.

    Length: enough draws that the robot data is seen about once per pass. Each index picks its
    source and its frame with a generator seeded by the index, so a resumed run (whose batches
    depend only on the seed and the step) sees the same samples.
    """

    def __init__(self, robot: Dataset, human: Dataset | None, human_fraction: float = 0.5, seed: int = 0):
        if not 0.0 <= human_fraction < 1.0:
            raise ValueError(f"human_fraction must be in [0, 1), got {human_fraction}")
        if human_fraction > 0 and (human is None or len(human) == 0):
            raise ValueError("human_fraction > 0 needs a non-empty human dataset")
        if len(robot) == 0:
            raise ValueError("the robot dataset is empty")
        self.robot, self.human, self.human_fraction, self.seed = robot, human, human_fraction, seed
        self._len = int(np.ceil(len(robot) / (1.0 - human_fraction)))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        if self.human is not None and rng.random() < self.human_fraction:
            return self.human[int(rng.integers(len(self.human)))]
        return self.robot[int(rng.integers(len(self.robot)))]
