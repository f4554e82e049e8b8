"""Success-rate intervals against the published worked examples (Newcombe 1998, Stat. Med. 17:857); the video."""

import av
import numpy as np
import pytest
from clap_sim.eval_report import PANEL, newcombe, rollout_video, success_summary, video_frame, wilson
from clap_sim.tasks import TASKS


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


def test_video_frame_puts_each_camera_side_by_side_under_the_text():
    colours = {"head": (255, 0, 0), "left_wrist": (0, 255, 0), "right_wrist": (0, 0, 255)}
    images = {name: np.full((64, 64, 3), c, np.uint8) for name, c in colours.items()}
    frame = video_frame(images, ["line one", "line two"])
    band = frame.shape[0] - PANEL
    assert frame.shape[1] == 3 * PANEL and band > 0
    for k, c in enumerate(colours.values()):  # the middle of each panel is its camera
        assert tuple(frame[band + PANEL // 2, k * PANEL + PANEL // 2]) == c
    assert frame[:band].max() > 200  # the text is written in the band
    assert not np.array_equal(frame[:band], video_frame(images, ["other", "text"])[:band])


def test_rollout_video_has_a_frame_per_step_and_names_the_outcome(tmp_path):
    task = TASKS["transfer_cube"]()
    frames = [(k, {"head": np.zeros((48, 48, 3), np.uint8)}) for k in range(5)]
    rollout_video(tmp_path / "ok.mp4", frames, [0, 1, 2, 4], task, "hand it over", fps=30)
    rollout_video(tmp_path / "failed.mp4", frames, [0, 1, 1, 1], task, "hand it over", fps=30)
    decoded = {}
    for name in ("ok", "failed"):
        with av.open(str(tmp_path / f"{name}.mp4")) as c:
            decoded[name] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(decoded[name]) == 5 and decoded[name][0].shape[1] == PANEL
    band = decoded["ok"][0].shape[0] - PANEL
    # the same images, another outcome line: the text band differs
    assert np.abs(decoded["ok"][0][:band].astype(int) - decoded["failed"][0][:band].astype(int)).max() > 100
