"""`clap eval offline`: a policy fitted to one episode replays it; an untrained one beats no baseline."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from clap_train.cli import main as clap_main
from clap_train.data.contract import load_contract
from clap_train.data.recording.convert import convert_bags
from clap_train.data.recording.synthetic_bag import CameraSetup, write_bag
from clap_train.testing import make_tiny_policy

CONFIGS = pathlib.Path(__file__).resolve().parents[3] / "config" / "train" / "tiny"
CAMS = {n: CameraSetup("rgb8", 32, 32) for n in ("head", "left_wrist", "right_wrist")}


@pytest.fixture(scope="module")
def one_episode(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    write_bag(tmp / "bags/e0", duration_s=1.5, cameras=CAMS)
    convert_bags([tmp / "bags"], load_contract(), tmp / "robot", progress=False)
    return tmp


@pytest.fixture(scope="module")
def fitted_policy(one_episode):
    """A tiny CLAP-RF policy trained until it fits the one episode (absolute actions, 32 px).

    The synthetic bag's images barely change along the episode, so the head conditions on the
    state to know where in the episode it is.
    """
    tmp = one_episode
    assert clap_main(["train", "act-vae", "--config", str(CONFIGS / "act_vae.yaml"), "--dataset", str(tmp / "robot"),
                      "--run-dir", str(tmp / "av"), "--no-progress", "--set", "actions=absolute"]) == 0
    assert clap_main(["train", "rf", "--config", str(CONFIGS / "rf.yaml"), "--dataset", str(tmp / "robot"),
                      "--run-dir", str(tmp / "rf"), "--no-progress", "--set", f"act_vae={tmp / 'av/act_vae'}",
                      "vlm.image_size=32", "flow.use_state=true", "human_fraction=0", "wrist_dropout=0",
                      "stage1.steps=1", "stage1.warmup_steps=0", "stage2.steps=2000", "stage2.batch_size=8",
                      "stage2.warmup_steps=20", "stage2.save_every=1000"]) == 0
    return tmp / "rf/policy"


def _offline(policy, dataset, out, *extra):
    assert clap_main(["eval", "offline", "--policy", str(policy), "--dataset", str(dataset), "--out", str(out),
                      "--stride", "4", "--horizon", "1.0", "--replan-every", "4", "--no-progress", *extra]) == 0
    return json.loads((out / "offline.json").read_text())


def test_a_policy_fitted_to_one_episode_replays_it(fitted_policy, one_episode):
    report = _offline(fitted_policy, one_episode / "robot", one_episode / "fitted", "--modes", "rf")
    errors = report["errors"]
    for group in ("left position mm", "right position mm"):
        # a small fraction of what the baselines get wrong: the arms travel 1 m/s in this episode,
        # so the baselines are ~330 mm off and a fitted policy ~15 mm (half a frame of travel)
        assert errors["rf"][group] < 0.1 * min(errors["mean chunk"][group], errors["hold state"][group]), errors
    assert report["normalised_mse"]["rf"] < 0.02 * report["normalised_mse"]["mean chunk"]
    # its own outputs as its state for a second: it stays on the recorded path, within a tenth of
    # what holding the state drifts (the arms travel ~1 m in that second)
    hold = errors["hold state"]["left position mm"]
    assert report["compounding_position_drift_mm"]["rf"]["1 s"] < 0.1 * hold
    assert max(report["compounding_curves_mm"]["rf"]) < 0.1 * hold
    # by phase (the recorded subtask): the bag's two phases partition the frames, so their
    # frame-weighted errors give back the overall ones
    assert list(report["phase_frames"]) == ["reach the cube", "grasp the cube"], report["phase_frames"]
    assert sum(report["phase_frames"].values()) == report["frames"]
    for name in ("rf", "hold state"):
        pooled = sum(n * report["phase_errors"][ph][name]["left position mm"]
                     for ph, n in report["phase_frames"].items())
        assert pooled / report["frames"] == pytest.approx(errors[name]["left position mm"])
    table = (one_episode / "fitted" / "offline.md").read_text()
    assert "| rf |" in table and "| hold state |" in table
    assert "By phase (the recorded subtask of the frame), rf mode" in table and "| grasp the cube |" in table
    assert (one_episode / "fitted" / "offline.png").read_bytes()[:4] == b"\x89PNG"


def test_an_untrained_policy_does_not_beat_the_baselines(one_episode, tmp_path):
    policy = make_tiny_policy(tmp_path / "untrained", seed=3, image_size=32)
    report = _offline(policy, one_episode / "robot", tmp_path / "out")
    for mode in ("rf", "ntp"):
        assert report["normalised_mse"][mode] > report["normalised_mse"]["mean chunk"], report["normalised_mse"]
        for group in ("left position mm", "right position mm"):
            assert report["errors"][mode][group] > report["errors"]["mean chunk"][group], report["errors"]
    # NTP's tokens, per position: random weights do no better than always naming the most frequent token
    acc = report["ntp_token_accuracy_per_position"]
    assert len(acc) == 16 and report["ntp_token_accuracy"] <= report["majority_token_accuracy"], report
    assert "NTP action tokens equal to the recorded chunk's" in (tmp_path / "out" / "offline.md").read_text()
    # and the subtask text it writes is not the recorded one (random weights)
    assert report["ntp_subtask_accuracy"] < report["majority_subtask_accuracy"], report
    assert "NTP subtask text equal to the recorded one" in (tmp_path / "out" / "offline.md").read_text()


def test_token_accuracy_counts_per_position_against_the_majority_token():
    from clap_train.eval.offline import token_accuracy

    acc = token_accuracy([np.array([1, 2, 7]), np.array([1, 3, 7])], [np.array([1, 2, 5]), np.array([2, 2, 5])])
    assert acc["ntp_token_accuracy_per_position"] == [0.5, 0.5, 0.0]
    assert acc["majority_token_accuracy_per_position"] == [0.5, 1.0, 1.0]
    assert acc["ntp_token_accuracy"] == pytest.approx(1 / 3)
    assert token_accuracy([], []) == {}


def test_subtask_accuracy_is_the_exact_match_rate_beside_the_most_frequent_subtask():
    from clap_train.eval.offline import subtask_accuracy

    acc = subtask_accuracy(["grasp", "lift", "lift", "hold"], ["grasp", "grasp", "lift", "grasp"])
    assert acc == {"ntp_subtask_accuracy": 0.5, "majority_subtask_accuracy": 0.75, "majority_subtask": "grasp"}
    assert subtask_accuracy([], []) == {}
    # first frames apart: only the images and the instruction say which subtask opens an episode
    acc = subtask_accuracy(["grasp", "lift", "lift", "hold"], ["grasp", "grasp", "lift", "grasp"],
                           [True, False, False, True])
    assert acc["ntp_first_frame_subtask_accuracy"] == 0.5
    assert acc["first_frame_subtasks"] == [["grasp", "grasp"], ["hold", "grasp"]]


def test_a_dataset_that_cannot_be_read_is_named(tmp_path, capsys):
    policy = make_tiny_policy(tmp_path / "p", seed=0, image_size=32)
    rc = clap_main(["eval", "offline", "--policy", str(policy), "--dataset", str(tmp_path / "missing"),
                    "--out", str(tmp_path / "o")])
    assert rc == 2 and str(tmp_path / "missing") in capsys.readouterr().err
