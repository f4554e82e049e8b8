"""CLAP-RF flow head: time schedule, Euler sampler, overfitting, real-time-chunking guidance."""

import pytest
import torch

from clap_train.models.flow_head import (
    FlowHead, FlowHeadConfig, RTCGuidance, default_feature_layers, euler_sample,
)


def small_head(**kw):
    cfg = dict(chunk_len=8, action_dim=3, state_dim=3, vlm_hidden=16, feature_layers=[0, 2], d_model=32, layers=2,
               heads=4, ffn_mult=2)
    cfg.update(kw)
    return FlowHead(FlowHeadConfig(**cfg))


def test_sampler_recovers_a_known_linear_flow():
    # Straight-line flow toward a fixed target: v(x, t) = (a* - x) / (1 - t). Its paths are lines,
    # so Euler integration lands on a* exactly, for any step count.
    target = torch.tensor([[[0.5, -0.25, 1.0]] * 8])
    for steps in (1, 3, 10):
        out = euler_sample(lambda x, t, k: (target - x) / (1 - t[:, None, None]), 1, (8, 3), steps,
                           generator=torch.Generator().manual_seed(0))
        assert torch.allclose(out, target, atol=1e-5)
    # constant velocity c moves the noise by exactly c
    noise = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(1))
    c = torch.full((2, 8, 3), 0.3)
    assert torch.allclose(euler_sample(lambda x, t, k: c, 2, (8, 3), 7, noise=noise), noise + c, atol=1e-5)


def test_time_schedule_is_beta_1_5_1_favouring_noise():
    head = small_head()
    torch.manual_seed(0)
    rho = head.sample_time(20000, "cpu")
    assert rho.min() >= 0 and rho.max() <= 0.999
    # rho = 0.999 (1 - u), u ~ Beta(1.5, 1): E[u] = 0.6 -> E[rho] = 0.3996
    assert abs(rho.mean().item() - 0.3996) < 0.01
    assert (rho < 0.5).float().mean() > 0.6


def test_head_overfits_one_batch_and_samples_it():
    torch.manual_seed(0)
    head = small_head()
    ctx_feats = [torch.randn(2, 5, 16), torch.randn(2, 5, 16)]
    actions = torch.stack([torch.linspace(-0.8, 0.8, 8)[:, None].expand(8, 3),
                           torch.linspace(0.8, -0.8, 8)[:, None].expand(8, 3)])
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = head.rf_loss(actions, head.fuse(ctx_feats))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first
    with torch.no_grad():
        out = head.sample(head.fuse(ctx_feats), generator=torch.Generator().manual_seed(0))
    assert (out - actions).abs().mean() < 0.25  # each context gets its own chunk back


def test_padding_steps_do_not_count():
    torch.manual_seed(0)
    head = small_head()
    ctx = head.fuse([torch.randn(1, 4, 16), torch.randn(1, 4, 16)])
    a = torch.zeros(1, 8, 3)
    pad = torch.zeros(1, 8, dtype=torch.bool)
    pad[:, 4:] = True
    b = a.clone()
    b[:, 4:] = 100.0  # garbage past the episode end
    torch.manual_seed(5)
    la = head.rf_loss(a, ctx, pad=pad)
    torch.manual_seed(5)
    lb = head.rf_loss(b, ctx, pad=pad)
    assert torch.allclose(la, lb)


def test_rtc_weights():
    g = RTCGuidance(torch.zeros(1, 10, 3), delay=3)
    w = g.weights(16)
    assert torch.all(w[:3] == 1) and torch.all(w[10:] == 0)
    assert torch.all(w[3:10] > 0) and torch.all(w[3:10] < 1) and torch.all(w[3:10].diff() < 0)
    lin = RTCGuidance(torch.zeros(1, 10, 3), delay=3, schedule="linear").weights(16)
    assert torch.all(lin[3:10] >= w[3:10])  # exponential decays faster than linear
    with pytest.raises(ValueError, match="delay"):
        RTCGuidance(torch.zeros(1, 4, 3), delay=-1)


def test_rtc_guidance_follows_previous_chunk_and_shrinks_the_jump():
    torch.manual_seed(0)
    head = small_head(layers=1)
    with torch.no_grad():  # a random head with a non-trivial velocity field
        for p in head.parameters():
            if p.dim() > 1 and float(p.abs().sum()) == 0.0:
                p.normal_(0, 0.05)
    ctx = head.fuse([torch.randn(1, 4, 16), torch.randn(1, 4, 16)])
    prev = torch.linspace(-0.5, 0.5, 6)[None, :, None].expand(1, 6, 3).contiguous()
    d = 3
    plain = head.sample(ctx, generator=torch.Generator().manual_seed(1))
    guided = head.sample(ctx, generator=torch.Generator().manual_seed(1), guide=RTCGuidance(prev, d))
    err_plain = (plain[0, :d] - prev[0, :d]).abs().max()
    err_guided = (guided[0, :d] - prev[0, :d]).abs().max()
    assert err_guided < 0.1 and err_guided < 0.2 * err_plain
    # the boundary step right after the frozen prefix stays close to where the old chunk was going
    assert (guided[0, d] - prev[0, d]).abs().max() < (plain[0, d] - prev[0, d]).abs().max()


def test_config_validation_and_default_layers():
    with pytest.raises(ValueError, match="feature_layers"):
        FlowHeadConfig(feature_layers=[])
    with pytest.raises(ValueError, match="divisible"):
        FlowHeadConfig(d_model=30, heads=4)
    assert default_feature_layers(36) == [6, 17]
    assert default_feature_layers(4) == [0, 1]
    assert FlowHeadConfig(feature_layers=[6, 17]).depth_needed == 18


def test_sampler_with_precomputed_modulations_equals_step_by_step_forward():
    torch.manual_seed(0)
    head = small_head()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
        ctx = head.fuse([torch.randn(2, 5, 16), torch.randn(2, 5, 16)])
        state = torch.randn(2, 3)
        fast = head.sample(ctx, state=state, generator=torch.Generator().manual_seed(4), num_steps=5)
        slow = euler_sample(lambda x, t, k: head(x, t, ctx, state=state), 2, (8, 3), 5,
                            generator=torch.Generator().manual_seed(4))
    assert torch.allclose(fast, slow, atol=1e-5)
