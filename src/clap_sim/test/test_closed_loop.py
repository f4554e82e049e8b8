"""Closed loop through the real policy node: a policy fitted to one demonstration replays it.

The whole chain a user runs, at the smallest size: record one scripted transfer-cube episode
(rosbag2), convert it, train the Act-VAE and CLAP-RF on it, then evaluate the policy on the same
seed through the policy node and the sim bridge over DDS, and in lock-step. A policy that cannot
replay the episode it was fitted to has a bug (action space, normalisation, image or state path,
chunk execution), not a budget problem. The same holds for CLAP-NTP: a CLAP-NTP policy fitted to
the episode (with an Act-VAE fitted long enough that its tokens replay it) replays it in NTP mode,
its action tokens decoded by the Act-VAE. This test found that decoding cut the subtask text where
training had not (bench/RESULTS.md).

A closed-loop episode is a random event, so each test replays the seed ``EPISODES`` times and
asks for ``NEEDED`` successes: a threshold set from measured rates (bench/RESULTS.md, "The
test suite's flakiness (issue 25)"). With the open-loop executor one episode succeeded in 5 of 10
lock-step noise seeds and 14 of 20 DDS runs: the test of one episode failed 3 runs in 4. The
MuJoCo reset is not bit-exact (1e-16) and contact dynamics amplify it, so even lock-step at
temperature 0 differs from episode to episode; what passed every time was the first episode of a
fresh process, a coin flip fixed per machine. Temporal ensembling (a new chunk every tick)
averages the per-chunk noise away: 70/70 lock-step episodes and 20/20 over DDS succeeded, between
steps 181 and 200 of 240. Measured pass rate of this module: 10 of 10 fresh-clone runs, two at a
time on 2 cores (bench/results/flaky_closed_loop_{a,b}.json).
"""

import json
import pathlib

import pytest
from clap_cli import clap

pytest.importorskip("rclpy")
# The fixtures record, convert and train two policies (about 10 min on an idle 2-core machine); the
# suite-wide 600 s hang guard is too tight for it when other jobs share the CPU.
pytestmark = [pytest.mark.ros, pytest.mark.timeout(1800)]

CONFIGS = pathlib.Path(__file__).resolve().parents[3] / "config" / "train" / "tiny"
SIZE = "64"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One scripted transfer-cube demonstration (seed 0), recorded and converted."""
    tmp = tmp_path_factory.mktemp("demo")
    clap("sim", "record", "--task", "transfer_cube", "--episodes", "1", "--seed", "0", "--out", str(tmp / "bags"),
         "--image-size", SIZE)
    clap("convert", str(tmp / "bags"), "--out", str(tmp / "ds"))
    return tmp / "ds"


@pytest.fixture(scope="module")
def fitted(demo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    clap("train", "act-vae", "--config", str(CONFIGS / "act_vae.yaml"), "--dataset", str(demo),
         "--run-dir", str(tmp / "av"), "--no-progress", "--set", "actions=absolute")
    clap("train", "rf", "--config", str(CONFIGS / "rf.yaml"), "--dataset", str(demo),
         "--run-dir", str(tmp / "rf"), "--no-progress", "--set", f"act_vae={tmp / 'av/act_vae'}",
         "human_fraction=0", "stage1.steps=1", "stage1.warmup_steps=0", "stage2.steps=2000", "flow.use_state=true",
         "stage2.batch_size=8", "stage2.warmup_steps=50", "stage2.save_every=500", timeout=1500)
    # one demonstration: the state says where in the episode the policy is, so it conditions on it
    # (bench/RESULTS.md, rung 1: 6/6 noise seeds replay seed 0 at 2000 steps x 8)
    return tmp / "rf" / "policy"


# Episodes per test and the successes asked for. With the per-episode success rate at its measured
# 95 % lower bound (Clopper-Pearson: 0.95 from 70/70 DDS episodes), P(fewer than 3 of 5) < 0.2 %.
EPISODES, NEEDED = 5, 3
REPLAY = ("--task", "transfer_cube", "--episodes", str(EPISODES), "--repeat-seed", "--seed", "0",
          "--image-size", SIZE, "--no-video", "--executor", "temporal_ensemble", "--replan-every", "1")


@pytest.fixture(scope="module")
def fitted_ntp(demo, tmp_path_factory):
    # An Act-VAE at 600 steps replays seed 0 through its tokens (3/3, clap_sim.token_replay); the
    # tiny config's 60 steps do not. NTP at 800 x 8: 5/5 lock-step episodes replayed in NTP mode
    # (bench/RESULTS.md, "CLAP-NTP that acts"); with decoding cutting the subtask, 0/3.
    tmp = tmp_path_factory.mktemp("fit_ntp")
    clap("train", "act-vae", "--config", str(CONFIGS / "act_vae.yaml"), "--dataset", str(demo),
         "--run-dir", str(tmp / "av"), "--no-progress", "--set", "actions=absolute", "loop.steps=600")
    clap("train", "ntp", "--config", str(CONFIGS / "ntp.yaml"), "--dataset", str(demo), "--run-dir", str(tmp / "ntp"),
         "--no-progress", "--set", f"act_vae={tmp / 'av/act_vae'}", "human_fraction=0", "loop.steps=800",
         "loop.batch_size=8", "loop.warmup_steps=50", "loop.save_every=500", timeout=1500)
    return tmp / "ntp" / "policy"


def _result(out):
    return json.loads((out / "eval.json").read_text())


def test_fitted_policy_replays_its_episode_in_lockstep(fitted, tmp_path):
    clap("sim", "eval", "--lockstep", *REPLAY, "--policy", str(fitted), "--out", str(tmp_path))
    result = _result(tmp_path)
    assert result["successes"] >= NEEDED, result["per_episode"]


def test_fitted_ntp_policy_replays_its_episode_in_ntp_mode(fitted_ntp, tmp_path):
    # NTP decodes greedily, so only MuJoCo's reset noise differs between episodes (8 of 8 measured
    # replays succeeded, at the same step); 3 episodes, 2 asked, keep the decoding cost (~36 s an
    # episode) down.
    replay = list(REPLAY)
    replay[replay.index("--episodes") + 1] = "3"
    clap("sim", "eval", "--lockstep", *replay, "--mode", "ntp", "--policy", str(fitted_ntp), "--out", str(tmp_path))
    result = _result(tmp_path)
    assert result["mode"] == "ntp" and result["episodes"] == 3 and result["successes"] >= 2, result["per_episode"]


def test_fitted_policy_replays_its_episode_through_the_policy_node(fitted, tmp_path):
    proc = clap("sim", "eval", *REPLAY, "--policy", str(fitted), "--out", str(tmp_path), "--startup-timeout", "150")
    result = _result(tmp_path)
    episodes = result["per_episode"]
    assert result["successes"] >= NEEDED, (episodes, proc.stdout,
                                           (tmp_path / "policy_node.log").read_text(errors="replace"))
    for ep in episodes:
        # the node computed the chunks (not a scripted stand-in) from the episode's first frames
        assert ep["chunks"] >= 3 and ep["first_chunk"]["observation_step"] <= 2, ep
        if ep["success"]:  # the episode ended early, at success
            assert ep["steps"] < result["max_steps"], ep
