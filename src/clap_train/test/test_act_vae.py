"""Act-VAE model: quantisation, straight-through gradients, learning, storage."""

from __future__ import annotations

import json

import pytest
import torch

from clap_train.models.act_vae import ActVAE, ActVAEConfig, recon_psnr
from clap_train.models.quantizer import VectorQuantizer, nearest_codes, perplexity_of


def tiny(**kw) -> ActVAE:
    torch.manual_seed(0)
    cfg = dict(chunk_len=8, action_dim=4, num_queries=4, codebook_size=16, d_model=32, layers=1,
               decoder_layers=1, heads=4, code_dim=8)
    cfg.update(kw)
    return ActVAE(ActVAEConfig(**cfg))


def test_quantisation_picks_the_nearest_code():
    g = torch.Generator().manual_seed(1)
    codebook = torch.randn(37, 5, generator=g)
    z = torch.randn(3, 11, 5, generator=g)
    got = nearest_codes(z, codebook)
    # brute force with explicit distances
    want = torch.stack([torch.stack([((codebook - v) ** 2).sum(1).argmin() for v in row]) for row in z])
    assert torch.equal(got, want)
    # a vector equal to a code maps to that code
    assert nearest_codes(codebook[[4, 20]][None], codebook).tolist() == [[4, 20]]


def test_quantize_is_straight_through_and_losses_follow_the_formula():
    model = tiny()
    z_e = torch.randn(2, 4, 8, requires_grad=True)
    z_q, tokens, losses = model.quantize(z_e)
    assert tokens.dtype == torch.long and tokens.shape == (2, 4)
    assert torch.allclose(z_q, model.codebook.weight[tokens], atol=1e-6)
    (z_q * torch.arange(8.0)).sum().backward()
    # straight-through: dz_q/dz_e is the identity
    assert torch.allclose(z_e.grad, torch.arange(8.0).expand(2, 4, 8))
    e = model.codebook.weight[tokens].detach()
    assert torch.isclose(losses["codebook_loss"], ((e - z_e.detach()) ** 2).mean())
    assert torch.isclose(losses["commit_loss"], ((e - z_e.detach()) ** 2).mean())


def test_codebook_gets_gradient_only_from_codebook_loss_and_commit_only_reaches_encoder():
    model = tiny()
    chunk = torch.randn(4, 8, 4)
    z_e = model.encode(chunk)
    _, _, losses = model.quantize(z_e)
    losses["commit_loss"].backward()
    assert model.codebook.weight.grad is None or model.codebook.weight.grad.abs().sum() == 0
    assert model.action_in.weight.grad.abs().sum() > 0
    model.zero_grad()
    z_e = model.encode(chunk)
    _, _, losses = model.quantize(z_e)
    losses["codebook_loss"].backward()
    assert model.codebook.weight.grad.abs().sum() > 0
    assert model.action_in.weight.grad is None or model.action_in.weight.grad.abs().sum() == 0


def test_shapes_and_contract_interface():
    model = tiny()
    chunk = torch.rand(3, 8, 4) * 2 - 1
    out = model(chunk)
    assert out["recon"].shape == (3, 8, 4)
    assert out["tokens"].shape == (3, 4)
    assert torch.isclose(out["loss"], out["recon_loss"] + out["codebook_loss"] + out["commit_loss"])
    toks = model.tokenize(chunk)
    assert torch.equal(toks, out["tokens"])
    assert model.decode_tokens(toks).shape == (3, 8, 4)
    assert isinstance(model.codebook, torch.nn.Embedding) and model.codebook.weight.shape == (16, 8)
    with pytest.raises(ValueError, match=r"\[B, 8, 4\]"):
        model.encode(torch.zeros(2, 7, 4))
    with pytest.raises(ValueError, match="token ids"):
        model.decode_tokens(torch.full((1, 4), 16))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divisible"):
        ActVAEConfig(d_model=30, heads=4)
    with pytest.raises(ValueError, match="codebook_size"):
        ActVAEConfig(codebook_size=1)


def test_loss_falls_on_a_small_fixed_dataset():
    model = tiny()
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, 8)
    amp = torch.rand(64, 1, 4, generator=g) * 2 - 1
    data = amp * torch.sin(3 * t)[None, :, None]  # smooth chunks
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(150):
        out = model(data)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["recon_loss"].item())
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10


def test_save_and_load_round_trip(tmp_path):
    model = tiny().eval()
    chunk = torch.rand(2, 8, 4)
    model.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["codebook_size"] == 16
    again = ActVAE.from_pretrained(tmp_path / "vae")
    assert again.config == model.config
    assert torch.equal(again.tokenize(chunk), model.tokenize(chunk))
    assert torch.allclose(again.decode_tokens(model.tokenize(chunk)), model.decode_tokens(model.tokenize(chunk)))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (tmp_path / "vae" / "model.safetensors").unlink()
        ActVAE.from_pretrained(tmp_path / "vae")


def test_usage_tracking_and_dead_code_reseeding():
    vq = VectorQuantizer(8, 2, usage_decay=0.5, data_init=False).train()
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0]] + [[100.0 + i, 100.0] for i in range(7)]))
    z = torch.randn(64, 2) * 0.1  # everything maps to code 0
    for _ in range(20):
        _, tokens, losses = vq(z[None])
    assert torch.all(tokens == 0)
    assert losses["perplexity"].item() == pytest.approx(1.0)
    dead = vq.dead_codes()
    assert sorted(dead.tolist()) == list(range(1, 8))
    n = vq.reseed_dead_codes(step=3)
    assert n == 7
    # re-seeded codes now sit next to the encoder outputs, so they get used
    _, tokens, _ = vq(z[None])
    assert len(set(tokens.flatten().tolist())) > 1
    assert perplexity_of(torch.arange(8), 8).item() == pytest.approx(8.0)


def test_psnr_formula():
    assert recon_psnr(0.0004) == pytest.approx(40.0, abs=1e-6)


def test_codebook_starts_from_the_first_batch_of_latents():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 3).train()
    z = torch.randn(1, 200, 3) * 5 + 10
    vq(z)
    assert int(vq.initialized) == 1
    # every code sits next to one of the latents (far from the tiny random init)
    d = torch.cdist(vq.embedding.weight.detach(), z[0]).min(dim=1).values
    assert d.max() < 0.5
    before = vq.embedding.weight.detach().clone()
    vq(z + 1)  # no second initialisation
    assert torch.equal(before, vq.embedding.weight.detach())


def per_arm(**kw) -> ActVAE:
    """Two arms of 3 dims each, 2 codes per arm (the 14-D / 8-code shape, shrunk)."""
    return tiny(action_dim=6, num_queries=4, arms=2, **kw)


def test_per_arm_encodes_each_arm_alone_into_its_own_codes():
    model = per_arm().eval()
    chunk = torch.rand(3, 8, 6) * 2 - 1
    tokens = model.tokenize(chunk)
    assert tokens.shape == (3, 4)
    # arm-major: the left arm's tokens depend on the left arm's chunk only
    other_right = chunk.clone()
    other_right[..., 3:] = torch.rand(3, 8, 3)
    again = model.tokenize(other_right)
    assert torch.equal(again[:, :2], tokens[:, :2])
    assert torch.allclose(model.encode(other_right)[:, :2], model.encode(chunk)[:, :2], atol=1e-6)
    assert not torch.allclose(model.encode(other_right)[:, 2:], model.encode(chunk)[:, 2:])
    # shared weights: the right arm's chunk alone encodes like the left slot of a swapped chunk
    swapped = torch.cat([chunk[..., 3:], chunk[..., :3]], dim=-1)
    assert torch.allclose(model.encode(swapped)[:, :2], model.encode(chunk)[:, 2:], atol=1e-5)


def test_per_arm_round_trip_after_fitting():
    """Encode -> decode reproduces the chunk once the per-arm model has learnt a small set."""
    model = per_arm(codebook_size=32)
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, 8)
    amp = (torch.rand(16, 1, 6, generator=g) * 2 - 1).round(decimals=1)
    data = amp * torch.sin(3 * t)[None, :, None]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        out = model(data)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.eval()
    recon = model.decode_tokens(model.tokenize(data))
    assert recon.shape == data.shape
    err, spread = (recon - data).pow(2).mean(), data.pow(2).mean()
    assert err < 0.1 * spread, (float(err), float(spread))


def test_a_single_arm_uses_codes_per_arm_tokens():
    """A single-arm chunk given to the two-arm model gives 2 of its 4 codes and decodes back to one arm.

    A single-arm robot's own model (arms=1, 3 dims, 2 codes) has the same parameter shapes.
    """
    model = per_arm().eval()
    chunk = torch.rand(5, 8, 6) * 2 - 1
    right = chunk[..., 3:]
    tokens = model.tokenize(right)
    assert tokens.shape == (5, 2)
    assert torch.equal(tokens, model.tokenize(chunk)[:, 2:])
    assert model.decode_tokens(tokens).shape == (5, 8, 3)
    assert torch.allclose(model.decode_tokens(tokens), model.decode_tokens(model.tokenize(chunk))[..., 3:], atol=1e-5)
    single = tiny(action_dim=3, num_queries=2, arms=1)
    assert {k: v.shape for k, v in single.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="one arm"):
        model.encode(torch.zeros(2, 8, 4))
    with pytest.raises(ValueError, match="arms"):
        ActVAEConfig(action_dim=14, num_queries=16, arms=3)
