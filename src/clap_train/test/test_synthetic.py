"""Synthetic bimanual episodes: layout, smoothness, wrap handling, sample format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.recording.synthetic import (
    CAMERAS, SyntheticDataset, chunk_unwrap, collate_samples, make_episode, render,
)


def test_episode_layout_and_smoothness():
    ep = make_episode(5, length=120)
    assert ep.state.shape == (120, 14) and ep.action.shape == (120, 14)
    names = DEFAULT_LAYOUT.names
    assert len(names) == 14 and names[6] == "left_gripper" and names[12] == "right_yaw"
    assert SyntheticDataset(1, episode_len=40, images=False).action_space.euler_indices == [3, 4, 5, 10, 11, 12]
    # action[t] is the pose commanded for t+1
    np.testing.assert_allclose(ep.action[:-1], ep.state[1:], atol=1e-6)
    yaw = ep.state[:, [5, 12]]
    assert np.all(yaw >= -np.pi) and np.all(yaw < np.pi)
    step = np.abs(np.diff(chunk_unwrap(ep.state), axis=0))
    assert step[:, [0, 1, 2, 7, 8, 9]].max() < 0.05  # < 1.5 m/s at 30 Hz
    grip = ep.state[:, [6, 13]]
    assert grip.min() >= 0.0 and grip.max() <= 1.0
    assert len(ep.subtasks) == 120 and ep.instruction


def test_some_episodes_cross_pi_and_chunks_are_unwrapped():
    crossing = [i for i in range(20) if np.any(np.abs(np.diff(make_episode(i).state[:, [5, 12]], axis=0)) > np.pi)]
    assert len(crossing) >= 3
    ep = make_episode(crossing[0])
    un = chunk_unwrap(ep.state)
    assert np.abs(np.diff(un[:, [5, 12]], axis=0)).max() < 0.5
    assert -np.pi <= un[0, 5] < np.pi


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


def test_samples_follow_contract_3():
    ds = SyntheticDataset(3, seed=2, episode_len=60, image_size=32)
    s = ds[59]
    assert set(s["images"]) == set(CAMERAS)
    assert s["images"]["head"].shape == (3, 32, 32) and s["images"]["head"].dtype == torch.float32
    assert 0.0 <= float(s["images"]["head"].min()) and float(s["images"]["head"].max()) <= 1.0
    assert s["image_mask"].tolist() == [True, True, True]
    assert s["action"].shape == (32, 14) and s["state"].shape == (14,)
    assert s["action_pad"].dtype == torch.bool and s["action_pad"][1:].all() and not s["action_pad"][0]
    assert torch.equal(s["action"][-1], s["action"][1])  # padded by repeating the last action
    # normalised to about [-1, 1]
    acts = torch.stack([ds[i]["action"] for i in range(0, len(ds), 7)])
    assert acts.abs().max() < 1.6 and acts.min() < -0.5 and acts.max() > 0.5
    batch = collate_samples([ds[0], ds[1]])
    assert batch["images"]["left_wrist"].shape == (2, 3, 32, 32)
    assert batch["is_robot"].tolist() == [True, True] and isinstance(batch["instruction"], list)

    human = SyntheticDataset(3, seed=2, episode_len=60, image_size=32, human=True)
    h = human[5]
    assert h["is_robot"] is False and h["image_mask"].tolist() == [True, False, False]
    assert h["action"].abs().sum() == 0 and h["state"].abs().sum() == 0 and h["action_pad"].all()
    assert h["images"]["left_wrist"].abs().sum() == 0
    # same motion as the robot dataset: the normalised chunk is still available for evaluation
    np.testing.assert_allclose(human.chunk(5)[0], ds.chunk(5)[0])
