"""``clap train act-vae``: train the Act-VAE action codebook (CLAP Alg. 1) through the shared loop.

Data: the unified LeRobot dataset (``--dataset DIR``, read with ClapDataset) or scripted synthetic
episodes (``--synthetic N``). Only the normalised action chunk and its padding mask are used.
The codebook has its own learning rate (a separate optimiser param group). Codebook health is
logged every step (perplexity, dead codes) and dead codes are re-seeded from recent encoder
outputs every ``reseed_every`` steps, because a collapsed codebook silently ruins every later
stage. Before training the stage fits the action space (``actions``: ``relative`` per-arm deltas to
the state, or ``absolute`` poses; see data/action_space.py) on the dataset; every later stage and
the deployed policy use that space. At the end the model is exported to ``RUN_DIR/act_vae``
(config.json, model.safetensors, action_space.json, and the dataset's stats.json).

    clap train act-vae --config config/train/act_vae.yaml --synthetic 200 --run-dir runs/act_vae
    clap train act-vae --config ... --run-dir runs/act_vae --resume     # after a crash / kill -9
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
from typing import Any

import torch
from torch.utils.data import Dataset

from clap_train.config import ConfigError, load_config, save_config
from clap_train.data.action_space import REPRESENTATIONS, ActionSpace, fit_action_space
from clap_train.io import atomic_write_text
from clap_train.models.act_vae import ActVAE, ActVAEConfig
from clap_train.train.loop import LoopConfig, Stage, run_loop


@dataclasses.dataclass
class ActVAETrainConfig:
    model: ActVAEConfig = dataclasses.field(default_factory=ActVAEConfig)
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=3e-4, batch_size=256, steps=20000))
    codebook_lr: float = 1e-3  # Table IX: separate, larger codebook learning rate
    reseed_every: int = 100  # steps between dead-code re-seeding passes (0 = never)
    dead_threshold: float = 0.0  # usage EMA below which a code counts as dead (0 = 1/(16 K))
    actions: str = "absolute"  # action representation the whole pipeline learns in: absolute | relative
    synthetic_episode_len: int = 150
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if self.codebook_lr <= 0:
            raise ValueError(f"codebook_lr must be positive, got {self.codebook_lr}")
        if self.reseed_every < 0:
            raise ValueError(f"reseed_every must be >= 0, got {self.reseed_every}")
        if self.dead_threshold < 0:
            raise ValueError(f"dead_threshold must be >= 0, got {self.dead_threshold}")
        if self.actions not in REPRESENTATIONS:
            raise ValueError(f"actions must be one of {list(REPRESENTATIONS)}, got {self.actions!r}")


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
        from clap_train.data.synthetic import SyntheticDataset

        ds = SyntheticDataset(synthetic, seed=seed, episode_len=episode_len, chunk_len=chunk_len,
                              future_offset=future_offset, image_size=image_size, images=images, human=human,
                              stats=stats)
        return ds, ds.stats
    root = pathlib.Path(dataset)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{root} is not a LeRobot dataset (no meta/info.json)")
    from clap_train.data.dataset import ClapDataset

    ds = ClapDataset(root, chunk_len=chunk_len, future_offset=future_offset, image_size=image_size,
                     load_images=images, progress=progress)
    stats_path = root / "meta" / "stats.json"
    stats_out = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    return ds, stats_out


def make_stage(model: ActVAE, dataset: Dataset, cfg: ActVAETrainConfig) -> Stage:
    codebook = list(model.quantizer.parameters())
    ids = {id(p) for p in codebook}
    rest = [p for p in model.parameters() if id(p) not in ids]
    reseeded = {"total": 0, "last": 0}

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor], step: int):
        out = m(batch["action"], mask=~batch["action_pad"])
        mse = float(out["recon_loss"].detach())
        metrics = {
            "recon_loss": mse,
            "codebook_loss": float(out["codebook_loss"].detach()),
            "commit_loss": float(out["commit_loss"].detach()),
            "perplexity": float(out["perplexity"]),
            "dead_codes": float(m.quantizer.dead_codes(cfg.dead_threshold or None).numel()),
            "psnr": 20 * math.log10(2.0 / math.sqrt(max(mse, 1e-20))),
        }
        return out["loss"], metrics

    def after_step(m: torch.nn.Module, step: int) -> None:
        if cfg.reseed_every and step % cfg.reseed_every == 0:
            n = m.quantizer.reseed_dead_codes(step, cfg.dead_threshold or None)
            reseeded["last"] = n
            reseeded["total"] += n

    return Stage(
        name="act_vae",
        model=model,
        dataset=dataset,
        collate_fn=None,
        loss_fn=loss_fn,
        param_groups=[{"params": rest, "lr": cfg.loop.lr}, {"params": codebook, "lr": cfg.codebook_lr}],
        after_step=after_step,
        extra_state=lambda: {"reseeded_total": reseeded["total"]},
    )


def export(model: ActVAE, stats: dict[str, Any], space: ActionSpace, out_dir: pathlib.Path) -> pathlib.Path:
    model.save_pretrained(out_dir)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=1))
    space.save(out_dir)
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=pathlib.Path, help="YAML config (ActVAETrainConfig)")
    parser.add_argument("--run-dir", type=pathlib.Path, required=True, help="checkpoints, TensorBoard, export")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="unified LeRobot v3.0 dataset directory")
    src.add_argument("--synthetic", type=int, metavar="N", help="use N scripted synthetic episodes instead")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. loop.steps=10")
    parser.add_argument("--stop-after", type=int, help="stop at this step (for tests / staged runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(ActVAETrainConfig, args.config, args.set)
        dataset, stats = open_dataset(args.dataset, args.synthetic, cfg.model.chunk_len, images=False,
                                      episode_len=cfg.synthetic_episode_len, seed=cfg.synthetic_seed)
        space = fit_action_space(dataset, cfg.actions)
        dataset.action_space = space
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"clap train act-vae: {exc}", file=sys.stderr)
        return 2
    run_dir = pathlib.Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.loop.seed)
    model = ActVAE(cfg.model)
    result = run_loop(make_stage(model, ActionChunks(dataset), cfg), cfg.loop, run_dir, resume=args.resume,
                      progress=not args.no_progress, stop_after=args.stop_after)
    if result.final_step >= cfg.loop.steps:
        out = export(model, stats, space, run_dir / "act_vae")
        last = result.history[-1] if result.history else {}
        print(f"act-vae: step {result.final_step}, recon {last.get('recon_loss', float('nan')):.3g}, "
              f"psnr {last.get('psnr', float('nan')):.2f} dB, perplexity {last.get('perplexity', float('nan')):.1f}; "
              f"exported to {out}")
    return 0
