r"""``clap train ntp``: CLAP-NTP (Alg. 3), Qwen3-VL next-token prediction of [subtask, action tokens].

Data: robot samples (``--dataset DIR`` or ``--synthetic N``) and, optionally, human samples
(``--human-dataset DIR`` or ``--human-synthetic N``) mixed with ``human_fraction``. Robot targets
are the Act-VAE tokens of the sample's normalised chunk (computed on the fly with the frozen
Act-VAE); human targets are the VD-VAE pseudo tokens a labelled human dataset carries in the
sample key ``action_tokens`` ([Nq] long, -1 = unlabelled). A human sample without them trains on
its subtask text only. Wrist cameras are dropped at random (``wrist_dropout``).

The schedule defaults follow Table IX (peak 5e-5, 1k warm-up, cosine from 100k to 5e-6). At the
end the trained backbone is exported as an NTP-only policy directory ``RUN_DIR/policy`` that
``ClapPolicy.load`` reads (mode "ntp") and ``clap train post`` starts from.

    clap train ntp --config config/train/tiny/ntp.yaml --synthetic 8 --act-vae runs/act_vae/act_vae \
        --run-dir runs/ntp
    clap train ntp ... --resume          # after a crash / kill -9: continues at the last checkpoint
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Any

import torch
from torch.utils.data import Dataset

from clap_train.config import ConfigError, load_config, save_config
from clap_train.data.action_space import ActionSpace, load_action_space
from clap_train.models.act_vae import ActVAE
from clap_train.models.ntp import ActionVocab, add_action_tokens, batch_images, encode_batch, target_loss
from clap_train.models.vlm import VLMConfig, VLMProcessor, build_vlm
from clap_train.train.loop import LoopConfig, Stage, run_loop


@dataclasses.dataclass
class NTPTrainConfig:
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
    synthetic_episode_len: int = 150
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.wrist_dropout < 1.0:
            raise ValueError(f"wrist_dropout must be in [0, 1), got {self.wrist_dropout}")
        if not 0.0 <= self.human_fraction < 1.0:
            raise ValueError(f"human_fraction must be in [0, 1), got {self.human_fraction}")
        if self.max_subtask_tokens < 0:
            raise ValueError("max_subtask_tokens must be >= 0")


class Backbone(torch.nn.Module):
    """The trainable Qwen3-VL (a module so the shared loop checkpoints exactly its weights)."""

    def __init__(self, vlm):
        super().__init__()
        self.vlm = vlm

    def forward(self, **inputs):
        return self.vlm(**inputs)


def load_backbone(cfg_vlm: VLMConfig, init: str | None, codebook_size: int):
    """(vlm, processor, vocab): from a policy directory, a local Qwen3-VL, or random weights."""
    if init is not None:
        from transformers import Qwen3VLForConditionalGeneration

        root = pathlib.Path(init) / "vlm"
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"init policy {init} has no vlm/config.json")
        processor = VLMProcessor.from_pretrained(root)
        vlm = Qwen3VLForConditionalGeneration.from_pretrained(str(root), local_files_only=True, dtype=torch.float32)
        vocab = add_action_tokens(vlm, processor.tokenizer, codebook_size)
        return vlm, processor, vocab
    vlm, processor = build_vlm(cfg_vlm)
    vocab = add_action_tokens(vlm, processor.tokenizer, codebook_size)
    return vlm, processor, vocab


def load_act_vae(path: str | None) -> ActVAE:
    if path is None:
        raise ConfigError("an Act-VAE directory is needed (--act-vae DIR or act_vae: in the config)")
    model = ActVAE.from_pretrained(path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def batch_codes(act_vae: ActVAE, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Target codes [B, Nq] and which samples have them: Act-VAE tokens (robot), pseudo tokens (human)."""
    nq = act_vae.config.num_queries
    robot = batch["is_robot"].bool()
    dev = batch["action"].device
    if next(act_vae.parameters()).device != dev:
        act_vae.to(dev)
    codes = torch.zeros(robot.shape[0], nq, dtype=torch.long, device=dev)
    if bool(robot.any()):
        codes[robot] = act_vae.tokenize(batch["action"][robot].float())
    has = robot.clone()
    if "action_tokens" in batch:
        human = ~robot
        pseudo = batch["action_tokens"].long().to(dev)
        labelled = human & (pseudo >= 0).all(dim=1)
        codes[labelled] = pseudo[labelled]
        has |= labelled
    return codes, has


def ntp_loss_fn(processor: VLMProcessor, vocab: ActionVocab, act_vae: ActVAE, wrist_dropout: float):
    """The shared loop's loss: cross-entropy on [subtask, action tokens] targets only."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any], step: int):
        codes, has = batch_codes(act_vae, batch)
        enc = encode_batch(processor, vocab, batch_images(batch, wrist_dropout), batch["instruction"],
                           batch["subtask"], codes.cpu(), has.tolist()).to(batch["action"].device)
        logits = model(**enc.inputs).logits
        loss = target_loss(logits, enc)
        with torch.no_grad():
            amask = enc.action_mask[:, 1:]
            hit = logits[:, :-1].argmax(-1)[amask] == enc.inputs["input_ids"][:, 1:][amask]
            acc = float(hit.float().mean()) if hit.numel() else 0.0
        return loss, {"action_token_acc": acc}

    return loss_fn


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


def open_mixed(args: argparse.Namespace, cfg: Any, chunk_len: int, image_size: int, num_queries: int,
               space: ActionSpace | None, human: bool = True) -> tuple[Dataset, ActionSpace]:
    """Robot (+ human) datasets as one contract-3 dataset, and the action space of its robot actions.

    ``space`` is the Act-VAE's; None (an Act-VAE exported without one) keeps the dataset's own
    absolute space.

    A human dataset's VD-VAE pseudo tokens come from its ``meta/pseudo_tokens.parquet`` sidecar
    (``clap label-videos``); without one its samples train on their subtask text only.
    """
    from clap_train.data.dataset import MixedDataset
    from clap_train.train.act_vae import open_dataset
    from clap_train.train.label_videos import SIDECAR, WithPseudoTokens

    robot, stats = open_dataset(args.dataset, args.synthetic, chunk_len, image_size=image_size,
                                episode_len=cfg.synthetic_episode_len, seed=cfg.synthetic_seed, action_space=space,
                                progress=not getattr(args, "no_progress", False))
    space = robot.action_space
    robot = TokenTargets(robot, num_queries)
    if not human or (args.human_dataset is None and args.human_synthetic is None):
        return robot, space
    people, _ = open_dataset(args.human_dataset, args.human_synthetic, chunk_len, image_size=image_size,
                             episode_len=cfg.synthetic_episode_len, seed=cfg.synthetic_seed + 1, human=True,
                             stats=stats if args.human_synthetic is not None else None,
                             progress=not getattr(args, "no_progress", False))
    if args.human_dataset is not None:
        if (pathlib.Path(args.human_dataset) / SIDECAR).is_file():
            people = WithPseudoTokens(people, args.human_dataset)
        else:
            print(f"warning: {pathlib.Path(args.human_dataset) / SIDECAR} not found: human samples train on "
                  "their subtask text only (run clap label-videos first)", file=sys.stderr)
    return MixedDataset(robot, TokenTargets(people, num_queries), cfg.human_fraction), space


def collate():
    from clap_train.data.dataset import collate_samples

    return collate_samples


def add_data_arguments(parser: argparse.ArgumentParser, human: bool = True) -> None:
    parser.add_argument("--config", type=pathlib.Path, help="YAML config")
    parser.add_argument("--run-dir", type=pathlib.Path, required=True, help="checkpoints, TensorBoard, export")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="robot LeRobot v3.0 dataset directory")
    src.add_argument("--synthetic", type=int, metavar="N", help="use N scripted synthetic robot episodes")
    if human:
        hum = parser.add_mutually_exclusive_group()
        hum.add_argument("--human-dataset", help="human-video LeRobot dataset (with pseudo action tokens)")
        hum.add_argument("--human-synthetic", type=int, metavar="N", help="N synthetic human episodes")
    parser.add_argument("--act-vae", help="Act-VAE directory (overrides the config's act_vae)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. loop.steps=10")
    parser.add_argument("--stop-after", type=int, help="stop at this step (for tests / staged runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from clap_train.policy import PolicyMeta, save_policy

    try:
        cfg = load_config(NTPTrainConfig, args.config, args.set)
        if args.act_vae:
            cfg = dataclasses.replace(cfg, act_vae=args.act_vae)
        act_vae = load_act_vae(cfg.act_vae)
        space = load_action_space(cfg.act_vae)
        dataset, space = open_mixed(args, cfg, act_vae.config.chunk_len, cfg.vlm.image_size,
                                    act_vae.config.num_queries, space)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"clap train ntp: {exc}", file=sys.stderr)
        return 2
    run_dir = pathlib.Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    vlm, processor, vocab = load_backbone(cfg.vlm, cfg.init, act_vae.config.codebook_size)
    model = Backbone(vlm)
    stage = Stage(name="ntp", model=model, dataset=dataset, collate_fn=collate(),
                  loss_fn=ntp_loss_fn(processor, vocab, act_vae, cfg.wrist_dropout))
    result = run_loop(stage, cfg.loop, run_dir, resume=args.resume, progress=not args.no_progress,
                      stop_after=args.stop_after)
    if result.final_step >= cfg.loop.steps:
        meta = PolicyMeta(chunk_len=act_vae.config.chunk_len, action_dim=act_vae.config.action_dim,
                          rate_hz=cfg.rate_hz, image_size=processor.image_size,
                          num_queries=act_vae.config.num_queries, codebook_size=act_vae.config.codebook_size,
                          max_subtask_tokens=cfg.max_subtask_tokens)
        out = save_policy(run_dir / "policy", meta, vlm, processor, act_vae.cpu(), space)
        last = result.history[-1] if result.history else {}
        print(f"ntp: step {result.final_step}, loss {last.get('loss', float('nan')):.4g}, action-token acc "
              f"{last.get('action_token_acc', float('nan')):.3f}; policy exported to {out}")
    return 0
