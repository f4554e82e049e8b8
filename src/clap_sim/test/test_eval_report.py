"""Success-rate intervals against the published worked examples (Newcombe 1998, Stat. Med. 17:857)."""

import pytest
from clap_sim.eval_report import newcombe, success_summary, wilson


def test_wilson_interval_matches_newcombes_worked_example():
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.17  # no successes still leaves a one-sided interval


def test_newcombe_difference_interval_matches_the_papers_method_10():
    d, lo, hi = newcombe(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_equal_rates_give_an_interval_around_zero():
    d, lo, hi = newcombe(5, 20, 5, 20)
    assert d == 0 and lo < 0 < hi and lo == pytest.approx(-hi)


def test_success_summary_reads_an_eval_file():
    result = {"successes": 1, "episodes": 4, "success_rate": 0.25,
              "per_episode": [{"max_reward": r} for r in (4, 0, 1, 2)]}
    cell = success_summary(result)
    assert cell["successes"] == 1 and cell["rate"] == 0.25 and cell["mean_max_reward"] == 1.75
    assert cell["ci95"] == [round(v, 3) for v in wilson(1, 4)] and cell["inference_latency_mean_ms"] is None
