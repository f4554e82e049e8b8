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
