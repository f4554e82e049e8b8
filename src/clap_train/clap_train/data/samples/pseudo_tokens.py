"""VD-VAE pseudo action tokens of a human-video dataset: the sidecar ``meta/pseudo_tokens.parquet``.

``clap label-videos`` writes it (``write_sidecar``); the NTP and RF stages read it
(``WithPseudoTokens``). Columns: ``episode_index`` (int64), ``frame_index`` (int64) and
``action_tokens`` (list<int64>, Nq entries), plus schema metadata (``vd_vae``, ``num_queries``,
``codebook_size``). A sidecar, not a new column in the frame parquet files, so that the dataset's
own files (and LeRobot's checks of them) are untouched and relabelling is one atomic file replace.
"""

from __future__ import annotations

import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from clap_train.io import atomic_path

SIDECAR = pathlib.Path("meta") / "pseudo_tokens.parquet"


def token_table(rows) -> pa.Table:
    """The sidecar's columns from ``(episode_index, frame_index, tokens)`` rows, sorted by episode, frame."""
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    return pa.table({
        "episode_index": pa.array([r[0] for r in rows], pa.int64()),
        "frame_index": pa.array([r[1] for r in rows], pa.int64()),
        "action_tokens": pa.array([list(r[2]) for r in rows], pa.list_(pa.int64())),
    })


def write_sidecar(table: pa.Table, root: pathlib.Path, meta: dict[str, str]) -> pathlib.Path:
    path = root / SIDECAR
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{k: str(v) for k, v in meta.items()}})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_pseudo_tokens(root: str | pathlib.Path) -> dict[tuple[int, int], list[int]]:
    """{(episode_index, frame_index): tokens} from a dataset's sidecar (for the NTP stage)."""
    path = pathlib.Path(root) / SIDECAR
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `clap label-videos --dataset {root}` first")
    t = pq.read_table(path).to_pydict()
    return {(e, f): list(tok) for e, f, tok in zip(t["episode_index"], t["frame_index"], t["action_tokens"])}


class WithPseudoTokens(Dataset):
    """A contract-3 dataset whose samples gain ``action_tokens`` ([Nq] long; -1 = not labelled).

    The NTP stage reads human targets from that key; this wrapper attaches them from a labelled
    dataset's sidecar (``root``) or a ``{(episode_index, frame_index): tokens}`` mapping.
    """

    def __init__(self, base: Dataset, tokens: str | pathlib.Path | dict[tuple[int, int], list[int]]):
        self.base = base
        self.tokens = tokens if isinstance(tokens, dict) else read_pseudo_tokens(tokens)
        self.num_queries = len(next(iter(self.tokens.values()))) if self.tokens else 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        sample = dict(self.base[i])
        toks = self.tokens.get((int(sample["episode_index"]), int(sample["frame_index"])))
        sample["action_tokens"] = (torch.tensor(toks, dtype=torch.long) if toks is not None
                                   else torch.full((self.num_queries,), -1, dtype=torch.long))
        return sample
