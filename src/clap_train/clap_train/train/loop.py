"""The one training loop every CLAP stage runs through.

A stage supplies a trainable module, a dataset, a collate function and a loss; this loop does
the rest the same way for all of them: accelerate (one code path for CPU, one GPU, DDP/FSDP
via ``accelerate launch``), AdamW with per-group learning rates, warm-up + cosine schedule,
gradient clipping, a tqdm progress bar, TensorBoard scalars, atomic checkpoints and resume.

Resume is exact: the batch and every random draw at step ``s`` are functions of
``(seed, s)`` only (a stateless batch sampler and a per-step torch seed), so a run killed
after checkpoint ``s`` and resumed computes the same loss at step ``s + 1`` as the run that
was never killed.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from clap_train.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclasses.dataclass
class LoopConfig:
    """Optimisation settings shared by all stages."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine"] = "cosine"
    decay_start: int = 0  # cosine decay starts here (after warm-up), as in Table IX's NTP schedule
    min_lr: float = 0.0
    grad_clip: float = 1.0
    log_every: int = 10
    save_every: int = 200
    keep_last: int = 2
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps], got {self.warmup_steps}")
        if self.save_every <= 0 or self.log_every <= 0:
            raise ValueError("save_every and log_every must be positive")


def lr_lambda(config: LoopConfig, base_lr: float) -> Callable[[int], float]:
    """Multiplier of ``base_lr`` at a step: linear warm-up, then constant or cosine to min_lr."""
    floor = config.min_lr / base_lr if base_lr > 0 else 0.0

    def f(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        start = max(config.warmup_steps, config.decay_start)
        if step < start:
            return 1.0
        span = max(1, config.steps - start)
        progress = min(1.0, (step - start) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


class StepBatchSampler(Sampler[list[int]]):
    """Yields the batch indices of steps ``start..stop-1``; step ``s`` depends only on (seed, s)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int):
        if num_items <= 0:
            raise ValueError("the training dataset is empty")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.stop = start, stop

    def indices(self, step: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        if self.num_items >= self.batch_size:
            return torch.randperm(self.num_items, generator=g)[: self.batch_size].tolist()
        return torch.randint(self.num_items, (self.batch_size,), generator=g).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


@dataclasses.dataclass
class Stage:
    """What a training stage hands to the loop.

    ``loss_fn(model, batch, step)`` returns the scalar loss and a dict of float metrics.
    ``param_groups`` (optional) lists dicts with "params" and optionally "lr" (a group's own
    base learning rate, e.g. the Act-VAE codebook's); default: all trainable parameters.
    ``after_step(model, step)`` runs after each optimiser step (EMA teachers, dead-code
    re-seeding). ``extra_state()`` is stored in each checkpoint's state.json.
    """

    name: str
    model: torch.nn.Module
    dataset: Dataset
    collate_fn: Callable[[list[Any]], Any] | None
    loss_fn: Callable[[torch.nn.Module, Any, int], tuple[torch.Tensor, dict[str, float]]]
    param_groups: list[dict[str, Any]] | None = None
    after_step: Callable[[torch.nn.Module, int], None] | None = None
    extra_state: Callable[[], dict[str, Any]] | None = None


@dataclasses.dataclass
class LoopResult:
    final_step: int
    history: list[dict[str, float]]
    checkpoint: pathlib.Path | None


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_move(v, device) for v in batch)
    return batch


def run_loop(
    stage: Stage,
    config: LoopConfig,
    run_dir: str | pathlib.Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> LoopResult:
    """Train ``stage`` for ``config.steps`` steps (or until ``stop_after``), checkpointing into run_dir."""
    from accelerate import Accelerator

    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision)

    model = stage.model
    groups = stage.param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    groups = [dict(g) for g in groups]
    for g in groups:
        g.setdefault("lr", config.lr)
        g["params"] = [p for p in g["params"] if p.requires_grad]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"{stage.name}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [lr_lambda(config, g["lr"]) for g in groups])

    start = 0
    history: list[dict[str, float]] = []
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            state = load_checkpoint(ckpt, model, optimizer, scheduler)
            start = int(state["step"])
            history = list(state.get("history", []))
            accelerator.print(f"{stage.name}: resumed from {ckpt} at step {start}")
        else:
            accelerator.print(f"{stage.name}: --resume given but no checkpoint in {run_dir}; starting fresh")

    model, optimizer = accelerator.prepare(model, optimizer)
    stop = config.steps if stop_after is None else min(config.steps, stop_after)
    sampler = StepBatchSampler(len(stage.dataset), config.batch_size, config.seed, start, stop)
    loader = DataLoader(
        stage.dataset,
        batch_sampler=sampler,
        collate_fn=stage.collate_fn,
        num_workers=config.num_workers,
        persistent_workers=False,
    )

    writer = None
    if accelerator.is_main_process:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=start + 1 if start else None)
        except ImportError:  # tensorboard is optional at run time
            writer = None

    def extra() -> dict[str, Any]:
        data = {"history": history[-2000:], "stage": stage.name}
        if stage.extra_state is not None:
            data.update(stage.extra_state())
        return data

    last_ckpt = None
    bar = tqdm(total=stop, initial=start, desc=stage.name, disable=not (progress and accelerator.is_main_process),
               dynamic_ncols=True)
    step = start
    # wall-clock seconds of training so far (carried over a resume), for learning curves
    elapsed0 = float(history[-1].get("elapsed_s", 0.0)) if history else 0.0
    t_start = time.monotonic()
    model.train()
    for batch in loader:
        torch.manual_seed(config.seed * 7_919 + step)
        batch = _move(batch, accelerator.device)
        with accelerator.autocast():
            loss, metrics = stage.loss_fn(model, batch, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{stage.name}: loss is {loss.item()} at step {step}; last good checkpoint: "
                f"{latest_checkpoint(run_dir)}"
            )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        if stage.after_step is not None:
            stage.after_step(accelerator.unwrap_model(model), step)
        record = {"step": step, "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                  "elapsed_s": elapsed0 + time.monotonic() - t_start}
        record.update({k: float(v) for k, v in metrics.items()})
        history.append(record)
        bar.update(1)
        if step % config.log_every == 0 or step == stop:
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("step", "elapsed_s")},
                            refresh=False)
            if writer is not None:
                for k, v in record.items():
                    if k not in ("step", "elapsed_s"):
                        writer.add_scalar(f"{stage.name}/{k}", v, step)
        if accelerator.is_main_process and (step % config.save_every == 0 or step == stop):
            last_ckpt = save_checkpoint(run_dir, step, accelerator.unwrap_model(model), optimizer, scheduler,
                                        extra(), keep_last=config.keep_last)
    bar.close()
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    return LoopResult(final_step=step, history=history, checkpoint=last_ckpt or latest_checkpoint(run_dir))
