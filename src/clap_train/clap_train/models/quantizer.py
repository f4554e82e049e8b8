"""Nearest-neighbour vector quantisation with straight-through gradients (VQ-VAE, van den Oord 2017).

Written by hand: the maintained VQ packages (vector-quantize-pytorch and friends) are not in this
environment, and CLAP needs two things they do not expose in the form we need: a codebook that a
second model (the VD-VAE) can quantise with while it stays FROZEN (``quantize_with``, no buffers
updated, no gradient into the codes), and dead-code re-seeding that is a pure function of
(step, recent encoder outputs) so that resumed training is bit-exact.

Losses (Alg. 1): codebook ``||sg(z_e) - z_q||^2`` and commitment ``||z_e - sg(z_q)||^2``; the
caller weights the commitment by beta. Usage is tracked as an exponential moving average of code
counts (a persistent buffer, so it survives checkpoints), from which perplexity and the number
of dead codes are read.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest (squared L2) codebook row for every vector of ``z`` [..., D] -> [...]."""
    flat = z.reshape(-1, z.shape[-1])
    # ||z||^2 - 2 z.e + ||e||^2, computed in float32 for a stable argmin
    flat32, cb32 = flat.float(), codebook.float()
    d = flat32.pow(2).sum(1, keepdim=True) - 2.0 * flat32 @ cb32.t() + cb32.pow(2).sum(1)[None, :]
    return d.argmin(dim=1).reshape(z.shape[:-1])


def quantize_with(
    z_e: torch.Tensor, codebook: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Quantise ``z_e`` with a given codebook tensor; straight-through z_q, tokens and VQ losses."""
    tokens = nearest_codes(z_e.detach(), codebook)
    z_q_hard = F.embedding(tokens, codebook)
    codebook_loss = F.mse_loss(z_q_hard, z_e.detach())
    commit_loss = F.mse_loss(z_e, z_q_hard.detach())
    z_q = z_e + (z_q_hard - z_e).detach()  # straight-through estimator
    return z_q, tokens, {"codebook_loss": codebook_loss, "commit_loss": commit_loss}


def perplexity_of(tokens: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(entropy) of the empirical code distribution of ``tokens`` (1 = collapsed, K = uniform)."""
    counts = torch.bincount(tokens.reshape(-1), minlength=num_codes).float()
    p = counts / counts.sum().clamp_min(1.0)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    """A K x D codebook with usage tracking and dead-code re-seeding."""

    def __init__(self, num_codes: int, dim: int, usage_decay: float = 0.95, data_init: bool = True):
        super().__init__()
        if num_codes < 2 or dim < 1:
            raise ValueError(f"a codebook needs >= 2 codes and dim >= 1, got K={num_codes}, D={dim}")
        self.num_codes, self.dim, self.usage_decay = num_codes, dim, usage_decay
        self.embedding = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)
        # EMA of the fraction of assignments per code; starts uniform so nothing is "dead" at step 0
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))
        # data-dependent initialisation: the first training batch's latents become the codes, so the
        # codebook starts where the encoder's outputs are (1 = done; saved, so a resume does not redo it)
        self.register_buffer("initialized", torch.tensor(0 if data_init else 1, dtype=torch.long))
        self._recent: torch.Tensor | None = None  # last training batch's encoder outputs (not saved)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if self.training and torch.is_grad_enabled() and int(self.initialized) == 0:
            self._init_from(z_e.detach().reshape(-1, self.dim))
        z_q, tokens, losses = quantize_with(z_e, self.embedding.weight)
        losses["perplexity"] = perplexity_of(tokens, self.num_codes).detach()
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                counts = torch.bincount(tokens.reshape(-1), minlength=self.num_codes).float()
                frac = counts / counts.sum().clamp_min(1.0)
                self.usage.mul_(self.usage_decay).add_(frac, alpha=1.0 - self.usage_decay)
                self._recent = z_e.detach().reshape(-1, self.dim)
        return z_q, tokens, losses

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        # draws from torch's global generator, which the training loop seeds per step. Several
        # processes: the codes come from every rank's latents (the global batch, in rank order, as
        # one process would see it) with rank 0's draw, so all ranks start from one codebook.
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, flat.contiguous())
            flat = torch.cat(parts)
        idx = torch.randint(flat.shape[0], (self.num_codes,), device=flat.device)
        noise = torch.randn(self.num_codes, self.dim, device=flat.device) * 0.01 * flat.std()
        self.embedding.weight.data.copy_((flat[idx] + noise).to(self.embedding.weight.dtype))
        if distributed:
            dist.broadcast(self.embedding.weight.data, src=0)
        self.initialized.fill_(1)

    def dead_codes(self, threshold: float | None = None) -> torch.Tensor:
        """Indices of codes whose usage EMA fell below ``threshold`` (default: 1/(16 K))."""
        if threshold is None:
            threshold = 1.0 / (16 * self.num_codes)
        return torch.nonzero(self.usage < threshold).flatten()

    @torch.no_grad()
    def reseed_dead_codes(self, step: int, threshold: float | None = None, noise: float = 0.01) -> int:
        """Move dead codes onto random recent encoder outputs (deterministic in ``step``).

        Returns how many codes were re-seeded. Their usage is reset to the uniform share so they
        get a fair chance before being judged again.
        """
        dead = self.dead_codes(threshold)
        if dead.numel() == 0 or self._recent is None or self._recent.shape[0] == 0:
            return 0
        g = torch.Generator(device="cpu").manual_seed(1_000_033 * (step + 1))
        recent = self._recent.to(self.embedding.weight.device)
        pick = torch.randint(recent.shape[0], (dead.numel(),), generator=g).to(recent.device)
        jitter = torch.randn(dead.numel(), self.dim, generator=g).to(recent.device) * noise * recent.std()
        self.embedding.weight.data[dead] = (recent[pick] + jitter).to(self.embedding.weight.dtype)
        self.usage[dead] = 1.0 / self.num_codes
        return int(dead.numel())
