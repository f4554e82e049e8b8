"""Training checkpoints: written atomically, found again after a crash.

Layout of a run directory::

    run_dir/
      config.yaml                      the job's config as it ran
      checkpoints/step-00000100/       one folder per saved step
        model.safetensors              trainable weights (safetensors)
        optimizer.pt                   optimizer + scheduler state (torch.save)
        state.json                     step, metric history tail, extras
      checkpoints/latest               name of the newest complete checkpoint folder
      tb/                              TensorBoard scalars

A checkpoint folder is built under a temporary name and renamed into place, and ``latest``
is replaced atomically after it, so a kill -9 at any moment leaves the previous checkpoint
usable. Optimizer state is nested Python data that safetensors cannot hold, hence torch.save
for that one file (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from clap_train.io import atomic_dir, atomic_write_text

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(run_dir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(run_dir) / "checkpoints"


def state_dict_for_safetensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous, de-aliased copy of a module's state dict (safetensors rejects shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in module.state_dict().items():
        t = tensor.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        if key is not None and key in seen:
            out[name] = t.clone().contiguous().cpu()
        else:
            out[name] = t.contiguous().cpu()
            if key is not None:
                seen[key] = name
    return out


def save_checkpoint(
    run_dir: str | pathlib.Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    state: dict[str, Any] | None = None,
    keep_last: int = 2,
    weights: dict[str, torch.Tensor] | None = None,
    average: dict[str, torch.Tensor] | None = None,
) -> pathlib.Path:
    """Write checkpoint ``step`` and point ``latest`` at it; prune older ones beyond ``keep_last``.

    ``weights``: the full state dict when the model itself holds only a shard (FSDP gathers it).
    ``average``: the weight average's state (``ema.safetensors``), when the run keeps one.
    """
    root = checkpoint_root(run_dir)
    final = root / f"step-{step:08d}"
    with atomic_dir(final) as tmp:
        tensors = (state_dict_for_safetensors(model) if weights is None
                   else {k: v.detach().contiguous().cpu() for k, v in weights.items()})
        save_file(tensors, str(tmp / "model.safetensors"))
        if average is not None:
            save_file(average, str(tmp / "ema.safetensors"))
        if optimizer is not None:
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                },
                tmp / "optimizer.pt",
            )
        (tmp / "state.json").write_text(json.dumps({"step": step, **(state or {})}, indent=1))
    atomic_write_text(root / "latest", final.name + "\n")
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | pathlib.Path) -> list[pathlib.Path]:
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | pathlib.Path) -> pathlib.Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = checkpoint_root(run_dir)
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "state.json").is_file():
            return candidate
    complete = [p for p in list_checkpoints(run_dir) if (p / "state.json").is_file()]
    return complete[-1] if complete else None


def load_checkpoint(
    path: str | pathlib.Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    strict: bool = True,
    average: Any | None = None,
) -> dict[str, Any]:
    """Load weights (and optimizer/scheduler state when given) from a checkpoint folder.

    ``average``: a ``WeightAverage`` to restore from ``ema.safetensors``; a checkpoint written
    without one starts the average at the loaded weights.
    """
    path = pathlib.Path(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {path} has no model.safetensors")
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"checkpoint {weights} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if average is not None:
        if (path / "ema.safetensors").is_file():
            average.load_state_dict(load_file(str(path / "ema.safetensors")))
        else:
            average.averaged.module.load_state_dict(model.state_dict())
    if optimizer is not None and (path / "optimizer.pt").is_file():
        blob = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None and blob.get("scheduler") is not None:
            scheduler.load_state_dict(blob["scheduler"])
    return json.loads((path / "state.json").read_text())
