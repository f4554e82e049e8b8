"""VD-VAE: SigLIP loss, EMA teacher, frozen Act-VAE codebook, learning, labelling, exact resume."""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch

from clap_train.models.act_vae import ActVAE, ActVAEConfig
from clap_train.models.siglip import SigLIPLoss, siglip_loss
from clap_train.models.vd_vae import VDVAE, VDVAEConfig
from clap_train.data.samples.pseudo_tokens import WithPseudoTokens, read_pseudo_tokens
from clap_train.train import label_videos, runner, vd_vae as trainer
from clap_train.train.checkpoint import latest_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[3]
TINY = ROOT / "config" / "train" / "tiny" / "vd_vae.yaml"


def tiny_act_vae() -> ActVAE:
    torch.manual_seed(0)
    return ActVAE(ActVAEConfig(num_queries=4, codebook_size=16, d_model=32, layers=1, decoder_layers=1, heads=4,
                               code_dim=8))


def tiny_vd(act: ActVAE | None = None, **kw) -> VDVAE:
    torch.manual_seed(1)
    cfg = dict(image_size=32, patch_size=8, backbone_hidden=32, backbone_layers=1, d_model=32, layers=1,
               decoder_layers=1, heads=4)
    cfg.update(kw)
    return VDVAE(VDVAEConfig(**cfg), act or tiny_act_vae())


@pytest.fixture(scope="module")
def act_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("act") / "act_vae"
    tiny_act_vae().save_pretrained(d)
    return d


def test_siglip_loss_equals_a_hand_computed_3x3_example():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    tau, b = 0.5, 0.2

    def cos(u, v):
        return sum(a * c for a, c in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(c * c for c in v))

    def sigma(z):
        return 1.0 / (1.0 + math.exp(-z))

    total = 0.0
    for i in range(3):
        total += -math.log(sigma(cos(x[i].tolist(), y[i].tolist()) / tau + b))
        for j in range(3):
            if j != i:
                total += -math.log(1.0 - sigma(cos(x[i].tolist(), y[j].tolist()) / tau + b))
    want = total / 3
    assert siglip_loss(x, y, tau, b).item() == pytest.approx(want, rel=1e-6)
    mod = SigLIPLoss(init_tau=tau, init_bias=b)
    loss = mod(x, y)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()  # temperature and bias are learnable
    assert mod.log_tau.grad is not None and mod.bias.grad is not None and mod.bias.grad != 0
    with pytest.raises(ValueError, match="differ in shape"):
        siglip_loss(x, y[:2], tau, b)


def test_siglip_per_group_is_the_mean_of_each_groups_loss():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, 3, generator=g), torch.randn(5, 4, 3, generator=g)
    per_group = [siglip_loss(x[:, k:k + 2], y[:, k:k + 2], 0.1, -10.0) for k in (0, 2)]
    assert siglip_loss(x, y, 0.1, -10.0, groups=2).item() == pytest.approx(sum(per_group).item() / 2, rel=1e-6)
    with pytest.raises(ValueError, match="3 groups"):
        siglip_loss(x, y, 0.1, -10.0, groups=3)


def test_ema_teacher_update_matches_its_formula():
    m = tiny_vd(ema_decay=0.9)
    with torch.no_grad():
        for p in m.inverse.parameters():
            p.add_(torch.randn_like(p))
    before_t = [p.detach().clone() for p in m.teacher.parameters()]
    online = [p.detach().clone() for p in m.inverse.parameters()]
    m.update_teacher()
    for t0, s, t1 in zip(before_t, online, m.teacher.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in m.teacher.parameters())


def test_frozen_parts_get_no_gradient_and_codes_come_from_the_act_vae():
    m = tiny_vd().train()
    assert not m.backbone.training and not m.act_vae.training
    img = torch.rand(4, 3, 32, 32)
    f_t, f_h = m.features(img), m.features(img.flip(0))
    assert f_t.shape == (4, 16, 32) and not f_t.requires_grad
    out = m(f_t, f_h, torch.tensor([True, True, False, False]), torch.rand(4, 32, 14) * 2 - 1)
    out["loss"].backward()
    assert all(p.grad is None for p in m.act_vae.parameters())
    assert all(p.grad is None for p in m.backbone.parameters())
    assert m.inverse.to_action.weight.grad.abs().sum() > 0
    assert m.env_quantizer.embedding.weight.grad.abs().sum() > 0
    # pseudo tokens are the nearest Act-VAE codes of z_v,a
    z_a, _ = m.inverse(f_t, f_h)
    d = torch.cdist(z_a.reshape(-1, 8), m.act_vae.codebook.weight)
    assert torch.equal(m.tokenize_features(f_t, f_h).reshape(-1), d.argmin(1))


def _args(run_dir, act_dir, *extra, stop_after=None):
    argv = ["--config", str(TINY), "--run-dir", str(run_dir), "--synthetic", "3", "--no-progress",
            "--set", f"act_vae={act_dir}", *extra]
    if stop_after is not None:
        argv += ["--stop-after", str(stop_after)]
    return runner.parse_args(trainer.SPEC, argv)


def test_training_keeps_the_act_vae_codebook_bit_identical_and_lowers_the_loss(tmp_path, act_dir):
    before = ActVAE.from_pretrained(act_dir).state_dict()
    args = _args(tmp_path, act_dir, "loop.steps=60", "loop.save_every=60", "feature_cache=true")
    assert runner.run(trainer.SPEC, args) == 0
    trained = VDVAE.from_pretrained(tmp_path / "vd_vae")
    after = trained.act_vae.state_dict()
    assert torch.equal(before["quantizer.embedding.weight"], after["quantizer.embedding.weight"])
    assert all(torch.equal(before[k], after[k]) for k in before)  # the whole Act-VAE, buffers included
    hist = {h["step"]: h for h in json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())["history"]}
    first = sum(hist[s]["rec_loss"] for s in range(1, 9)) / 8
    last = sum(hist[s]["rec_loss"] for s in range(53, 61)) / 8
    assert last < 0.7 * first
    assert 0.0 < sum(hist[s]["human_share"] for s in hist) / len(hist) < 1.0  # mixed batches
    assert (tmp_path / "vd_vae" / "stats.json").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))

    # label-videos: a sidecar with one row of Nq tokens per frame
    out = tmp_path / "labelled"
    p = argparse.ArgumentParser()
    label_videos.add_arguments(p)
    args = p.parse_args(["--vd-vae", str(tmp_path / "vd_vae"), "--synthetic", "2", "--out", str(out),
                         "--no-progress", "--episode-len", "64"])
    assert label_videos.run(args) == 0
    table = pq.read_table(out / "meta" / "pseudo_tokens.parquet")
    assert table.num_rows == 2 * 64
    toks = table.column("action_tokens").to_pylist()
    assert all(len(t) == 4 and all(0 <= v < 16 for v in t) for t in toks)
    assert read_pseudo_tokens(out)[(1, 5)] == toks[64 + 5]
    from clap_train.data.recording.synthetic import synthetic_dataset
    from clap_train.data.samples.sources import open_dataset

    # token agreement, with its baselines (their values are tested in test_token_agreement.py)
    from clap_train.eval.token_agreement import token_agreement

    robot = open_dataset(synthetic_dataset(2, seed=5, episode_len=64, image_size=32), 32, 32, 32,
                         stats=json.loads((tmp_path / "vd_vae" / "stats.json").read_text()))
    res = token_agreement(trained, robot, batch_size=16)
    assert res["samples"] == 2 * (64 - 31)  # unpadded chunks only
    assert len(res["per_position"]) == 4 and 0.0 <= res["agreement"] <= 1.0
    assert 0.0 <= res["baseline"] <= 1.0 and 0.0 <= res["retrieval_top1"] <= 1.0

    # the NTP stage reads them as the sample key action_tokens

    base = open_dataset(synthetic_dataset(2, seed=424_242, episode_len=64, image_size=32, human=True), 32, 32, 32)
    human = WithPseudoTokens(base, out)
    assert human[64 + 5]["action_tokens"].tolist() == toks[64 + 5]
    assert human[3]["action_tokens"].dtype == torch.long


def test_feature_cache_gives_the_same_losses(tmp_path, act_dir):
    assert runner.run(trainer.SPEC, _args(tmp_path / "a", act_dir, "loop.steps=6", "feature_cache=false")) == 0
    assert runner.run(trainer.SPEC, _args(tmp_path / "b", act_dir, "loop.steps=6", "feature_cache=true")) == 0
    ha = json.loads((latest_checkpoint(tmp_path / "a") / "state.json").read_text())["history"]
    hb = json.loads((latest_checkpoint(tmp_path / "b") / "state.json").read_text())["history"]
    for a, b in zip(ha, hb):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)


def test_missing_act_vae_is_named(tmp_path, capsys):
    assert runner.run(trainer.SPEC, _args(tmp_path, tmp_path / "no_such_vae")) == 2
    assert "no_such_vae" in capsys.readouterr().err


def test_resume_after_kill_9_gives_the_same_next_losses(tmp_path, act_dir, sigkill_after_checkpoint):
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "clap_train.cli", "train", "vd-vae", "--config", str(TINY), "--synthetic", "3",
           "--run-dir", str(killed), "--no-progress", "--set", f"act_vae={act_dir}", "loop.steps=100000",
           "loop.save_every=4", "feature_cache=true"]
    env = sigkill_after_checkpoint(cmd, killed, timeout=90)
    saved = int(json.loads((latest_checkpoint(killed) / "state.json").read_text())["step"])
    stop = saved + 3
    resumed = subprocess.run(cmd + ["--resume", "--stop-after", str(stop)], env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ref = tmp_path / "ref"
    i = cmd.index("--run-dir")
    ref_run = subprocess.run([*cmd[: i + 1], str(ref), *cmd[i + 2 :], "--stop-after", str(stop)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert ref_run.returncode == 0, ref_run.stderr[-2000:]
    a = {h["step"]: h for h in json.loads((latest_checkpoint(killed) / "state.json").read_text())["history"]}
    b = {h["step"]: h for h in json.loads((latest_checkpoint(ref) / "state.json").read_text())["history"]}
    for s in range(saved + 1, stop + 1):
        assert a[s]["loss"] == b[s]["loss"], (s, a[s]["loss"], b[s]["loss"])


def test_image_augmentation_draws_one_crop_and_jitter_per_transition_pair():
    m = tiny_vd(crop_scale=0.5, color_jitter=0.3)
    torch.manual_seed(0)
    img = torch.rand(6, 3, 32, 32)
    a_t, a_h = m.augment_images(img, img.clone())
    assert torch.equal(a_t, a_h)  # o_t and o_{t+H} share the draw: the motion between them is kept
    assert a_t.shape == img.shape and float(a_t.min()) >= 0.0 and float(a_t.max()) <= 1.0
    assert not torch.allclose(a_t, img, atol=0.05)
    assert not torch.allclose(a_t[0], a_t[1])  # each pair its own draw
    # a bright square moved by 4 px between the frames stays 4 px apart after a pure crop (no jitter)
    m = tiny_vd(crop_scale=1.0, color_jitter=0.0)
    t, h = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    t[..., 10:14, 10:14], h[..., 10:14, 14:18] = 1.0, 1.0
    a_t, a_h = m.augment_images(t, h)
    assert torch.allclose(a_t, t, atol=1e-5) and torch.allclose(a_h, h, atol=1e-5)


def test_tints_and_erasing_are_shared_by_the_pair_and_erase_a_rectangle():
    torch.manual_seed(1)
    img = torch.full((8, 3, 32, 32), 0.5)
    img[:, :, 8:24, 8:24] = 0.9  # a bright square: the frame's mean colour is 0.6
    m = tiny_vd(crop_scale=1.0, color_jitter=0.0, channel_gain=0.5)
    a_t, a_h = m.augment_images(img, img.clone())
    assert torch.equal(a_t, a_h)  # the pair shares its tint
    assert float((a_t[:, 0] - a_t[:, 1]).abs().amax(dim=(1, 2)).min()) > 0.01  # grey turned into a colour
    m = tiny_vd(crop_scale=1.0, color_jitter=0.0, erase=1.0)
    a_t, a_h = m.augment_images(img, img.clone())
    assert torch.equal(a_t, a_h)
    # one rectangle per sample (side 20-50 %: 4-25 % of the frame) holds the mean colour; the rest is untouched
    erased = (a_t - 0.6).abs().amax(dim=1) < 1e-6
    share = erased.float().mean(dim=(1, 2))
    assert bool(((share >= 0.03) & (share <= 0.26)).all()), share
    assert torch.equal(a_t.permute(0, 2, 3, 1)[~erased], img.permute(0, 2, 3, 1)[~erased])
    m = tiny_vd(crop_scale=1.0, color_jitter=0.0)  # the defaults leave the frames alone
    assert torch.allclose(m.augment_images(img, img.clone())[0], img, atol=1e-5)


def test_the_stage_trains_on_a_per_arm_relative_act_vae(tmp_path):
    """A per-arm Act-VAE (8 codes per arm) with relative actions: the VD-VAE stage trains and says 16 tokens."""
    torch.manual_seed(0)
    act = ActVAE(ActVAEConfig(num_queries=16, codebook_size=16, d_model=32, layers=1, decoder_layers=1, heads=4,
                              code_dim=8, arms=2))
    act_dir = act.save_pretrained(tmp_path / "act_vae")
    from clap_train.data.samples.action_space import fit_action_space
    from clap_train.data.recording.synthetic import synthetic_dataset
    from clap_train.data.samples.sources import open_dataset

    robot = open_dataset(synthetic_dataset(2, seed=0, episode_len=64, image_size=None), 32, images=False)
    fit_action_space(robot, "relative").save(act_dir)
    assert runner.run(trainer.SPEC, _args(tmp_path / "run", act_dir, "loop.steps=4", "loop.save_every=4")) == 0
    vd = VDVAE.from_pretrained(tmp_path / "run" / "vd_vae")
    assert vd.siglip.groups == 2
    assert vd.tokenize(torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)).shape == (3, 16)
    assert json.loads((tmp_path / "run" / "vd_vae" / "action_space.json").read_text())["representation"] == "relative"
