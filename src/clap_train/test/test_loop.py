"""The shared training loop: loss falls, resume is exact, schedules and failures behave."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from clap_train.train.checkpoint import latest_checkpoint, list_checkpoints
from clap_train.train.loop import LoopConfig, Stage, lr_lambda, run_loop


def _stage(seed=0, nan_at=None):
    g = torch.Generator().manual_seed(0)  # the data is the same in every run
    x = torch.randn(64, 8, generator=g)
    y = x @ torch.randn(8, 2, generator=g) + 0.1
    torch.manual_seed(seed)  # the initial weights differ with the seed
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 2))

    def collate(items):
        xs, ys = zip(*items)
        return {"x": torch.stack(xs), "y": torch.stack(ys)}

    def loss_fn(m, batch, step):
        loss = torch.nn.functional.mse_loss(m(batch["x"]), batch["y"])
        if nan_at is not None and step == nan_at:
            loss = loss * float("nan")
        return loss, {"mse": loss.item()}

    return Stage("toy", model, TensorDataset(x, y), collate, loss_fn)


def _config(**kw):
    base = dict(steps=12, batch_size=8, lr=1e-2, save_every=4, log_every=2, warmup_steps=2, device="cpu")
    base.update(kw)
    return LoopConfig(**base)


def test_loss_falls_and_checkpoints_are_written(tmp_path):
    result = run_loop(_stage(), _config(steps=60, save_every=20), tmp_path, progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 60
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000040", "step-00000060"]
    assert latest_checkpoint(tmp_path).name == "step-00000060"
    assert (tmp_path / "tb").is_dir()


def test_resume_continues_with_the_same_next_step_loss(tmp_path):
    straight = run_loop(_stage(), _config(), tmp_path / "a", progress=False)
    run_loop(_stage(), _config(), tmp_path / "b", progress=False, stop_after=4)  # "killed" after step 4
    resumed = run_loop(_stage(seed=123), _config(), tmp_path / "b", resume=True, progress=False)
    a = [h["loss"] for h in straight.history]
    b = [h["loss"] for h in resumed.history]
    assert len(b) == len(a) == 12
    assert b[4:] == pytest.approx(a[4:], rel=1e-6, abs=1e-7)


def test_warmup_then_cosine_to_the_floor():
    cfg = LoopConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4, schedule="cosine", decay_start=50)
    f = lr_lambda(cfg, 1e-3)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(30) == 1.0 and f(50) == 1.0
    assert f(75) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.1)


def test_nan_loss_stops_with_the_step_and_the_last_good_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match=r"step 5.*step-00000004"):
        run_loop(_stage(nan_at=5), _config(), tmp_path, progress=False)
    assert latest_checkpoint(tmp_path).name == "step-00000004"


def test_bad_loop_config_is_rejected():
    with pytest.raises(ValueError, match="warmup_steps"):
        LoopConfig(steps=10, warmup_steps=20)


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_ema_ends_the_run_with_the_average_of_every_step(tmp_path):
    """The exported weights are the warmed-up EMA of the weights after each step, computed here by hand."""
    decay, steps = 0.9, 12
    stage = _stage()
    seen = []
    stage.after_step = lambda m, step: seen.append(_weights(m))
    snaps = []
    stage.snapshot = lambda m, step: snaps.append(_weights(m))
    run_loop(stage, _config(steps=steps, ema_decay=decay), tmp_path, progress=False)
    average = seen[0]  # the first update takes the weights as they are
    for n, w in enumerate(seen[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        average = [a * d + x * (1 - d) for a, x in zip(average, w)]
    assert len(snaps) == steps
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_weights(stage.model), average))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(snaps[-1], average))
    # the average is not the last step's weights: the run would export something else without it
    assert max(float((a - b).abs().max()) for a, b in zip(average, seen[-1])) > 1e-3


def test_ema_resumes_exactly_after_a_kill(tmp_path):
    straight = _stage()
    run_loop(straight, _config(ema_decay=0.8), tmp_path / "a", progress=False)
    run_loop(_stage(), _config(ema_decay=0.8), tmp_path / "b", progress=False, stop_after=4)  # "killed"
    resumed = _stage(seed=123)
    run_loop(resumed, _config(ema_decay=0.8), tmp_path / "b", resume=True, progress=False)
    assert (latest_checkpoint(tmp_path / "b") / "ema.safetensors").is_file()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_weights(straight.model), _weights(resumed.model)))


def test_ema_decay_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="ema_decay"):
        LoopConfig(ema_decay=1.0)
