"""``clap train act-vae``: learning, codebook tracking, export, exact resume after kill -9."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from clap_train.models.act_vae import ActVAE
from clap_train.train import act_vae as trainer, runner
from clap_train.train.checkpoint import latest_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[3]
TINY = ROOT / "config" / "train" / "tiny" / "act_vae.yaml"


def _args(run_dir, *extra, synthetic=4, resume=False, stop_after=None):
    argv = ["--config", str(TINY), "--run-dir", str(run_dir), "--synthetic", str(synthetic), "--no-progress"]
    if resume:
        argv.append("--resume")
    if stop_after is not None:
        argv += ["--stop-after", str(stop_after)]
    if extra:
        argv += ["--set", *extra]
    return runner.parse_args(trainer.SPEC, argv)


def _history(run_dir):
    state = json.loads((latest_checkpoint(run_dir) / "state.json").read_text())
    return {int(h["step"]): h for h in state["history"]}


def test_training_lowers_the_loss_tracks_the_codebook_and_exports(tmp_path):
    assert runner.run(trainer.SPEC, _args(tmp_path, "loop.steps=80", "loop.save_every=40")) == 0
    hist = _history(tmp_path)
    first = sum(hist[s]["recon_loss"] for s in range(1, 11)) / 10
    last = sum(hist[s]["recon_loss"] for s in range(71, 81)) / 10
    assert last < 0.7 * first
    assert all(h["perplexity"] >= 1.0 for h in hist.values())
    assert {"dead_codes", "psnr", "codebook_loss", "commit_loss"} <= set(hist[80])
    model = ActVAE.from_pretrained(tmp_path / "act_vae")
    assert model.config.codebook_size == 32
    stats = json.loads((tmp_path / "act_vae" / "stats.json").read_text())
    assert len(stats["action"]["q01"]) == 14
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))
    # the codebook had its own learning rate
    assert hist[80]["lr"] == pytest.approx(2e-3)


def test_the_per_arm_relative_recipe_trains_and_exports(tmp_path):
    """The paper's recipe (config/train/act_vae.yaml: arms 2, relative actions) through the stage, tiny sized."""
    args = _args(tmp_path, "loop.steps=40", "loop.save_every=40", "model.arms=2", "actions=relative")
    assert runner.run(trainer.SPEC, args) == 0
    hist = _history(tmp_path)
    assert sum(hist[s]["recon_loss"] for s in range(31, 41)) < 0.7 * sum(hist[s]["recon_loss"] for s in range(1, 11))
    model = ActVAE.from_pretrained(tmp_path / "act_vae")
    assert (model.config.arms, model.config.codes_per_arm) == (2, 8)
    space = json.loads((tmp_path / "act_vae" / "action_space.json").read_text())
    assert space["representation"] == "relative"


def test_bad_inputs_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  codebook_sise: 3\n")
    args = _args(tmp_path / "run")
    args.config = bad
    assert runner.run(trainer.SPEC, args) == 2
    assert "codebook_sise" in capsys.readouterr().err
    args = runner.parse_args(trainer.SPEC, ["--config", str(TINY), "--run-dir", str(tmp_path / "run"),
                                            "--dataset", str(tmp_path / "nowhere")])
    assert runner.run(trainer.SPEC, args) == 2
    assert "nowhere" in capsys.readouterr().err
    args = runner.parse_args(trainer.SPEC, ["--config", str(TINY), "--run-dir", str(tmp_path / "run")])
    assert runner.run(trainer.SPEC, args) == 2
    assert "--dataset DIR (or datasets: in the config) or --synthetic N" in capsys.readouterr().err


def test_resume_after_kill_9_gives_the_same_next_losses(tmp_path, sigkill_after_checkpoint):
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "clap_train.cli", "train", "act-vae", "--config", str(TINY), "--synthetic", "4",
           "--run-dir", str(killed), "--no-progress", "--set", "loop.steps=100000", "loop.save_every=7"]
    env = sigkill_after_checkpoint(cmd, killed, timeout=60)
    saved = int(json.loads((latest_checkpoint(killed) / "state.json").read_text())["step"])
    stop = saved + 4
    resumed = subprocess.run(cmd + ["--resume", "--stop-after", str(stop)], env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    # reference: the same run, never interrupted
    ref = tmp_path / "ref"
    ref_run = subprocess.run([*cmd[:cmd.index("--run-dir") + 1], str(ref), *cmd[cmd.index("--run-dir") + 2:],
                              "--stop-after", str(stop)], env=env, capture_output=True, text=True, timeout=120)
    assert ref_run.returncode == 0, ref_run.stderr[-2000:]
    a, b = _history(killed), _history(ref)
    for s in range(saved + 1, stop + 1):
        assert a[s]["loss"] == b[s]["loss"], (s, a[s]["loss"], b[s]["loss"])
