"""``clap train act-vae``: train the Act-VAE action codebook (CLAP Alg. 1) through the shared loop.

Data: the robot LeRobot datasets (``--dataset DIR`` or the config's ``datasets``, several with
mixing weights), or scripted synthetic episodes written as one (``--synthetic N``). Only the
normalised action chunk and its padding mask are used.
With ``lowpass.cutoff_hz`` > 0 the training chunks are low-passed as the authors do (a zero-phase
FIR on the pose dims, data/samples/action_space.py ``lowpass_chunks``); the space and the decoding
stay the same, and evaluations compare decoded chunks with the raw recorded ones.
The codebook has its own learning rate (a separate optimiser param group). Codebook health is
logged every step (perplexity, dead codes) and dead codes are re-seeded from recent encoder
outputs every ``reseed_every`` steps, because a collapsed codebook silently ruins every later
stage. Before training the stage fits the action space (``actions``: ``relative`` per-arm deltas to
the state, or ``absolute`` poses; see data/samples/action_space.py) on the dataset; every later stage and
the deployed policy use that space. At the end the model is exported to ``RUN_DIR/act_vae``
(config.json, model.safetensors, action_space.json, and the dataset's stats.json).

    clap train act-vae --config config/train/act_vae.yaml --synthetic 200 --run-dir runs/act_vae
    clap train act-vae --config ... --run-dir runs/act_vae --resume     # after a crash / kill -9
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

import torch
from torch.utils.data import Dataset

import numpy as np

from clap_train.data.rotations import nearest_branch
from clap_train.data.samples.action_space import REPRESENTATIONS, ActionSpace, fit_action_space, lowpass_episode
from clap_train.data.samples.sources import ActionChunks, DataKeys, Sources, open_robot
from clap_train.io import atomic_write_text
from clap_train.models.act_vae import ActVAE, ActVAEConfig
from clap_train.train.loop import LoopConfig, Stage, global_share, is_main_process, run_loop, unwrap
from clap_train.train.runner import RunOptions, StageSpec


@dataclasses.dataclass
class Lowpass:
    """The authors' zero-phase FIR on the training chunks' pose dims (OpenCLAP: 8 Hz, 19 taps at 30 Hz)."""

    cutoff_hz: float = 0.0  # 0: off (the chunks as recorded)
    rate_hz: float = 30.0
    taps: int = 19

    def __post_init__(self) -> None:
        if self.cutoff_hz < 0 or (self.cutoff_hz and self.cutoff_hz >= self.rate_hz / 2):
            raise ValueError(f"lowpass.cutoff_hz must be 0 (off) or in (0, rate_hz / 2), got {self.cutoff_hz}")
        if self.taps < 3 or self.taps % 2 == 0:
            raise ValueError(f"lowpass.taps must be odd and >= 3, got {self.taps}")

    def fir(self) -> dict[str, float]:
        return {"cutoff_hz": self.cutoff_hz, "rate_hz": self.rate_hz, "taps": self.taps}


@dataclasses.dataclass
class ActVAETrainConfig(DataKeys):
    model: ActVAEConfig = dataclasses.field(default_factory=ActVAEConfig)
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=3e-4, batch_size=256, steps=20000))
    codebook_lr: float = 1e-3  # Table IX: separate, larger codebook learning rate
    reseed_every: int = 100  # steps between dead-code re-seeding passes (0 = never)
    dead_threshold: float = 0.0  # usage EMA below which a code counts as dead (0 = 1/(16 K))
    actions: str = "absolute"  # action representation the whole pipeline learns in: absolute | relative
    lowpass: Lowpass = dataclasses.field(default_factory=Lowpass)  # smoothing of the training chunks

    def __post_init__(self) -> None:
        if self.codebook_lr <= 0:
            raise ValueError(f"codebook_lr must be positive, got {self.codebook_lr}")
        if self.reseed_every < 0:
            raise ValueError(f"reseed_every must be >= 0, got {self.reseed_every}")
        if self.dead_threshold < 0:
            raise ValueError(f"dead_threshold must be >= 0, got {self.dead_threshold}")
        if self.actions not in REPRESENTATIONS:
            raise ValueError(f"actions must be one of {list(REPRESENTATIONS)}, got {self.actions!r}")


class LowpassChunks(Dataset):
    """(action, action_pad) of a robot dataset (a ClapDataset or a DatasetMix of them), pose dims low-passed.

    Each episode is filtered once (``lowpass_episode``, cached); a chunk is then a slice of it, put
    on the Euler branch of the recorded chunk and encoded into the dataset's action space.
    """

    def __init__(self, base, lowpass: Lowpass, chunk_len: int):
        self.base, self.lowpass, self.chunk_len = base, lowpass, chunk_len
        self._episodes: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.base)

    def chunk(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(state, low-passed chunk, padding) of sample ``i`` in robot units."""
        k, j = self.base.locate(i) if hasattr(self.base, "locate") else (0, int(i))
        ds = self.base.parts[k] if hasattr(self.base, "parts") else self.base
        state, raw, pad = ds.raw(j)
        ep, t, H = int(ds._ep[j]), int(ds._frame[j]), self.chunk_len
        if (k, ep) not in self._episodes:
            start = ds._start[ep]
            self._episodes[k, ep] = lowpass_episode(ds._action[start:start + ds._length[ep]], H,
                                                    ds.action_space.euler_indices, **self.lowpass.fir())
        smooth = self._episodes[k, ep][H + t:2 * H + t].copy()
        e = ds.action_space.euler_indices
        smooth[:, e] += nearest_branch(smooth[0, e], raw[0, e]) - smooth[0, e]
        return state, smooth, pad

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        state, smooth, pad = self.chunk(i)
        space = self.base.action_space
        return {"action": torch.from_numpy(space.encode(smooth, state)), "action_pad": torch.from_numpy(pad)}


def make_stage(model: ActVAE, dataset: Dataset, cfg: ActVAETrainConfig) -> Stage:
    codebook = list(model.quantizer.parameters())
    ids = {id(p) for p in codebook}
    rest = [p for p in model.parameters() if id(p) not in ids]
    reseeded = {"total": 0, "last": 0}

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor], step: int):
        out = m(batch["action"], mask=~batch["action_pad"])
        # several processes: each rank's masked mean weighted by its share of the valid steps
        share = global_share((~batch["action_pad"]).sum() * batch["action"].shape[-1])
        recon = out["recon_loss"] * share
        mse = float(out["mse"].detach() * share)  # unweighted, whatever model.position_weight
        metrics = {
            "recon_loss": float(recon.detach()),
            "codebook_loss": float(out["codebook_loss"].detach()),
            "commit_loss": float(out["commit_loss"].detach()),
            "perplexity": float(out["perplexity"]),
            "dead_codes": float(unwrap(m).quantizer.dead_codes(cfg.dead_threshold or None).numel()),
            "psnr": 20 * math.log10(2.0 / math.sqrt(max(mse, 1e-20))),
        }
        return out["loss"] + recon - out["recon_loss"], metrics

    def reseeds(step: int) -> bool:
        return bool(cfg.reseed_every) and step % cfg.reseed_every == 0

    def after_step(m: torch.nn.Module, step: int) -> None:
        if reseeds(step):
            n = m.quantizer.reseed_dead_codes(step, cfg.dead_threshold or None)
            reseeded["last"] = n
            reseeded["total"] += n

    def shared_state(m: torch.nn.Module, step: int) -> list[torch.Tensor]:
        """Several processes: rank 0's codebook (and its usage statistics) for everyone, after each re-seeding.

        (The first batch's data-dependent initialisation is already global: models/quantizer.py.)
        """
        return [*m.quantizer.parameters(), *m.quantizer.buffers()] if reseeds(step) else []

    return Stage(
        name="act_vae",
        model=model,
        dataset=dataset,
        collate_fn=None,
        loss_fn=loss_fn,
        param_groups=[{"params": rest, "lr": cfg.loop.lr}, {"params": codebook, "lr": cfg.codebook_lr}],
        after_step=after_step,
        extra_state=lambda: {"reseeded_total": reseeded["total"]},
        shared_state=shared_state,
    )


def export(model: ActVAE, stats: dict[str, Any], space: ActionSpace, out_dir: pathlib.Path) -> pathlib.Path:
    model.save_pretrained(out_dir)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=1))
    space.save(out_dir)
    return out_dir


@dataclasses.dataclass
class Prepared:
    cfg: ActVAETrainConfig
    dataset: Any
    stats: dict[str, Any]
    space: ActionSpace


def prepare(cfg: ActVAETrainConfig, sources: Sources, options: RunOptions) -> Prepared:
    dataset, stats = open_robot(sources, cfg, cfg.model.chunk_len, images=False, progress=options.progress)
    space = fit_action_space(dataset, cfg.actions)
    dataset.action_space = space
    return Prepared(cfg, dataset, stats, space)


def train(job: Prepared, options: RunOptions) -> int:
    cfg = job.cfg
    torch.manual_seed(cfg.loop.seed)
    model = ActVAE(cfg.model)
    chunks = LowpassChunks(job.dataset, cfg.lowpass, cfg.model.chunk_len) if cfg.lowpass.cutoff_hz else \
        ActionChunks(job.dataset)
    result = run_loop(make_stage(model, chunks, cfg), cfg.loop, options.run_dir,
                      resume=options.resume, progress=options.progress, stop_after=options.stop_after)
    if result.final_step >= cfg.loop.steps and is_main_process():
        out = export(model, job.stats, job.space, options.run_dir / "act_vae")
        last = result.history[-1] if result.history else {}
        print(f"act-vae: step {result.final_step}, recon {last.get('recon_loss', float('nan')):.3g}, "
              f"psnr {last.get('psnr', float('nan')):.2f} dB, perplexity {last.get('perplexity', float('nan')):.1f}; "
              f"exported to {out}")
    return 0


SPEC = StageSpec(name="act-vae", help="Act-VAE: the action codebook (Alg. 1)", config=ActVAETrainConfig,
                 prepare=prepare, train=train)
