"""The Act-VAE in robot units (issue 21 item 1): the decoded-chunk error, and the levers the issue names.

- ``decoded_errors``: known perturbations give known mm / degrees / % of the gripper range;
  ``decode_to_robot`` denormalises and re-applies the state; a tiny Act-VAE fitted to a few chunks
  reports physical errors that fall as it trains.
- The authors' low-pass (``lowpass_chunks``): the one-pass form equals the per-window filter, it
  keeps slow motion and removes fast motion, never touches the grippers, and survives an Euler
  wrap; the trainer's ``lowpass`` option feeds those chunks.
- ``model.position_weight``: the reconstruction loss weights the position dims, the reported MSE
  does not.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from scipy.signal import filtfilt, firwin
from scipy.spatial.transform import Rotation

from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.samples.action_space import ActionSpace, lowpass_chunks, pose_indices
from clap_train.eval.rate_distortion import decode_to_robot, decoded_errors, gripper_range_of
from clap_train.models.act_vae import ActVAE, ActVAEConfig

EULER = DEFAULT_LAYOUT.euler_indices
H = 8


def _episode(n=60, seed=0):
    """A smooth bimanual episode in robot units (m, rad, gripper 0..1); the right yaw crosses +-pi."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None]
    a = np.zeros((n, 14))
    a[:, 0:3] = [-0.2, 0.5, 0.3] + np.sin(2 * t * rng.uniform(1, 2, 3)) * 0.05
    a[:, 7:10] = [0.2, 0.5, 0.3] + t * rng.normal(0, 0.1, 3)
    a[:, 3:6] = t * rng.normal(0, 0.5, 3)
    a[:, 10:13] = [0.1, -0.2, 3.0] + t * [0.0, 0.3, 0.5]
    a[:, 12] = (a[:, 12] + np.pi) % (2 * np.pi) - np.pi
    a[:, 6] = a[:, 13] = (t[:, 0] > 0.5).astype(float)
    return a


def _chunk_set(eps):
    acts, pads, states = [], [], []
    for a in eps:
        n = len(a)
        steps = np.arange(n)[:, None] + np.arange(H)[None, :]
        acts.append(a[np.minimum(steps, n - 1)])
        pads.append(steps > n - 1)
        states.append(np.vstack([a[:1], a[:-1]]))
    return np.concatenate(acts), np.concatenate(pads), np.concatenate(states)


# -- the metric --------------------------------------------------------------------------------------
def test_known_perturbations_give_known_physical_errors():
    true = np.stack([_episode(seed=1)[:H], _episode(seed=2)[:H]])
    pred = true.copy()
    left, right = DEFAULT_LAYOUT.arm_slices
    pred[..., left.position.start] += 0.003  # 3 mm along x
    turn = Rotation.from_rotvec(np.radians(2.0) * np.array([0.6, 0.0, 0.8]))  # 2 degrees about a tilted axis
    pred[..., right.euler] = (turn * Rotation.from_euler("xyz", true[..., right.euler].reshape(-1, 3))).as_euler(
        "xyz").reshape(pred[..., right.euler].shape)
    pred[..., left.gripper] += 0.02
    pad = np.zeros(true.shape[:2], dtype=bool)
    pad[:, -2:] = True
    pred[:, -2:] += 5.0  # padded rows do not count
    err = decoded_errors(pred, true, pad, DEFAULT_LAYOUT, gripper_range=[1.0, 0.5])
    assert err["left position mm"] == pytest.approx(3.0, abs=1e-6)
    assert err["right position mm"] == pytest.approx(0.0, abs=1e-6)
    assert err["right rotation deg"] == pytest.approx(2.0, abs=1e-6)  # geodesic: the angle turned
    assert err["left rotation deg"] == pytest.approx(0.0, abs=1e-6)
    assert err["left gripper %"] == pytest.approx(2.0, abs=1e-6)
    assert err["right gripper %"] == pytest.approx(0.0, abs=1e-6)
    assert err["position mm"] == pytest.approx(np.sqrt(9.0 / 2), abs=1e-6)  # RMS pooled over both arms
    # a yaw across +-pi is a small rotation, not 359 degrees
    wrapped = true.copy()
    wrapped[..., right.euler.start + 2] = np.pi - 0.005
    pred = wrapped.copy()
    pred[..., right.euler.start + 2] = -np.pi + 0.005
    assert decoded_errors(pred, wrapped, None, DEFAULT_LAYOUT, 1.0)["right rotation deg"] == pytest.approx(
        np.degrees(0.01), rel=1e-6)


class _Exact(torch.nn.Module):
    """An Act-VAE stand-in whose tokens decode to the chunk plus a fixed offset (normalised units)."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset
        self.w = torch.nn.Parameter(torch.zeros(1))

    def tokenize(self, c):
        return c

    def decode_tokens(self, c):
        return c + self.offset


def test_decode_to_robot_denormalises_and_reapplies_the_state():
    chunks, pads, states = _chunk_set([_episode(seed=s) for s in range(4)])
    space = ActionSpace.fit("relative", states, chunks, pads, EULER)
    norm = torch.as_tensor(space.normalizer.normalize("action", space.to_model(chunks, states)), dtype=torch.float32)
    exact = decode_to_robot(_Exact(0.0), space, norm, states, batch_size=7)
    err = decoded_errors(exact, chunks, pads, DEFAULT_LAYOUT, gripper_range_of(space))
    assert err["position mm"] < 1e-3 and err["rotation deg"] < 1e-4 and err["gripper %"] < 1e-4
    # 0.01 normalised units on the left x is 0.01 half-ranges of that dimension's q01..q99, in mm
    offset = torch.zeros(14)
    offset[0] = 0.01
    half = (space.normalizer.high["action"][0] - space.normalizer.low["action"][0]) / 2
    off = decode_to_robot(_Exact(offset), space, norm, states)
    assert decoded_errors(off, chunks, pads, DEFAULT_LAYOUT, 1.0)["left position mm"] == pytest.approx(
        0.01 * half * 1e3, rel=1e-3)
    assert gripper_range_of(space) == pytest.approx([1.0, 1.0])


def test_a_small_fitted_act_vae_reports_physical_errors_that_fall_as_it_trains():
    torch.manual_seed(0)
    chunks, pads, states = _chunk_set([_episode(n=12, seed=s) for s in range(2)])
    space = ActionSpace.fit("relative", states, chunks, pads, EULER)
    norm = torch.as_tensor(np.clip(space.normalizer.normalize("action", space.to_model(chunks, states)), -1.5, 1.5),
                           dtype=torch.float32)
    model = ActVAE(ActVAEConfig(chunk_len=H, num_queries=8, codebook_size=64, d_model=32, layers=1, decoder_layers=1,
                                heads=4, ffn_mult=2, code_dim=8, arms=2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def errors():
        return decoded_errors(decode_to_robot(model, space, norm, states), chunks, pads, DEFAULT_LAYOUT,
                              gripper_range_of(space))

    curve = [errors()]
    for step in range(150):  # about 2 s of one core
        model.train()
        opt.zero_grad()
        model(norm, mask=~torch.as_tensor(pads))["loss"].backward()
        opt.step()
        if step + 1 in (75, 150):
            curve.append(errors())
    before, mid, after = curve
    for name in ("position mm", "rotation deg", "gripper %"):
        assert after[name] < 0.5 * before[name], (name, curve)
    assert before["position mm"] > mid["position mm"] > after["position mm"], curve
    assert after["position mm"] < 25.0, after  # from several centimetres towards millimetres


# -- the low-pass ------------------------------------------------------------------------------------
def test_lowpass_equals_the_authors_per_window_filter_and_spares_the_grippers():
    a = _episode(n=50)
    n = len(a)
    out = lowpass_chunks(a, H, EULER, cutoff_hz=8.0, rate_hz=30.0, taps=5)
    b = firwin(5, 8.0, fs=30.0, window="hamming")
    pose = pose_indices(EULER)
    for t in (0, 3, 20, n - 5, n - 1):
        window = a[np.clip(np.arange(t - H, t + 2 * H), 0, n - 1)].copy()
        window[:, EULER] = np.unwrap(window[:, EULER], axis=0)
        window[:, pose] = filtfilt(b, [1.0], window[:, pose], axis=0)
        mid = window[H:2 * H]
        rel = Rotation.from_euler("xyz", mid[:, 10:13]) * Rotation.from_euler("xyz", out[t, :, 10:13]).inv()
        assert np.allclose(np.delete(out[t], EULER, axis=1), np.delete(mid, EULER, axis=1), atol=1e-9)
        assert np.allclose(rel.magnitude(), 0.0, atol=1e-9)
        assert abs(out[t, 0, 12] - a[t, 12]) < 0.5  # on the raw chunk's branch
        assert np.all(np.abs(np.diff(out[t, :, 12])) < 0.5)  # continuous across +-pi
    raw = a[np.minimum(np.arange(n)[:, None] + np.arange(H)[None, :], n - 1)]
    assert np.array_equal(out[..., DEFAULT_LAYOUT.gripper_indices], raw[..., DEFAULT_LAYOUT.gripper_indices])


def test_lowpass_keeps_slow_motion_and_removes_fast_motion():
    t = np.arange(300) / 30.0
    a = np.zeros((300, 14))
    a[:, 0] = 0.01 * np.sin(2 * np.pi * 1.0 * t)  # 1 Hz: a reach
    a[:, 7] = 0.01 * np.sin(2 * np.pi * 12.0 * t)  # 12 Hz: jitter above the 8 Hz cut-off
    out = lowpass_chunks(a, 32, EULER)[100:200, 0]  # the authors' filter, chunks away from the ends
    assert np.allclose(out[:, 0], a[100:200, 0], atol=0.01 * 0.05)
    assert np.abs(out[:, 7]).max() < 0.01 * 0.05
    with pytest.raises(ValueError, match="reaches past"):
        lowpass_chunks(a, 8, EULER, taps=19)


# -- position weighting ------------------------------------------------------------------------------
def test_position_weight_weights_the_loss_but_not_the_reported_mse(tmp_path):
    cfg = dict(chunk_len=H, num_queries=4, codebook_size=8, d_model=16, layers=1, decoder_layers=1, heads=2, code_dim=4,
               arms=2)
    w = ActVAEConfig(**cfg, position_weight=4.0).recon_weights()
    assert w.mean().item() == pytest.approx(1.0)
    pos = DEFAULT_LAYOUT.indices("x", "y", "z")
    assert torch.allclose(w[pos], w[0].expand(6)) and w[0] / w[3] == pytest.approx(4.0)
    torch.manual_seed(0)
    plain = ActVAE(ActVAEConfig(**cfg))
    weighted = ActVAE(ActVAEConfig(**cfg, position_weight=4.0))
    weighted.load_state_dict(plain.state_dict())
    chunk = torch.rand(3, H, 14)
    torch.manual_seed(1)  # the codebook's data-dependent initialisation draws
    a = plain(chunk)
    torch.manual_seed(1)
    b = weighted(chunk)
    assert torch.allclose(a["mse"], b["mse"]) and torch.allclose(a["recon_loss"], a["mse"])
    err = (b["recon"] - chunk).pow(2).mean(dim=(0, 1))
    assert b["recon_loss"].item() == pytest.approx((err * w).mean().item(), rel=1e-5)
    assert ActVAE.from_pretrained(weighted.save_pretrained(tmp_path / "av")).config.position_weight == 4.0
    with pytest.raises(ValueError, match="position_weight"):
        ActVAEConfig(**cfg, position_weight=0.0)
    with pytest.raises(ValueError, match="7 values per arm"):
        ActVAEConfig(chunk_len=H, action_dim=2, num_queries=2, d_model=16, heads=2, position_weight=2.0)


# -- the trainer's lowpass option --------------------------------------------------------------------
def test_the_trainer_learns_low_passed_chunks_when_asked(tmp_path):
    from clap_train.data.recording.synthetic import synthetic_dataset
    from clap_train.data.samples.action_space import fit_action_space
    from clap_train.data.samples.sources import open_dataset
    from clap_train.train import act_vae as trainer, runner

    ds = open_dataset(synthetic_dataset(2, seed=3, episode_len=64, image_size=None), 32,
                      images=False, progress=False)
    ds.action_space = fit_action_space(ds, "relative")
    chunks = trainer.LowpassChunks(ds, trainer.Lowpass(cutoff_hz=8.0), 32)
    for i in (0, 5, 70, len(ds) - 1):
        ep, t = int(ds._ep[i]), int(ds._frame[i])
        start, n = ds._start[ep], ds._length[ep]
        want = lowpass_chunks(ds._action[start:start + n], 32, ds.action_space.euler_indices)[t]
        state, got, pad = chunks.chunk(i)
        _, raw, raw_pad = ds.raw(i)
        rel = Rotation.from_euler("xyz", got[:, 3:6]) * Rotation.from_euler("xyz", want[:, 3:6]).inv()
        assert np.allclose(np.delete(got, EULER, 1), np.delete(want, EULER, 1)) and np.allclose(rel.magnitude(), 0)
        assert np.array_equal(pad, raw_pad) and np.abs(got[0, EULER] - raw[0, EULER]).max() < 0.5
        assert np.allclose(chunks[i]["action"].numpy(), ds.action_space.encode(got, state), atol=1e-6)
    assert not np.allclose(chunks.chunk(70)[1], ds.raw(70)[1])  # it did filter
    tiny = pathlib.Path(__file__).resolve().parents[3] / "config" / "train" / "tiny" / "act_vae.yaml"
    args = runner.parse_args(trainer.SPEC, ["--config", str(tiny), "--run-dir", str(tmp_path / "run"), "--synthetic",
                                            "3", "--no-progress", "--set", "lowpass.cutoff_hz=8", "loop.steps=20"])
    assert runner.run(trainer.SPEC, args) == 0
    assert (tmp_path / "run" / "act_vae" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="cutoff_hz"):
        trainer.Lowpass(cutoff_hz=15.0)
