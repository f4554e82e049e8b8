"""The sigmoid contrastive loss of CLAP Eq. 3 (SigLIP, Zhai et al. 2023), with learnable tau and b.

For anchors x_i and their positives y_i (i = 1..B), with cosine similarities s_ij = cos(x_i, y_j):

    L_i = -log sigma((s_ii - b) / tau) - sum_{j != i} log(1 - sigma((s_ij - b) / tau))

and the loss is the mean of L_i over the batch (the other samples' positives are the negatives).
Sequences [B, N, D] are compared as one flattened vector each, so position k of the anchor is
matched with position k of the positive. tau is parametrised by its logarithm (always positive).

Written by hand: the loss is a few lines, and open_clip / transformers' SigLIP heads use the
``s * t + b`` parametrisation inside full models rather than Eq. 3's ``(s - b) / tau``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def siglip_loss(anchors: torch.Tensor, positives: torch.Tensor, tau: torch.Tensor | float,
                bias: torch.Tensor | float) -> torch.Tensor:
    """Eq. 3 averaged over the batch. ``anchors``/``positives``: [B, ...] (flattened per sample)."""
    if anchors.shape != positives.shape:
        raise ValueError(f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} differ in shape")
    a = F.normalize(anchors.reshape(anchors.shape[0], -1).float(), dim=-1)
    p = F.normalize(positives.reshape(positives.shape[0], -1).float(), dim=-1)
    logits = (a @ p.t() - bias) / tau
    labels = 2.0 * torch.eye(logits.shape[0], device=logits.device) - 1.0  # +1 on the diagonal, -1 elsewhere
    # -log sigma(z) for positives, -log(1 - sigma(z)) = -log sigma(-z) for negatives
    return -F.logsigmoid(labels * logits).sum(dim=1).mean()


class SigLIPLoss(nn.Module):
    """Eq. 3 with a learnable temperature (via log tau) and bias."""

    def __init__(self, init_tau: float = 0.1, init_bias: float = 0.0):
        super().__init__()
        if init_tau <= 0:
            raise ValueError(f"init_tau must be positive, got {init_tau}")
        self.log_tau = nn.Parameter(torch.tensor(math.log(init_tau)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        return siglip_loss(anchors, positives, self.tau, self.bias)
