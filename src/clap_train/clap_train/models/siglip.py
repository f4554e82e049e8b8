"""The sigmoid contrastive loss of CLAP Eq. 3 (SigLIP, Zhai et al. 2023), with learnable tau and bias.

For anchors x_i and their positives y_i (i = 1..B), with cosine similarities s_ij = cos(x_i, y_j):

    L_i = -log sigma(s_ii / tau + b) - sum_{j != i} log(1 - sigma(s_ij / tau + b))

and the loss is the mean of L_i over the batch (the other samples' positives are the negatives).
This is Eq. 3's ``(s - b') / tau`` with the bias moved outside the temperature (``b = -b' / tau``),
the parametrisation of SigLIP and of the authors' release: the logit bias starts at -10 with
tau = 0.1, so that at the start every pair, positive or not, sits at a small probability and the
B - 1 negatives of a sample do not swamp its one positive (SigLIP's argument for the -10). tau is
parametrised by its logarithm (always positive).

``groups`` splits the sequence [B, N, D] into that many consecutive groups of positions (the
arms of a per-arm Act-VAE: positions 0..7 the left arm, 8..15 the right) and averages the loss of
each group: an arm's motion is matched with its own positive, not only the pair of arms at once.

Written by hand: the loss is a few lines, and open_clip / transformers' SigLIP heads live inside
their full image-text models.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def siglip_loss(anchors: torch.Tensor, positives: torch.Tensor, tau: torch.Tensor | float,
                bias: torch.Tensor | float, groups: int = 1) -> torch.Tensor:
    """Eq. 3 averaged over the batch (and over ``groups``). ``anchors``/``positives``: [B, N, ...]."""
    if anchors.shape != positives.shape:
        raise ValueError(f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} differ in shape")
    b = anchors.shape[0]
    if groups < 1 or (groups > 1 and (anchors.dim() < 2 or anchors.shape[1] % groups)):
        raise ValueError(f"cannot split {tuple(anchors.shape)} into {groups} groups of positions")
    a = F.normalize(anchors.reshape(b, groups, -1).float(), dim=-1).transpose(0, 1)  # [G, B, N/G * D]
    p = F.normalize(positives.reshape(b, groups, -1).float(), dim=-1).transpose(0, 1)
    logits = a @ p.transpose(1, 2) / tau + bias  # [G, B, B]
    labels = 2.0 * torch.eye(b, device=logits.device) - 1.0  # +1 on the diagonal, -1 elsewhere
    # -log sigma(z) for positives, -log(1 - sigma(z)) = -log sigma(-z) for negatives
    return -F.logsigmoid(labels * logits).sum(dim=2).mean()


class SigLIPLoss(nn.Module):
    """Eq. 3 with a learnable temperature (via log tau) and logit bias."""

    def __init__(self, init_tau: float = 0.1, init_bias: float = -10.0, groups: int = 1):
        super().__init__()
        if init_tau <= 0:
            raise ValueError(f"init_tau must be positive, got {init_tau}")
        self.groups = groups
        self.log_tau = nn.Parameter(torch.tensor(math.log(init_tau)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        return siglip_loss(anchors, positives, self.tau, self.bias, self.groups)
