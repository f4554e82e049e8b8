"""The one training loop every CLAP stage runs through.

A stage supplies a trainable module, a dataset, a collate function and a loss; this loop does
the rest the same way for all of them: accelerate (one code path for CPU, one GPU, and several
processes under ``accelerate launch`` or ``torchrun``: DDP, or FSDP from an accelerate config),
AdamW with per-group learning rates, warm-up + cosine schedule, gradient clipping, gradient
accumulation, bf16 autocast, gradient checkpointing, a tqdm progress bar, TensorBoard scalars,
atomic checkpoints and resume.

Resume is exact: the batch and every random draw at step ``s`` are functions of
``(seed, s)`` only (a stateless batch sampler and a per-step torch seed), so a run killed
after checkpoint ``s`` and resumed computes the same loss at step ``s + 1`` as the run that
was never killed.

Several processes: ``batch_size`` is the global batch of one optimiser step. The sampler draws it
exactly as one process would; it is cut into ``grad_accum`` micro-batches, and accelerate's
prepared DataLoader (``split_batches``) gives each of the W processes its own contiguous 1/W of
every micro-batch, so the ranks' samples are disjoint and a W-process run sees the same samples
per step as a 1-process run. Each rank seeds its own noise (rank 0 keeps the 1-process seed).
Losses and metrics are averaged over ranks; only rank 0 writes checkpoints and TensorBoard.
State a stage changes outside the gradients (``Stage.shared_state``) is broadcast from rank 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from clap_train.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from clap_train.train.ema import WeightAverage


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
    grad_accum: int = 1  # micro-batches per optimiser step; batch_size stays the global batch of a step
    gradient_checkpointing: bool = False  # recompute HF transformer layers in backward (saves activations)
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    ema_decay: float = 0.0  # > 0: keep an EMA of the weights (train/ema.py); the run ends with it in the model

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps], got {self.warmup_steps}")
        if self.save_every <= 0 or self.log_every <= 0:
            raise ValueError("save_every and log_every must be positive")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no average), got {self.ema_decay}")
        if self.grad_accum <= 0 or self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum must be positive and divide batch_size {self.batch_size}, "
                             f"got {self.grad_accum}")


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
    """Yields the batch indices of steps ``start..stop-1``; step ``s`` depends only on (seed, s).

    With ``micro`` > 1 each step's batch comes as ``micro`` consecutive micro-batches
    (``self.batch_size`` is their size: what accelerate splits across processes).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int, micro: int = 1):
        if num_items <= 0:
            raise ValueError("the training dataset is empty")
        self.num_items, self.global_batch, self.seed = num_items, batch_size, seed
        self.start, self.stop, self.micro = start, stop, micro
        self.batch_size = batch_size // micro

    def indices(self, step: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        if self.num_items >= self.global_batch:
            return torch.randperm(self.num_items, generator=g)[: self.global_batch].tolist()
        return torch.randint(self.num_items, (self.global_batch,), generator=g).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            batch = self.indices(step)
            for i in range(self.micro):
                yield batch[i * self.batch_size: (i + 1) * self.batch_size]

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.micro


@dataclasses.dataclass
class Stage:
    """What a training stage hands to the loop.

    ``loss_fn(model, batch, step)`` returns the scalar loss and a dict of float metrics.
    ``param_groups`` (optional) lists dicts with "params" and optionally "lr" (a group's own
    base learning rate, e.g. the Act-VAE codebook's); default: all trainable parameters.
    ``after_step(model, step)`` runs after each optimiser step on every rank, on the unwrapped
    module (EMA teachers, dead-code re-seeding). ``shared_state(model, step)`` then lists the
    tensors it changed that must be equal on all ranks; the loop broadcasts them from rank 0, so
    rank 0 decides (e.g. which codes to re-seed, and with what). ``extra_state()`` is stored in
    each checkpoint's state.json. ``snapshot(model, step)`` runs after each step on rank 0 with the
    module the run would export at that step (the weight average when ``ema_decay`` > 0; the
    trained module otherwise): intermediate exports. ``loss_fn`` gets the model as prepared (DDP-wrapped under
    several processes): call it for the forward pass, and reach attributes through ``unwrap``.
    """

    name: str
    model: torch.nn.Module
    dataset: Dataset
    collate_fn: Callable[[list[Any]], Any] | None
    loss_fn: Callable[[torch.nn.Module, Any, int], tuple[torch.Tensor, dict[str, float]]]
    param_groups: list[dict[str, Any]] | None = None
    after_step: Callable[[torch.nn.Module, int], None] | None = None
    extra_state: Callable[[], dict[str, Any]] | None = None
    shared_state: Callable[[torch.nn.Module, int], list[torch.Tensor]] | None = None
    snapshot: Callable[[torch.nn.Module, int], None] | None = None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The stage's own module inside a DDP/FSDP/compile wrapper (attributes, not the forward pass)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


def is_main_process() -> bool:
    """True on rank 0 of a ``torchrun`` / ``accelerate launch`` job, and in a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def global_share(count: torch.Tensor) -> torch.Tensor:
    """``count * world / (count summed over ranks)``: a rank's mean -> its share of the global mean.

    A loss that is a mean over a rank's own valid elements (a masked mean) times this factor,
    averaged over ranks as DDP averages gradients, is the mean over all ranks' valid elements: what
    one process would compute on the global batch. 1 in a single process.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return torch.ones((), device=count.device)
    total = count.detach().float().clone()
    dist.all_reduce(total)
    return count.detach().float() * dist.get_world_size() / total.clamp_min(1.0)


def param_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters, in name order (equal ranks have equal digests).

    Buffers are left out: statistics a forward pass updates from the local batch (a codebook's usage)
    differ between ranks after the last step; DDP makes rank 0's the shared ones at every forward.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Traced(Dataset):
    """Records which samples this process read (``CLAP_TRACE_SAMPLES=1``: for the multi-process tests)."""

    def __init__(self, base: Dataset):
        self.base, self.seen = base, []

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        self.seen.append(int(i))
        return self.base[i]


def _make_accelerator(config: LoopConfig):
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import DistributedDataParallelKwargs

    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    return Accelerator(
        cpu=cpu, mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
        # each step's (micro-)batch is cut across the processes: disjoint shards, the same global batch
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        # stages have branches a batch may not reach (human-only paths, state dropout)
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _enable_gradient_checkpointing(model: torch.nn.Module) -> int:
    """Gradient checkpointing on every HF transformer inside ``model``; returns how many."""
    from transformers import PreTrainedModel

    found = [m for m in model.modules() if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing]
    for m in found:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return len(found)


def _mean_over_ranks(accelerator, record: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the ranks that report it (a rank may lack one, e.g. NaN agreement)."""
    from accelerate.utils import gather_object

    sums: dict[str, list[float]] = {}
    for rec in gather_object([record]):
        for k, v in rec.items():
            sums.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in sums.items()}


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
    from accelerate.utils import DistributedType, broadcast

    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = _make_accelerator(config)
    world, rank, accum = accelerator.num_processes, accelerator.process_index, config.grad_accum
    if config.batch_size % (world * accum):
        raise ValueError(f"{stage.name}: batch_size {config.batch_size} (the global batch) must be a multiple of "
                         f"processes x grad_accum = {world} x {accum}")

    model = stage.model
    if config.gradient_checkpointing and not _enable_gradient_checkpointing(model):
        accelerator.print(f"{stage.name}: gradient_checkpointing has no transformer to act on here")
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

    ema = None
    if config.ema_decay > 0:
        if accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError(f"{stage.name}: ema_decay needs the whole weights in each process; not with FSDP")
        ema = WeightAverage(model, config.ema_decay)
    start = 0
    history: list[dict[str, float]] = []
    if resume:  # every rank reads the same checkpoint before the model is wrapped
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            state = load_checkpoint(ckpt, model, optimizer, scheduler, average=ema)
            start = int(state["step"])
            history = list(state.get("history", []))
            accelerator.print(f"{stage.name}: resumed from {ckpt} at step {start}")
        else:
            accelerator.print(f"{stage.name}: --resume given but no checkpoint in {run_dir}; starting fresh")

    stop = config.steps if stop_after is None else min(config.steps, stop_after)
    sampler = StepBatchSampler(len(stage.dataset), config.batch_size, config.seed, start, stop, micro=accum)
    trace = _Traced(stage.dataset) if os.environ.get("CLAP_TRACE_SAMPLES") else None
    loader = DataLoader(
        trace or stage.dataset,
        batch_sampler=sampler,
        collate_fn=stage.collate_fn,
        num_workers=config.num_workers,
        persistent_workers=False,
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    own = unwrap(model)

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

    def save(step: int) -> pathlib.Path | None:
        # FSDP: gathering the full weights is a collective, so every rank takes part; rank 0 writes
        full = accelerator.get_state_dict(model) if accelerator.distributed_type == DistributedType.FSDP else None
        path = None
        if accelerator.is_main_process:
            path = save_checkpoint(run_dir, step, own, optimizer, scheduler, extra(), keep_last=config.keep_last,
                                   weights=full, average=ema.state_dict() if ema is not None else None)
        accelerator.wait_for_everyone()
        return path

    last_ckpt = None
    bar = tqdm(total=stop, initial=start, desc=stage.name, disable=not (progress and accelerator.is_main_process),
               dynamic_ncols=True)
    step = start
    # wall-clock seconds of training so far (carried over a resume), for learning curves
    elapsed0 = float(history[-1].get("elapsed_s", 0.0)) if history else 0.0
    t_start = time.monotonic()
    model.train()
    micro, sums = 0, {}
    for batch in loader:
        # rank 0's first micro-batch keeps the 1-process seed; other ranks and micro-batches draw their own noise
        torch.manual_seed(config.seed * 7_919 + step + 104_729 * (rank * accum + micro))
        batch = _move(batch, accelerator.device)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss, metrics = stage.loss_fn(model, batch, step)
            mean_loss = accelerator.reduce(loss.detach().float(), "mean") if world > 1 else loss.detach()
            if not torch.isfinite(mean_loss):  # the same verdict on every rank
                raise FloatingPointError(
                    f"{stage.name}: loss is {mean_loss.item()} at step {step}; last good checkpoint: "
                    f"{latest_checkpoint(run_dir)}"
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        for k, v in {"loss": float(mean_loss), **{k: float(v) for k, v in metrics.items()}}.items():
            sums[k] = sums.get(k, 0.0) + v
        if not accelerator.sync_gradients:
            continue
        local = {k: v / micro for k, v in sums.items()}
        micro, sums = 0, {}
        scheduler.step()
        step += 1
        if stage.after_step is not None:
            stage.after_step(own, step)
        if world > 1 and stage.shared_state is not None:
            for t in stage.shared_state(own, step):
                t.data.copy_(broadcast(t.data.contiguous(), from_process=0))
        if ema is not None:
            ema.update()
        if stage.snapshot is not None and accelerator.is_main_process:
            stage.snapshot(ema.module if ema is not None else own, step)
        if world > 1:
            loss_mean = local.pop("loss")
            local = _mean_over_ranks(accelerator, local)
            local["loss"] = loss_mean
        record = {"step": step, "loss": local.pop("loss"), "lr": scheduler.get_last_lr()[0],
                  "elapsed_s": elapsed0 + time.monotonic() - t_start}
        record.update(local)
        history.append(record)
        bar.update(1)
        if step % config.log_every == 0 or step == stop:
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("step", "elapsed_s")},
                            refresh=False)
            if writer is not None:
                for k, v in record.items():
                    if k not in ("step", "elapsed_s"):
                        writer.add_scalar(f"{stage.name}/{k}", v, step)
        if step % config.save_every == 0 or step == stop:
            last_ckpt = save(step) or last_ckpt
    bar.close()
    if writer is not None:
        writer.close()
    if trace is not None:
        out = run_dir / "trace"
        out.mkdir(exist_ok=True)
        (out / f"{stage.name}-rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "world": world, "num_items": len(trace), "samples": trace.seen,
             "params": param_digest(own)}))
    if ema is not None:
        ema.copy_to_model()
    accelerator.wait_for_everyone()
    return LoopResult(final_step=step, history=history, checkpoint=last_ckpt or latest_checkpoint(run_dir))
