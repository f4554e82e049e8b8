"""``clap train ntp`` end to end on synthetic data: trains, exports a loadable policy, resumes exactly."""

import json
import pathlib

import numpy as np
import pytest
import torch

from clap_train.policy import ClapPolicy
from clap_train.models.ntp import batch_codes
from clap_train.models.pretrained import load_act_vae
from clap_train.train import ntp as ntp_train, runner
from clap_train.train.checkpoint import latest_checkpoint

CONFIG = pathlib.Path(__file__).resolve().parents[3] / "config" / "train" / "tiny" / "ntp.yaml"


def args(run_dir, act_vae_dir, steps, stop_after=None, resume=False, extra=()):
    argv = ["--config", str(CONFIG), "--synthetic", "2", "--human-synthetic", "1", "--run-dir", str(run_dir),
            "--no-progress", "--set", f"act_vae={act_vae_dir}", f"loop.steps={steps}", "loop.save_every=2",
            "loop.batch_size=3", "synthetic_episode_len=40", *extra]
    if stop_after is not None:
        argv += ["--stop-after", str(stop_after)]
    if resume:
        argv.append("--resume")
    return runner.parse_args(ntp_train.SPEC, argv)


def history(run_dir):
    return json.loads((latest_checkpoint(run_dir) / "state.json").read_text())["history"]


def test_train_export_and_load(tmp_path, act_vae_dir):
    run_dir = tmp_path / "run"
    assert runner.run(ntp_train.SPEC, args(run_dir, act_vae_dir, 30, extra=("loop.lr=3e-3",))) == 0
    hist = history(run_dir)
    assert len(hist) == 30
    first, last = np.mean([h["loss"] for h in hist[:3]]), np.mean([h["loss"] for h in hist[-3:]])
    assert last < 0.7 * first, (first, last)
    policy = ClapPolicy.load(run_dir / "policy")
    assert policy.modes == ["ntp"] and policy.image_size == 64
    pred = policy.predict({"head": np.zeros((64, 64, 3), np.uint8)}, "use the left arm", mode="ntp")
    assert pred.actions.shape == (32, 14) and pred.tokens.max() < 32


def test_resume_reproduces_next_step_loss(tmp_path, act_vae_dir):
    straight = tmp_path / "straight"
    assert runner.run(ntp_train.SPEC, args(straight, act_vae_dir, 6)) == 0
    killed = tmp_path / "killed"
    assert runner.run(ntp_train.SPEC, args(killed, act_vae_dir, 6, stop_after=4)) == 0
    assert not (killed / "policy").exists()  # not finished: nothing exported
    assert runner.run(ntp_train.SPEC, args(killed, act_vae_dir, 6, resume=True)) == 0
    a, b = history(straight), history(killed)
    assert [h["step"] for h in b] == [1, 2, 3, 4, 5, 6]
    for ha, hb in zip(a, b):
        assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-5, abs=1e-6), (ha, hb)


def test_missing_act_vae_is_a_clear_error(tmp_path, capsys):
    assert runner.run(ntp_train.SPEC, args(tmp_path / "r", tmp_path / "nope", 6)) == 2
    assert "nope" in capsys.readouterr().err


def test_targets_robot_tokens_from_act_vae_and_human_pseudo_tokens(act_vae_dir):
    act_vae = load_act_vae(str(act_vae_dir))
    actions = torch.randn(3, 32, 14).clamp(-1, 1)
    pseudo = torch.tensor([[-1] * 16, [5] * 16, [-1] * 16])
    batch = {"action": actions, "is_robot": torch.tensor([True, False, False]), "action_tokens": pseudo}
    codes, has = batch_codes(act_vae, batch)
    assert has.tolist() == [True, True, False]  # the unlabelled human sample has no action target
    assert torch.equal(codes[0], act_vae.tokenize(actions[:1])[0])
    assert torch.equal(codes[1], pseudo[1])
    assert all(p.grad is None and not p.requires_grad for p in act_vae.parameters())  # frozen tokenizer


def test_ntp_trains_with_vision_aux_and_exports_without_the_head(tmp_path, act_vae_dir):
    run_dir = tmp_path / "run"
    assert runner.run(ntp_train.SPEC, args(run_dir, act_vae_dir, 4, extra=("vision_aux=4.0",))) == 0
    hist = history(run_dir)
    assert all(h["vision_aux_loss"] > 0 for h in hist)
    exported = (run_dir / "policy" / "vlm").glob("*.safetensors")
    from safetensors import safe_open

    keys = [k for f in exported for k in safe_open(str(f), "pt").keys()]
    assert keys and not any("aux" in k for k in keys)
