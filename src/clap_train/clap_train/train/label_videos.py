"""``clap label-videos``: write VD-VAE pseudo action tokens into a human-video dataset (NTP input).

For every frame t of every episode the trained VD-VAE tokenises the transition (o_t, o_{t+H})
(head camera; t+H clamped to the episode end by the loader) into Nq tokens of the Act-VAE
vocabulary. The tokens go to the dataset's sidecar table ``meta/pseudo_tokens.parquet``
(data/samples/pseudo_tokens.py says its format; the NTP and RF stages read it there). ``--synthetic N``
labels N synthetic human episodes instead (written to ``--out DIR/meta/pseudo_tokens.parquet``),
for demos and tests.

    clap label-videos --vd-vae runs/vd_vae/vd_vae --dataset data/human_videos
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from clap_train.data.samples.pseudo_tokens import token_table, write_sidecar


def label(model, dataset, batch_size: int = 64, num_workers: int = 0, progress: bool = True) -> pa.Table:
    """Tokenise every sample of ``dataset`` (contract-3 samples); a table sorted by episode, frame.

    Under ``torchrun`` / ``accelerate launch`` each process labels its own contiguous share of the
    samples and every process returns the whole table (gathered).
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from clap_train.data.samples.dataset import collate_samples

    state = PartialState()
    rows = []
    model.eval()
    device = next(model.inverse.parameters()).device
    with state.split_between_processes(list(range(len(dataset)))) as mine:
        loader = DataLoader(Subset(dataset, mine), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=collate_samples)
        with torch.no_grad():
            for batch in tqdm(loader, desc="label-videos", disable=not (progress and state.is_main_process),
                              dynamic_ncols=True):
                toks = model.tokenize(batch["images"]["head"].to(device), batch["future_head"].to(device))
                rows += zip(batch["episode_index"].tolist(), batch["frame_index"].tolist(), toks.cpu().tolist())
    if state.num_processes > 1:
        rows = gather_object(rows)
    return token_table(rows)


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
    from clap_train.data.recording.synthetic import synthetic_dataset
    from clap_train.data.samples.sources import open_dataset
    from clap_train.models.vd_vae import VDVAE

    try:
        device = args.device
        if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process
            device = f"cuda:{os.environ['LOCAL_RANK']}"
        model = VDVAE.from_pretrained(args.vd_vae).to(device)
        cfg, act = model.config, model.act_vae.config
        if args.synthetic is not None:
            if args.out is None:
                raise ValueError("--synthetic needs --out DIR")
            root = args.out
            videos = synthetic_dataset(args.synthetic, seed=424_242, episode_len=args.episode_len,
                                       image_size=cfg.image_size, human=True)
        else:
            root = videos = args.dataset
        ds = open_dataset(videos, act.chunk_len, act.chunk_len, cfg.image_size, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"clap label-videos: {exc}", file=sys.stderr)
        return 2
    table = label(model, ds, args.batch_size, args.num_workers, progress=not args.no_progress)
    from clap_train.train.loop import is_main_process

    if not is_main_process():  # several processes: rank 0 writes the gathered table
        return 0
    path = write_sidecar(table, pathlib.Path(root), {"vd_vae": str(args.vd_vae), "num_queries": act.num_queries,
                                                     "codebook_size": act.codebook_size})
    print(f"label-videos: {table.num_rows} frames labelled with {act.num_queries} tokens each -> {path}")
    return 0
