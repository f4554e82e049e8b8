"""Knowledge Matching: reverse KL to a frozen reference over action-token positions."""

import copy

import pytest
import torch

from clap_train.models.knowledge_matching import reverse_kl


def test_kl_is_zero_for_equal_distributions_and_positive_otherwise():
    torch.manual_seed(0)
    a = torch.randn(6, 50)
    assert reverse_kl(a, a.clone()).abs().item() < 1e-6
    assert reverse_kl(a, a + 3.0).abs().item() < 1e-5  # softmax is shift invariant
    b = torch.randn(6, 50)
    kl = reverse_kl(a, b)
    assert kl.item() > 0.01
    # reverse KL(p||q) differs from forward KL(q||p) in general
    assert abs(kl.item() - reverse_kl(b, a).item()) > 1e-4


def test_kl_matches_definition():
    torch.manual_seed(1)
    p_logits, q_logits = torch.randn(3, 7), torch.randn(3, 7)
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(reverse_kl(p_logits, q_logits), expected, atol=1e-6)


def test_reference_gets_no_gradient_and_policy_does():
    torch.manual_seed(2)
    policy = torch.nn.Linear(8, 20)
    reference = copy.deepcopy(policy)
    x = torch.randn(5, 8)
    kl = reverse_kl(policy(x), reference(x))
    assert kl.item() < 1e-6
    kl.backward()
    assert all(p.grad is None for p in reference.parameters())
    # identical policy and reference: the KL is at its minimum, so its gradient vanishes
    assert policy.weight.grad.abs().max().item() < 1e-6
    with torch.no_grad():
        policy.weight.add_(torch.randn_like(policy.weight))
    policy.zero_grad()
    kl = reverse_kl(policy(x), reference(x))
    kl.backward()
    assert kl.item() > 0 and policy.weight.grad.abs().max().item() > 1e-4
    assert all(p.grad is None for p in reference.parameters())


def test_shape_mismatch_and_empty():
    with pytest.raises(ValueError, match="differ in shape"):
        reverse_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    empty = torch.zeros(0, 5, requires_grad=True)
    assert reverse_kl(empty, torch.zeros(0, 5)).item() == 0.0
