"""``clap train vd-vae``: contrastive VD-VAE training (CLAP Alg. 2) through the shared loop.

Needs a trained Act-VAE (the config key ``act_vae``, e.g. ``--set act_vae=DIR``: the folder that
``clap train act-vae`` exports); its codebook stays frozen (bit-identical before and after). Batches
mix robot samples (``--dataset DIR``, the config's ``datasets``, or ``--synthetic N``) and
human-video samples (``--human-dataset DIR``, ``human_datasets``, or with ``--synthetic`` the same
number of synthetic human episodes) with ``human_fraction`` (data/samples/mixing.py). The EMA
teacher is updated after every optimiser step. ``feature_cache: true`` keeps frozen-backbone
features in memory (keyed by source, dataset, episode and frame), which pays off for real DINO
backbones: the clean frames, which the teacher, the Act-VAE positive and the reconstruction target
use, go through the backbone once; with ``aug: image`` only the online branch's augmented frames are
computed each step. The model is exported to ``RUN_DIR/vd_vae`` at the end.

    clap train vd-vae --config config/train/vd_vae.yaml --synthetic 200 --run-dir runs/vd_vae \
        --set act_vae=runs/act_vae/act_vae
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any

import torch

from clap_train.config import ConfigError
from clap_train.data.samples.action_space import ActionSpace, load_action_space
from clap_train.data.samples.sources import DataKeys, Sources, open_human, open_robot
from clap_train.io import atomic_write_text
from clap_train.models.act_vae import ActVAE
from clap_train.models.vd_vae import VDVAE, VDVAEConfig
from clap_train.train.loop import LoopConfig, Stage, is_main_process, run_loop
from clap_train.train.runner import RunOptions, StageSpec


@dataclasses.dataclass
class VDVAETrainConfig(DataKeys):
    model: VDVAEConfig = dataclasses.field(default_factory=VDVAEConfig)
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=3e-4, batch_size=64, steps=20000))
    act_vae: str | None = None  # exported Act-VAE folder (config.json + model.safetensors)
    human_fraction: float = 0.5
    future_offset: int = 32  # H: the transition (o_t, o_{t+H}) spans one action chunk
    feature_cache: bool = False
    feature_cache_max: int = 200_000  # cached feature maps (each P x C float16)

    def __post_init__(self) -> None:
        if not 0.0 <= self.human_fraction < 1.0:
            raise ValueError(f"human_fraction must be in [0, 1), got {self.human_fraction}")
        if self.future_offset < 1:
            raise ValueError(f"future_offset must be >= 1, got {self.future_offset}")


class FeatureCache:
    """Frozen-backbone features of (source, episode, frame), float16 in memory, bounded size."""

    def __init__(self, model: VDVAE, max_items: int):
        self.model, self.max_items, self.store = model, max_items, {}
        self.hits = self.misses = 0

    def __call__(self, images: torch.Tensor, keys: list[tuple] | None) -> torch.Tensor:
        if keys is None:
            return self.model.features(images)
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            # rounded to the stored precision also on first sight, so a resumed run (empty cache)
            # computes exactly what the uninterrupted run (warm cache) computed
            feats = self.model.features(images[missing]).to(torch.float16).float()
            for j, i in enumerate(missing):
                if len(self.store) < self.max_items:
                    self.store[keys[i]] = feats[j].to(torch.float16).cpu()
                else:
                    break
            fresh = dict(zip(missing, feats))
        else:
            fresh = {}
        dev = images.device
        return torch.stack([fresh[i] if i in fresh else self.store[k].to(dev).float() for i, k in enumerate(keys)])


def _keys(batch: dict[str, Any], offset: int, future: bool) -> list[tuple]:
    robot = batch["is_robot"].tolist()
    sets = batch["dataset_index"].tolist()
    eps = batch["episode_index"].tolist()
    frames = batch["frame_index"].tolist()
    # the future frame is clamped to the episode end by the loader; (ep, t, "future") names it exactly
    return [(r, d, e, f, future) for r, d, e, f in zip(robot, sets, eps, frames)]


def make_stage(model: VDVAE, dataset, collate, cfg: VDVAETrainConfig) -> Stage:
    cache = FeatureCache(model, cfg.feature_cache_max) if cfg.feature_cache else None

    def features(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        img_t, img_h = batch["images"]["head"], batch["future_head"]
        if cache is None:
            return model.features(img_t), model.features(img_h)
        return cache(img_t, _keys(batch, cfg.future_offset, False)), cache(img_h, _keys(batch, cfg.future_offset, True))

    def loss_fn(m: torch.nn.Module, batch: dict[str, Any], step: int):
        f_t, f_h = features(batch)
        student = model.student_features(batch["images"]["head"], batch["future_head"])  # never cached
        out = m(f_t, f_h, batch["is_robot"], batch["action"], student=student)
        metrics = {k: float(out[k].detach()) for k in ("rec_loss", "vq_loss", "con_loss", "reg_loss", "tau", "bias")}
        agree = float(out["token_agreement"])
        if not math.isnan(agree):
            metrics["token_agreement"] = agree
        metrics["human_share"] = float((~batch["is_robot"].bool()).float().mean())
        return out["loss"], metrics

    def after_step(m: torch.nn.Module, step: int) -> None:
        # several processes: the students are equal on every rank after the step, so the EMA
        # teachers stay equal too (the update is deterministic); no broadcast needed
        m.update_teacher()

    return Stage(name="vd_vae", model=model, dataset=dataset, collate_fn=collate, loss_fn=loss_fn,
                 param_groups=[{"params": model.trainable_parameters()}], after_step=after_step)


def build_data(cfg: VDVAETrainConfig, act: ActVAE, sources: Sources, space=None, progress: bool = True):
    """Robot and human samples mixed with ``human_fraction``, and the robot normaliser's statistics.

    With ``--synthetic N`` and no human videos given, N synthetic human episodes are made.
    """
    from clap_train.data.samples.mixing import MixedDataset

    common = dict(future_offset=cfg.future_offset, image_size=cfg.model.image_size, progress=progress)
    robot, stats = open_robot(sources, cfg, act.config.chunk_len, action_space=space, **common)
    human = None
    if cfg.human_fraction > 0:
        if not sources.has_human and sources.synthetic is not None:
            sources = dataclasses.replace(sources, human_synthetic=sources.synthetic)
        if not sources.has_human:
            raise ConfigError("human_fraction > 0 needs --human-dataset DIR (or set human_fraction=0)")
        human = open_human(sources, cfg, act.config.chunk_len, seed=cfg.synthetic_seed + 7_777, **common)
    return MixedDataset(robot, human, cfg.human_fraction, seed=cfg.loop.seed), stats


@dataclasses.dataclass
class Prepared:
    cfg: VDVAETrainConfig
    act: ActVAE
    data: Any
    stats: dict[str, Any]
    space: ActionSpace | None


def prepare(cfg: VDVAETrainConfig, sources: Sources, options: RunOptions) -> Prepared:
    if not cfg.act_vae:
        raise ConfigError("no Act-VAE: set act_vae: in the config (or --set act_vae=DIR)")
    act = ActVAE.from_pretrained(cfg.act_vae)
    if act.config.chunk_len != cfg.future_offset:
        print(f"note: future_offset {cfg.future_offset} != Act-VAE chunk_len {act.config.chunk_len}", file=sys.stderr)
    space = load_action_space(cfg.act_vae)  # None: the datasets' own (absolute)
    data, stats = build_data(cfg, act, sources, space, progress=options.progress)
    return Prepared(cfg, act, data, stats, space)


def train(job: Prepared, options: RunOptions) -> int:
    from clap_train.data.samples.dataset import collate_samples

    cfg = job.cfg
    torch.manual_seed(cfg.loop.seed)
    model = VDVAE(cfg.model, job.act)
    result = run_loop(make_stage(model, job.data, collate_samples, cfg), cfg.loop, options.run_dir,
                      resume=options.resume, progress=options.progress, stop_after=options.stop_after)
    if result.final_step >= cfg.loop.steps and is_main_process():
        out = model.save_pretrained(options.run_dir / "vd_vae")
        atomic_write_text(out / "stats.json", json.dumps(job.stats, indent=1))
        if job.space is not None:
            job.space.save(out)
        last = result.history[-1] if result.history else {}
        print(f"vd-vae: step {result.final_step}, rec {last.get('rec_loss', float('nan')):.3g}, "
              f"con {last.get('con_loss', float('nan')):.3g}; exported to {out}")
    return 0


SPEC = StageSpec(name="vd-vae", help="VD-VAE with contrastive alignment (Alg. 2)", config=VDVAETrainConfig,
                 prepare=prepare, train=train, human="dataset", path_keys=("act_vae",))
