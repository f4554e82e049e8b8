"""Knowledge Matching (Sec. III-E2): reverse KL from the trainable token policy to a frozen reference.

L_KL = mean over robot action-token positions l of KL(p_policy(. | c_l) || p_ref(. | c_l)), with
c_l = (y_<l, o_t, I) and the full vocabulary as the support. The reference logits are detached,
so no gradient reaches the reference. Computed in float32 with log-softmax for stability.
Written by hand: it is three lines of torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reverse_kl(policy_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """KL(policy || reference) per position, averaged: logits [N, V] each -> scalar (0 when N == 0)."""
    if policy_logits.shape != reference_logits.shape:
        raise ValueError(f"policy logits {tuple(policy_logits.shape)} and reference logits "
                         f"{tuple(reference_logits.shape)} differ in shape")
    if policy_logits.shape[0] == 0:
        return policy_logits.sum() * 0.0
    logp = F.log_softmax(policy_logits.float(), dim=-1)
    logq = F.log_softmax(reference_logits.detach().float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1).mean()


class ReferenceCache:
    """The frozen reference's action-token logits per sample, so a sample seen again costs no reference pass.

    The reference is frozen and its input is a function of the sample and of the cameras it is shown
    (wrist dropout): ``key`` = (sample index, cameras kept). An entry is that sample's logits at its
    robot action-token positions, [N_b, V] float32 on the CPU. Entries are added until ``max_bytes``
    is reached; after that, misses are computed and not kept. Logits recomputed in another batch
    differ only by float rounding (the sums run in another order), so a hit and a fresh pass give the
    same KL to float tolerance (tested in test_km_rf.py).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._entries: dict = {}
        self.hits = self.misses = 0

    def lookup(self, keys) -> list:
        found = [self._entries.get(k) for k in keys]
        n = sum(f is not None for f in found)
        self.hits += n
        self.misses += len(found) - n
        return found

    def store(self, key, logits: torch.Tensor) -> None:
        size = logits.numel() * 4
        if key not in self._entries and self.bytes + size <= self.max_bytes:
            self._entries[key] = logits.detach().float().cpu().clone()
            self.bytes += size

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
