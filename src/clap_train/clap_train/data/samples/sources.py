"""Opening the datasets a training stage or an evaluation reads: one place for every job.

Every stage config has the keys of :class:`DataKeys`: ``datasets`` and ``human_datasets``, lists
of ``{path, weight}`` (``--dataset DIR`` / ``--human-dataset DIR`` on the command line are
one-element lists), and the shape of synthetic data. ``Sources`` is what a stage reads, as the
runner resolved it from the config and the command line.

* ``open_robot`` opens the robot datasets: one is used as it is (with its own ``meta/stats.json``);
  several are checked against each other (samples/mixing.py: same layout, same cameras, none
  empty), share one normaliser computed over all of them, and are drawn by weight.
* ``open_human`` opens the human-video datasets the same way (their pseudo tokens attached when
  asked: ``meta/pseudo_tokens.parquet``).
* ``open_mixed`` gives robot (+ human) samples with token targets (the NTP and RF stages' input);
  ``ActionChunks`` narrows a dataset to its action chunks (the Act-VAE's input).
* ``open_dataset`` opens one dataset folder (the evaluations).

``--synthetic N`` is no dataset of its own: ``synthetic_dataset`` (data/recording/synthetic.py)
writes N scripted episodes as a LeRobot dataset once, and it is opened like any other.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from clap_train.config import ConfigError
from clap_train.data.samples.action_space import ActionSpace
from clap_train.data.samples.mixing import DatasetMix, MixedDataset, check_human, check_robot, shared_stats


@dataclasses.dataclass
class DatasetEntry:
    """One dataset of a mix: its folder and its mixing weight (relative to the others of its kind)."""

    path: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"dataset {self.path}: weight must be > 0, got {self.weight}")


@dataclasses.dataclass
class DataKeys:
    """The data keys of every stage's config (the stage configs inherit them)."""

    datasets: list[DatasetEntry] = dataclasses.field(default_factory=list)  # robot datasets
    human_datasets: list[DatasetEntry] = dataclasses.field(default_factory=list)  # human-video datasets
    synthetic_episode_len: int = 150  # frames per episode of --synthetic N
    synthetic_seed: int = 0


@dataclasses.dataclass(frozen=True)
class Sources:
    """What a stage reads: robot datasets or N synthetic episodes, optional human datasets or N synthetic ones."""

    robot: tuple[DatasetEntry, ...] = ()
    human: tuple[DatasetEntry, ...] = ()
    synthetic: int | None = None
    human_synthetic: int | None = None

    def __post_init__(self) -> None:
        if bool(self.robot) == (self.synthetic is not None):
            raise ConfigError("give the robot data once: --dataset DIR (or datasets: in the config) or --synthetic N")
        if self.human and self.human_synthetic is not None:
            raise ConfigError("give the human videos once: --human-dataset DIR (or human_datasets:) or "
                              "--human-synthetic N")

    @property
    def has_human(self) -> bool:
        return bool(self.human) or self.human_synthetic is not None


class ActionChunks(Dataset):
    """Only the (action, action_pad) of a contract-3 dataset; robot samples only."""

    def __init__(self, base: Any):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.base[i]
        return {"action": s["action"], "action_pad": s["action_pad"]}


def open_dataset(path: str | pathlib.Path, chunk_len: int, future_offset: int = 32, image_size: int = 224, *,
                 images: bool = True, stats: dict[str, Any] | None = None, action_space: ActionSpace | None = None,
                 progress: bool = True, dataset_index: int = 0):
    """One LeRobot dataset folder as a ``ClapDataset``.

    ``stats`` (meta/stats.json format) replaces its own normalisation; ``action_space`` (the
    Act-VAE's) sets how its action chunks are represented and normalised.
    """
    from clap_train.data.samples.dataset import ClapDataset

    root = pathlib.Path(path)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{root} is not a LeRobot dataset (no meta/info.json)")
    ds = ClapDataset(root, chunk_len=chunk_len, future_offset=future_offset, image_size=image_size,
                     load_images=images, progress=progress, dataset_index=dataset_index)
    if stats is not None and ds.is_robot:
        ds.use_stats(stats)
    if action_space is not None and ds.is_robot:
        ds.action_space = action_space
    return ds


def _entries(entries: Sequence[DatasetEntry], synthetic: int | None, cfg: Any, seed: int, image_size: int | None,
             human: bool, progress: bool) -> list[DatasetEntry]:
    """The datasets to open; ``synthetic`` N: the synthetic dataset of N episodes (built once)."""
    if synthetic is None:
        return list(entries)
    from clap_train.data.recording.synthetic import synthetic_dataset

    root = synthetic_dataset(synthetic, seed=seed, episode_len=cfg.synthetic_episode_len, image_size=image_size,
                             human=human, progress=progress)
    return [DatasetEntry(str(root))]


def open_robot(sources: Sources, cfg: Any, chunk_len: int, image_size: int = 224, *, future_offset: int = 32,
               images: bool = True, action_space: ActionSpace | None = None, progress: bool = True):
    """The robot datasets as one dataset, and the statistics of its normaliser.

    One dataset keeps its own ``meta/stats.json``; several share the exact statistics of all
    their frames. ``action_space`` (the Act-VAE's) replaces the absolute space of those stats.
    """
    entries = _entries(sources.robot, sources.synthetic, cfg, cfg.synthetic_seed, image_size if images else None,
                       False, progress)
    parts = [open_dataset(e.path, chunk_len, future_offset, image_size, images=images, progress=progress,
                          dataset_index=k) for k, e in enumerate(entries)]
    check_robot(parts)
    if len(parts) == 1:
        stats = _read_stats(parts[0])
    else:
        stats = shared_stats(parts)
        for part in parts:
            part.use_stats(stats)
    data = parts[0] if len(parts) == 1 else DatasetMix(parts, [e.weight for e in entries], seed=0)
    if action_space is not None:
        data.action_space = action_space
    return data, stats


def _read_stats(ds) -> dict[str, Any]:
    path = ds.root / "meta" / "stats.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def open_human(sources: Sources, cfg: Any, chunk_len: int, image_size: int = 224, *, future_offset: int = 32,
               seed: int, layout=None, tokens: bool = False, progress: bool = True):
    """The human-video datasets as one dataset (None when there are none).

    ``seed``: of ``--human-synthetic`` episodes; ``layout``: the robot datasets' (the shape of the
    zero actions); ``tokens``: attach each dataset's VD-VAE pseudo tokens (``clap label-videos``),
    or warn that its samples train on their subtask text only.
    """
    if not sources.has_human:
        return None
    from clap_train.data.samples.pseudo_tokens import SIDECAR, WithPseudoTokens

    entries = _entries(sources.human, sources.human_synthetic, cfg, seed, image_size, True, progress)
    parts = [open_dataset(e.path, chunk_len, future_offset, image_size, progress=progress, dataset_index=k)
             for k, e in enumerate(entries)]
    check_human(parts)
    out = []
    for entry, part in zip(entries, parts):
        part.layout = layout
        if tokens and sources.human_synthetic is None:
            if (pathlib.Path(entry.path) / SIDECAR).is_file():
                part = WithPseudoTokens(part, entry.path)
            else:
                print(f"warning: {pathlib.Path(entry.path) / SIDECAR} not found: human samples train on their "
                      "subtask text only (run clap label-videos first)", file=sys.stderr)
        out.append(part)
    return out[0] if len(out) == 1 else DatasetMix(out, [e.weight for e in entries], seed=1)


class TokenTargets(Dataset):
    """Gives every sample an ``action_tokens`` entry ([Nq] long, -1 = none).

    Robot samples and labelled human samples then collate into one batch.
    """

    def __init__(self, base: Dataset, num_queries: int):
        self.base, self.num_queries = base, num_queries

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.base[i])
        if "action_tokens" not in sample:
            sample["action_tokens"] = torch.full((self.num_queries,), -1, dtype=torch.long)
        return sample

    def subtasks_around(self, i: int, radius: int) -> tuple[str, ...]:
        return self.base.subtasks_around(i, radius)


def open_mixed(sources: Sources, cfg: Any, chunk_len: int, image_size: int, num_queries: int,
               space: ActionSpace | None, human: bool = True, progress: bool = True,
               mirror: bool = False) -> tuple[Dataset, ActionSpace]:
    """Robot (+ human) datasets as one contract-3 dataset, and the action space of its robot actions.

    ``cfg`` gives the data keys and ``human_fraction``. ``space`` is the Act-VAE's; None (an
    Act-VAE exported without one) keeps the datasets' own absolute space. ``mirror``: the robot
    samples are followed by their mirror images (samples/mirror.py).
    """
    robot, _ = open_robot(sources, cfg, chunk_len, image_size, action_space=space, progress=progress)
    space = robot.action_space
    layout = robot.layout
    if mirror:
        from clap_train.data.samples.mirror import Mirrored

        robot = Mirrored(robot)
    if not human or not sources.has_human:
        return TokenTargets(robot, num_queries), space
    people = open_human(sources, cfg, chunk_len, image_size, seed=cfg.synthetic_seed + 1, layout=layout,
                        tokens=True, progress=progress)
    return MixedDataset(TokenTargets(robot, num_queries), TokenTargets(people, num_queries), cfg.human_fraction), space
