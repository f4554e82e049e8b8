r"""``clap train ntp``: CLAP-NTP (Alg. 3), Qwen3-VL next-token prediction of [subtask, action tokens].

Data: robot samples (``--dataset DIR``, the config's ``datasets``, or ``--synthetic N``) and,
optionally, human samples (``--human-dataset DIR``, ``human_datasets``, or ``--human-synthetic N``)
mixed with ``human_fraction``; several datasets of a kind are drawn by their weights. Robot targets
are the Act-VAE tokens of the sample's normalised chunk (computed on the fly with the frozen
Act-VAE); human targets are the VD-VAE pseudo tokens a labelled human dataset carries in the
sample key ``action_tokens`` ([Nq] long, -1 = unlabelled). A human sample without them trains on
its subtask text only. Wrist cameras are dropped at random (``wrist_dropout``).

The schedule defaults follow Table IX (peak 5e-5, 1k warm-up, cosine from 100k to 5e-6). At the
end the trained backbone is exported as an NTP-only policy directory ``RUN_DIR/policy`` that
``ClapPolicy.load`` reads (mode "ntp") and ``clap train rf`` starts from. The Act-VAE (``act_vae``)
and an optional starting policy (``init``) are config keys.

    clap train ntp --config config/train/tiny/ntp.yaml --synthetic 8 --run-dir runs/ntp \
        --set act_vae=runs/act_vae/act_vae
    clap train ntp ... --resume          # after a crash / kill -9: continues at the last checkpoint
"""

from __future__ import annotations

import dataclasses
from typing import Any

from clap_train.data.samples.action_space import ActionSpace, load_action_space
from clap_train.data.samples.mirror import MirrorKeys
from clap_train.data.samples.sources import DataKeys, Sources, open_mixed
from clap_train.models.act_vae import ActVAE
from clap_train.models.ntp import ntp_loss_fn
from clap_train.models.pretrained import Backbone, load_act_vae, load_backbone
from clap_train.models.vision_aux import VisionAux, VisionAuxKeys
from clap_train.models.vlm import VLMConfig
from clap_train.train.loop import LoopConfig, Stage, is_main_process, run_loop
from clap_train.train.runner import RunOptions, StageSpec


@dataclasses.dataclass
class NTPTrainConfig(DataKeys, VisionAuxKeys, MirrorKeys):
    """``clap train ntp`` settings."""

    vlm: VLMConfig = dataclasses.field(default_factory=VLMConfig)
    act_vae: str | None = None  # Act-VAE directory (clap train act-vae's RUN_DIR/act_vae)
    init: str | None = None  # start from this policy directory's backbone instead of ``vlm``
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(
        steps=150_000, batch_size=512, lr=5e-5, warmup_steps=1000, schedule="cosine", decay_start=100_000,
        min_lr=5e-6))
    wrist_dropout: float = 0.3
    human_fraction: float = 0.0  # share of human samples in a batch when human data is given
    max_subtask_tokens: int = 32
    rate_hz: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.wrist_dropout < 1.0:
            raise ValueError(f"wrist_dropout must be in [0, 1), got {self.wrist_dropout}")
        if not 0.0 <= self.human_fraction < 1.0:
            raise ValueError(f"human_fraction must be in [0, 1), got {self.human_fraction}")
        if self.max_subtask_tokens < 0:
            raise ValueError("max_subtask_tokens must be >= 0")


@dataclasses.dataclass
class Prepared:
    cfg: NTPTrainConfig
    act_vae: ActVAE
    dataset: Any
    space: ActionSpace


def prepare(cfg: NTPTrainConfig, sources: Sources, options: RunOptions) -> Prepared:
    act_vae = load_act_vae(cfg.act_vae)
    space = load_action_space(cfg.act_vae)
    dataset, space = open_mixed(sources, cfg, act_vae.config.chunk_len, cfg.vlm.image_size,
                                act_vae.config.num_queries, space, progress=options.progress, mirror=cfg.mirror)
    return Prepared(cfg, act_vae, dataset, space)


def train(job: Prepared, options: RunOptions) -> int:
    from clap_train.data.samples.dataset import collate_samples
    from clap_train.policy import PolicyMeta, save_policy

    cfg, act_vae = job.cfg, job.act_vae
    vlm, processor, vocab = load_backbone(cfg.vlm, cfg.init, act_vae.config.codebook_size)
    aux = VisionAux(vlm, cfg.vision_aux_grid) if cfg.vision_aux > 0 else None
    stage = Stage(name="ntp", model=Backbone(vlm, aux), dataset=job.dataset, collate_fn=collate_samples,
                  loss_fn=ntp_loss_fn(processor, vocab, act_vae, cfg.wrist_dropout, cfg.max_subtask_tokens,
                                      cfg.vision_aux))
    result = run_loop(stage, cfg.loop, options.run_dir, resume=options.resume, progress=options.progress,
                      stop_after=options.stop_after)
    if result.final_step >= cfg.loop.steps and is_main_process():
        meta = PolicyMeta(chunk_len=act_vae.config.chunk_len, action_dim=act_vae.config.action_dim,
                          rate_hz=cfg.rate_hz, image_size=processor.image_size,
                          num_queries=act_vae.config.num_queries, codebook_size=act_vae.config.codebook_size,
                          max_subtask_tokens=cfg.max_subtask_tokens)
        out = save_policy(options.run_dir / "policy", meta, vlm, processor, act_vae.cpu(), job.space)
        last = result.history[-1] if result.history else {}
        print(f"ntp: step {result.final_step}, loss {last.get('loss', float('nan')):.4g}, action-token acc "
              f"{last.get('action_token_acc', float('nan')):.3f}; policy exported to {out}")
    return 0


SPEC = StageSpec(name="ntp", help="CLAP-NTP: Qwen3-VL next-token prediction of subtasks and action tokens (Alg. 3)",
                 config=NTPTrainConfig, prepare=prepare, train=train, human="both", path_keys=("act_vae", "init"))
