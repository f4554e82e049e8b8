"""An exponential moving average of a stage's weights: what the loop exports when ``ema_decay`` > 0.

Diffusion Policy and openpi evaluate the EMA of their flow/diffusion weights rather than the last
step's: the last step's weights move with each mini-batch's noise draw, and closed-loop success
jumps between neighbouring checkpoints. The average is torch's own
(``torch.optim.swa_utils.AveragedModel``) with the usual warm-up of the decay,
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so an early average is not stuck at the
initial weights. Buffers are copied from the trained model, not averaged (a codebook's usage
counts or an EMA teacher are state, not weights).
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def _ema_update(decay: float):
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


class WeightAverage:
    """The EMA of ``model``'s parameters; ``state_dict()`` / ``load_state_dict()`` for checkpoints."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) to average, got {decay}")
        self.model = model
        self.averaged = AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=False)

    def update(self) -> None:
        """Fold the model's current weights in (after an optimiser step)."""
        self.averaged.update_parameters(self.model)

    @property
    def module(self) -> torch.nn.Module:
        """The averaged module, with the trained model's current buffers."""
        own = dict(self.model.named_buffers())
        for name, b in self.averaged.module.named_buffers():
            b.copy_(own[name])
        return self.averaged.module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.averaged.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.averaged.load_state_dict(state)

    def copy_to_model(self) -> None:
        """Overwrite the model's parameters with the average (at the end of a run, before export)."""
        with torch.no_grad():
            for p, a in zip(self.model.parameters(), self.averaged.module.parameters()):
                p.copy_(a)
