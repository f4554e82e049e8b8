"""Opening the datasets a training stage or an evaluation reads: one place for every job.

``open_dataset`` gives a contract-3 dataset (``ClapDataset`` on a LeRobot folder, or scripted
``SyntheticDataset`` episodes) and its stats; ``ActionChunks`` narrows one to its action chunks
(the Act-VAE's input); ``open_mixed`` gives robot (+ human) samples with token targets (the NTP
and RF stages' input). ``Sources`` names where the samples come from, as the stage CLI gives it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Any

import torch
from torch.utils.data import Dataset

from clap_train.config import ConfigError
from clap_train.data.samples.action_space import ActionSpace


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where a stage's samples come from: a robot dataset or N synthetic episodes, optional human data."""

    dataset: str | None = None
    synthetic: int | None = None
    human_dataset: str | None = None
    human_synthetic: int | None = None


class ActionChunks(Dataset):
    """Only the (action, action_pad) of a contract-3 dataset; robot samples only."""

    def __init__(self, base: Any):
        self.base = base
        if hasattr(base, "chunk"):  # SyntheticDataset: no rendering needed
            self._get = lambda i: base.chunk(i)
        else:
            self._get = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._get is not None:
            chunk, pad = self._get(i)
            return {"action": torch.as_tensor(chunk), "action_pad": torch.as_tensor(pad)}
        s = self.base[i]
        return {"action": s["action"], "action_pad": s["action_pad"]}


def open_dataset(dataset: str | None, synthetic: int | None, chunk_len: int, future_offset: int = 32,
                 image_size: int = 224, *, images: bool = True, episode_len: int = 150, seed: int = 0,
                 human: bool = False, stats: dict[str, Any] | None = None, action_space: ActionSpace | None = None,
                 progress: bool = True):
    """A contract-3 dataset: ClapDataset(DIR) or SyntheticDataset(N); returns (dataset, stats dict).

    ``action_space`` (the Act-VAE's) sets how its action chunks are represented and normalised.
    """
    ds, stats_out = _open_dataset(dataset, synthetic, chunk_len, future_offset, image_size, images=images,
                                  episode_len=episode_len, seed=seed, human=human, stats=stats, progress=progress)
    if action_space is not None and getattr(ds, "action_space", None) is not None:
        ds.action_space = action_space
    return ds, stats_out


def _open_dataset(dataset, synthetic, chunk_len, future_offset, image_size, *, images, episode_len, seed, human,
                  stats, progress):
    if (dataset is None) == (synthetic is None):
        raise ConfigError("give exactly one of --dataset DIR or --synthetic N")
    if synthetic is not None:
        from clap_train.data.recording.synthetic import SyntheticDataset

        ds = SyntheticDataset(synthetic, seed=seed, episode_len=episode_len, chunk_len=chunk_len,
                              future_offset=future_offset, image_size=image_size, images=images, human=human,
                              stats=stats)
        return ds, ds.stats
    root = pathlib.Path(dataset)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{root} is not a LeRobot dataset (no meta/info.json)")
    from clap_train.data.samples.dataset import ClapDataset

    ds = ClapDataset(root, chunk_len=chunk_len, future_offset=future_offset, image_size=image_size,
                     load_images=images, progress=progress)
    stats_path = root / "meta" / "stats.json"
    stats_out = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    return ds, stats_out


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


def open_mixed(sources: Sources, cfg: Any, chunk_len: int, image_size: int, num_queries: int,
               space: ActionSpace | None, human: bool = True, progress: bool = True) -> tuple[Dataset, ActionSpace]:
    """Robot (+ human) datasets as one contract-3 dataset, and the action space of its robot actions.

    ``cfg`` gives ``synthetic_episode_len``, ``synthetic_seed`` and ``human_fraction``. ``space``
    is the Act-VAE's; None (an Act-VAE exported without one) keeps the dataset's own absolute space.

    A human dataset's VD-VAE pseudo tokens come from its ``meta/pseudo_tokens.parquet`` sidecar
    (``clap label-videos``); without one its samples train on their subtask text only.
    """
    from clap_train.data.samples.dataset import MixedDataset
    from clap_train.data.samples.pseudo_tokens import SIDECAR, WithPseudoTokens

    robot, stats = open_dataset(sources.dataset, sources.synthetic, chunk_len, image_size=image_size,
                                episode_len=cfg.synthetic_episode_len, seed=cfg.synthetic_seed, action_space=space,
                                progress=progress)
    space = robot.action_space
    robot = TokenTargets(robot, num_queries)
    if not human or (sources.human_dataset is None and sources.human_synthetic is None):
        return robot, space
    people, _ = open_dataset(sources.human_dataset, sources.human_synthetic, chunk_len, image_size=image_size,
                             episode_len=cfg.synthetic_episode_len, seed=cfg.synthetic_seed + 1, human=True,
                             stats=stats if sources.human_synthetic is not None else None, progress=progress)
    if sources.human_dataset is not None:
        if (pathlib.Path(sources.human_dataset) / SIDECAR).is_file():
            people = WithPseudoTokens(people, sources.human_dataset)
        else:
            print(f"warning: {pathlib.Path(sources.human_dataset) / SIDECAR} not found: human samples train on "
                  "their subtask text only (run clap label-videos first)", file=sys.stderr)
    return MixedDataset(robot, TokenTargets(people, num_queries), cfg.human_fraction), space
