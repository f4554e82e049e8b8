"""``clap label-videos``: write VD-VAE pseudo action tokens into a human-video dataset (NTP input).

For every frame t of every episode the trained VD-VAE tokenises the transition (o_t, o_{t+H})
(head camera; t+H clamped to the episode end by the loader) into Nq tokens of the Act-VAE
vocabulary. The tokens go to a sidecar table ``meta/pseudo_tokens.parquet`` of the dataset with
columns ``episode_index`` (int64), ``frame_index`` (int64) and ``action_tokens`` (list<int64>, Nq
entries), plus the schema metadata ``vd_vae`` (the model folder) and ``num_queries`` /
``codebook_size``. A sidecar, not a new column in the frame parquet files, so that the dataset's
own files (and LeRobot's checks of them) are untouched and relabelling with a newer VD-VAE is one
atomic file replace. ``--synthetic N`` labels N synthetic human episodes instead (written to
``--out DIR/meta/pseudo_tokens.parquet``), for demos and tests.

    clap label-videos --vd-vae runs/vd_vae/vd_vae --dataset data/human_videos
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from clap_train.io import atomic_path

SIDECAR = pathlib.Path("meta") / "pseudo_tokens.parquet"


def label(model, dataset, batch_size: int = 64, num_workers: int = 0, progress: bool = True) -> pa.Table:
    """Tokenise every sample of ``dataset`` (contract-3 samples); a table sorted by episode, frame."""
    from clap_train.data.dataset import collate_samples

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_samples)
    eps, frames, tokens = [], [], []
    model.eval()
    device = next(model.inverse.parameters()).device
    with torch.no_grad():
        for batch in tqdm(loader, desc="label-videos", disable=not progress, dynamic_ncols=True):
            toks = model.tokenize(batch["images"]["head"].to(device), batch["future_head"].to(device))
            eps += batch["episode_index"].tolist()
            frames += batch["frame_index"].tolist()
            tokens += toks.cpu().tolist()
    order = sorted(range(len(eps)), key=lambda i: (eps[i], frames[i]))
    return pa.table({
        "episode_index": pa.array([eps[i] for i in order], pa.int64()),
        "frame_index": pa.array([frames[i] for i in order], pa.int64()),
        "action_tokens": pa.array([tokens[i] for i in order], pa.list_(pa.int64())),
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vd-vae", required=True, type=pathlib.Path, help="trained VD-VAE folder")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=pathlib.Path, help="human-video LeRobot dataset to label (in place)")
    src.add_argument("--synthetic", type=int, metavar="N", help="label N synthetic human episodes")
    parser.add_argument("--out", type=pathlib.Path, help="output root for --synthetic")
    parser.add_argument("--episode-len", type=int, default=150, help="frames per synthetic episode")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from clap_train.models.vd_vae import VDVAE
    from clap_train.train.act_vae import open_dataset

    try:
        model = VDVAE.from_pretrained(args.vd_vae).to(args.device)
        cfg, act = model.config, model.act_vae.config
        if args.synthetic is not None:
            if args.out is None:
                raise ValueError("--synthetic needs --out DIR")
            root = args.out
            ds, _ = open_dataset(None, args.synthetic, act.chunk_len, act.chunk_len, cfg.image_size, human=True,
                                 seed=424_242, episode_len=args.episode_len)
        else:
            root = args.dataset
            ds, _ = open_dataset(str(root), None, act.chunk_len, act.chunk_len, cfg.image_size)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"clap label-videos: {exc}", file=sys.stderr)
        return 2
    table = label(model, ds, args.batch_size, args.num_workers, progress=not args.no_progress)
    path = write_sidecar(table, pathlib.Path(root), {"vd_vae": str(args.vd_vae), "num_queries": act.num_queries,
                                                     "codebook_size": act.codebook_size})
    print(f"label-videos: {table.num_rows} frames labelled with {act.num_queries} tokens each -> {path}")
    return 0
