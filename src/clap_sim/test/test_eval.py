"""`clap sim eval`: closed loop over DDS, with the scripted policy and with the real policy node."""

import json
import os
import subprocess
import sys

import av
import pytest

pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros


def sim_eval(*args, timeout=240):
    proc = subprocess.run([sys.executable, "-m", "clap_train.cli", "sim", "eval", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))
    return proc


def test_scripted_policy_scores_100_percent_on_transfer_cube(tmp_path):
    proc = sim_eval("--task", "transfer_cube", "--episodes", "2", "--policy", "scripted", "--out", str(tmp_path),
                    "--real-time-factor", "4", "--image-size", "96")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "success 2/2 (100 %)" in proc.stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["success_rate"] == 1.0 and result["episodes"] == 2
    assert [e["seed"] for e in result["per_episode"]] == [1000, 1001]
    assert all(e["max_reward"] == 4 and e["steps"] < result["max_steps"] for e in result["per_episode"])
    # Commands really went over DDS: the bridge timed the observation -> command round trip of every
    # step. The bridge once noted an observation's send time after publishing it, so the fastest
    # replies went untimed (95 of 175 steps in 1 of 10 suite runs; bench/RESULTS.md, issue 25); since
    # it notes the time first, 16 of 16 episodes under two other closed-loop test runs timed 175-177
    # round trips in 175 steps.
    for e in result["per_episode"]:
        assert e["command_latency"]["count"] >= 0.9 * e["steps"], result["per_episode"]
    assert (tmp_path / "trajectories.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with av.open(str(tmp_path / "rollout.mp4")) as c:
        n = sum(1 for _ in c.decode(video=0))
        width = c.streams.video[0].width
    assert n == result["per_episode"][0]["steps"] + 1  # the reset frame + one per step
    assert width == 3 * 224  # the three cameras side by side


def test_policy_node_closes_the_loop_with_a_tiny_policy(tmp_path):
    from clap_train.testing import make_tiny_policy

    model = make_tiny_policy(tmp_path / "policy", seed=0, image_size=64)
    out = tmp_path / "eval"
    proc = sim_eval("--task", "coloured_cubes", "--episodes", "1", "--policy", str(model), "--out", str(out),
                    "--steps", "30", "--image-size", "64", "--startup-timeout", "150")
    assert proc.returncode == 0, proc.stdout + proc.stderr + (out / "policy_node.log").read_text(errors="replace")
    result = json.loads((out / "eval.json").read_text())
    ep = result["per_episode"][0]
    assert ep["steps"] == 30 and ep["instruction"].startswith("pick up the ")
    # The policy node predicted chunks from the bridge's cameras and reported its latency.
    assert ep["chunks"] >= 1 and ep["inference_latency"]["count"] == ep["chunks"]
    assert result["inference_latency_mean_ms"] > 0
    # The node's episode log recorded the episode the runner started and ended.
    log = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines() if line.strip()]
    assert any("coloured_cubes-1000" in json.dumps(rec) for rec in log)


def test_missing_policy_directory_is_named(tmp_path):
    proc = sim_eval("--policy", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--episodes", "1")
    assert proc.returncode == 1
    assert "nope" in proc.stderr and "not a directory" in proc.stderr
