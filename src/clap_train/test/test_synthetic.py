"""Synthetic bimanual episodes: layout, smoothness, wrap handling; written as a LeRobot dataset the loader reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.recording.synthetic import CAMERAS, make_episode, render, synthetic_dataset, write_dataset
from clap_train.data.rotations import unwrap_vector_euler
from clap_train.data.samples.dataset import ClapDataset, collate_samples
from clap_train.data.samples.sources import open_dataset


def chunk_unwrap(x):
    return unwrap_vector_euler(x, DEFAULT_LAYOUT.euler_indices)


def test_episode_layout_and_smoothness():
    ep = make_episode(5, length=120)
    assert ep.state.shape == (120, 14) and ep.action.shape == (120, 14)
    names = DEFAULT_LAYOUT.names
    assert len(names) == 14 and names[6] == "left_gripper" and names[12] == "right_yaw"
    # action[t] is the pose commanded for t+1
    np.testing.assert_allclose(ep.action[:-1], ep.state[1:], atol=1e-6)
    yaw = ep.state[:, [5, 12]]
    assert np.all(yaw >= -np.pi) and np.all(yaw < np.pi)
    step = np.abs(np.diff(chunk_unwrap(ep.state), axis=0))
    assert step[:, [0, 1, 2, 7, 8, 9]].max() < 0.05  # < 1.5 m/s at 30 Hz
    grip = ep.state[:, [6, 13]]
    assert grip.min() >= 0.0 and grip.max() <= 1.0
    assert len(ep.subtasks) == 120 and ep.instruction


def test_some_episodes_cross_pi_and_the_dataset_keeps_them_continuous(tmp_path):
    crossing = [i for i in range(20) if np.any(np.abs(np.diff(make_episode(i).state[:, [5, 12]], axis=0)) > np.pi)]
    assert len(crossing) >= 3
    # the dataset stores each episode unwrapped (as the converter does); the loader's chunks start on
    # the branch of their wrapped state and stay continuous
    ds = open_dataset(write_dataset(tmp_path / "ds", 20, episode_len=60, image_size=None), 32, images=False)
    state = ds.frames("observation.state")
    assert np.abs(np.diff(state[:, [5, 12]], axis=0)[ds._ep[1:] == ds._ep[:-1]]).max() < 0.5
    for i in range(0, len(ds), 5):
        s, chunk, _ = ds.raw(i)
        assert np.all(-np.pi <= s[[5, 12]]) and np.all(s[[5, 12]] < np.pi)
        assert np.abs(np.diff(chunk[:, [5, 12]], axis=0)).max() < 0.5


def test_rendering_depends_on_the_motion():
    ep = make_episode(1)
    a, b = render(ep, 0, "head", 64), render(ep, 60, "head", 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).sum() > 0
    assert np.array_equal(render(ep, 7, "left_wrist", 32), render(ep, 7, "left_wrist", 32))
    human = render(ep, 0, "head", 64, look="human")
    assert np.abs(human.astype(int) - a).mean() > 10
    with pytest.raises(ValueError, match="unknown camera 'top'"):
        render(ep, 0, "top")


def test_the_written_dataset_gives_contract_3_samples(tmp_path):
    root = write_dataset(tmp_path / "robot", 3, seed=2, episode_len=60, image_size=32)
    ds = ClapDataset(root, image_size=32, progress=False)
    assert len(ds) == 180 and ds.layout == DEFAULT_LAYOUT
    s = ds[59]
    assert set(s["images"]) == set(CAMERAS)
    assert s["images"]["head"].shape == (3, 32, 32) and s["images"]["head"].dtype == torch.float32
    assert 0.0 <= float(s["images"]["head"].min()) and float(s["images"]["head"].max()) <= 1.0
    assert s["image_mask"].tolist() == [True, True, True]
    assert s["action"].shape == (32, 14) and s["state"].shape == (14,)
    assert s["action_pad"].dtype == torch.bool and s["action_pad"][1:].all() and not s["action_pad"][0]
    assert torch.equal(s["action"][-1], s["action"][1])  # padded by repeating the last action
    # the frames are the renderings of the scripted motion (through H.264: a few grey levels off)
    ep = make_episode(2 * 100_003 + 0, 60)
    expected = torch.from_numpy(render(ep, 10, "left_wrist", 32)).permute(2, 0, 1).float() / 255
    assert float((ds[10]["images"]["left_wrist"] - expected).abs().mean()) < 0.03
    assert ds[10]["instruction"] == ep.instruction and ds[10]["subtask"] == ep.subtasks[10]
    # normalised to about [-1, 1]
    acts = torch.stack([ds[i]["action"] for i in range(0, len(ds), 7)])
    assert acts.abs().max() < 1.6 and acts.min() < -0.5 and acts.max() > 0.5
    batch = collate_samples([ds[0], ds[1]])
    assert batch["images"]["left_wrist"].shape == (2, 3, 32, 32)
    assert batch["is_robot"].tolist() == [True, True] and isinstance(batch["instruction"], list)

    human = ClapDataset(write_dataset(tmp_path / "human", 3, seed=2, episode_len=60, image_size=32, human=True),
                        image_size=32, progress=False)
    h = human[5]
    assert h["is_robot"] is False and h["image_mask"].tolist() == [True, False, False]
    assert h["action"].abs().sum() == 0 and h["state"].abs().sum() == 0 and h["action_pad"].all()
    assert h["images"]["left_wrist"].abs().sum() == 0
    # the same motion as the robot dataset, drawn with the human look
    assert float((h["images"]["head"] - ds[5]["images"]["head"]).abs().mean()) > 0.04


def test_synthetic_dataset_is_built_once_per_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAP_CACHE_DIR", str(tmp_path))
    a = synthetic_dataset(2, seed=1, episode_len=20, image_size=None)
    stamp = (a / "meta" / "info.json").stat().st_mtime_ns
    assert synthetic_dataset(2, seed=1, episode_len=20, image_size=None) == a
    assert (a / "meta" / "info.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    b = synthetic_dataset(2, seed=2, episode_len=20, image_size=None)
    assert b != a and b.parent == a.parent == tmp_path / "synthetic"
    assert not np.array_equal(open_dataset(a, 8, images=False).frames("action"),
                              open_dataset(b, 8, images=False).frames("action"))
    with pytest.raises(ValueError, match="at least one episode"):
        write_dataset(tmp_path / "none", 0)
