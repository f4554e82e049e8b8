"""Unit tests of the chunk executor modes and the delay estimator."""

import math

import numpy as np
import pytest

from clap_policy_ros.chunk_executor import ChunkExecutor, DelayEstimator, ExecutorConfig


def chunk(value, n=8, dim=14):
    return np.full((n, dim), float(value))


def test_open_loop_replaces_plan_time_aligned():
    ex = ChunkExecutor(ExecutorConfig(mode="open_loop", chunk_len=8, replan_every=4))
    ex.add_chunk(np.arange(8)[:, None] * np.ones((8, 14)), start_step=0)
    assert ex.action_at(3)[0] == 3
    assert not ex.needs_plan(3) and ex.needs_plan(4)
    ex.add_chunk(chunk(100.0), start_step=2)  # predicted from tick 2, usable at tick 5
    assert ex.action_at(5)[0] == 100.0
    assert ex.remaining(5) == 5
    assert ex.action_at(10) is None  # plan exhausted


@pytest.mark.parametrize("m", [0.5, -0.5])
def test_temporal_ensemble_uses_act_weights(m):
    ex = ChunkExecutor(ExecutorConfig(mode="temporal_ensemble", chunk_len=8, replan_every=1,
                                      ensemble_m=m))
    ex.add_chunk(chunk(0.0), start_step=0)
    ex.add_chunk(chunk(1.0), start_step=1)
    ex.add_chunk(chunk(2.0), start_step=2)
    w = np.exp(-m * np.arange(3))
    assert ex.action_at(2)[0] == pytest.approx((w * [0, 1, 2]).sum() / w.sum())
    # m > 0 (ACT) leans to the oldest prediction, m < 0 to the newest
    assert (ex.action_at(2)[0] < 1.0) == (m > 0)
    assert ex.action_at(0)[0] == 0.0  # only the first chunk covers tick 0
    assert ex.action_at(9)[0] == 2.0  # only the last chunk covers tick 9


def test_ensemble_weight_must_be_finite():
    with pytest.raises(ValueError, match="ensemble_m must be finite"):
        ExecutorConfig(mode="temporal_ensemble", ensemble_m=float("nan"))


def test_temporal_ensemble_averages_angles_across_the_wrap():
    ex = ChunkExecutor(ExecutorConfig(mode="temporal_ensemble", chunk_len=4, replan_every=1,
                                      ensemble_m=0.0))
    a, b = chunk(0.0, 4), chunk(0.0, 4)
    a[:, 5] = math.pi - 0.1
    b[:, 5] = -math.pi + 0.1
    ex.add_chunk(a, 0)
    ex.add_chunk(b, 0)
    yaw = ex.action_at(1)[5]
    assert abs(abs(yaw) - math.pi) < 1e-9  # averaged to +-pi, not to 0


def test_rtc_prefix_is_the_unexecuted_rest():
    ex = ChunkExecutor(ExecutorConfig(mode="rtc", chunk_len=8, replan_every=4))
    plan = np.arange(8)[:, None] * np.ones((8, 14))
    ex.add_chunk(plan, start_step=10)
    prefix = ex.prefix_for(14)
    assert prefix.shape == (4, 14) and prefix[0, 0] == 4
    assert ex.prefix_for(30) is None
    open_loop = ChunkExecutor(ExecutorConfig(mode="open_loop", chunk_len=8, replan_every=4))
    open_loop.add_chunk(plan, 10)
    assert open_loop.prefix_for(14) is None


def test_delay_estimator_ignores_warmup():
    est = DelayEstimator(warmup=1, window=3)
    est.record_seconds(2.0, dt=1 / 30)  # cold start: 60 ticks, ignored
    assert est.delay == 0
    est.record_seconds(0.1, dt=1 / 30)
    est.record(2)
    assert est.delay == 3


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="replan_every"):
        ExecutorConfig(chunk_len=8, replan_every=9)
    with pytest.raises(ValueError, match="'bogus'"):
        ExecutorConfig(mode="bogus")
    ex = ChunkExecutor(ExecutorConfig(chunk_len=8, replan_every=4))
    with pytest.raises(ValueError, match="shape"):
        ex.add_chunk(np.zeros((7, 14)), 0)
