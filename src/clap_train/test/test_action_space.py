"""The action space: relative chunks, their statistics, and a dimension that never varies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from clap_train.data.samples.action_space import ActionSpace, arm_blocks, load_action_space
from clap_train.data.samples.normalize import Normalizer

EULER = [3, 4, 5, 10, 11, 12]


def _episode(rng, n=40):
    """A bimanual trajectory whose right yaw crosses +-pi; states lag the actions by one step."""
    t = np.linspace(0, 1, n)[:, None]
    a = np.zeros((n, 14))
    a[:, 0:3] = [-0.2, 0.5, 0.3] + t * rng.normal(0, 0.1, 3)
    a[:, 1] = 0.5  # left y never varies
    a[:, 7:10] = [0.2, 0.5, 0.3] + t * rng.normal(0, 0.1, 3)
    a[:, 3:6] = t * rng.normal(0, 0.5, 3)
    a[:, 10:13] = [0.1, -0.2, 3.0] + t * [0.0, 0.3, 0.5]  # yaw 3.0 -> 3.5 (wraps past pi)
    a[:, 12] = (a[:, 12] + np.pi) % (2 * np.pi) - np.pi
    a[:, 6] = a[:, 13] = (t[:, 0] > 0.5).astype(float)
    states = np.vstack([a[:1], a[:-1]])
    return states, a


def test_arm_blocks_follow_the_euler_runs():
    assert arm_blocks(EULER) == [(0, 3, 6), (7, 10, 13)]
    assert arm_blocks([3, 4, 5]) == [(0, 3, 6)]  # a single-arm robot
    with pytest.raises(ValueError, match="not runs"):
        arm_blocks([3, 4, 6])


def test_relative_chunks_round_trip_and_are_deltas_to_the_state():
    rng = np.random.default_rng(0)
    states, actions = _episode(rng)
    chunk, state = actions[10:42 - 10], states[10]
    space = ActionSpace.fit("relative", states[None, 10], chunk[None], np.zeros((1, len(chunk)), bool), EULER)
    model = space.to_model(chunk, state)
    np.testing.assert_allclose(model[:, 0:3], chunk[:, 0:3] - state[0:3], atol=1e-12)
    np.testing.assert_allclose(model[:, 13], chunk[:, 13])  # the gripper stays absolute
    # the relative rotation composes back to the action's rotation, across the +-pi wrap too
    r = Rotation.from_euler("xyz", model[:, 10:13]) * Rotation.from_euler("xyz", state[10:13])
    assert np.allclose((r * Rotation.from_euler("xyz", chunk[:, 10:13]).inv()).magnitude(), 0, atol=1e-9)
    back = space.decode(space.encode(chunk, state), state)
    np.testing.assert_allclose(np.cos(back - chunk), 1.0, atol=1e-9)
    np.testing.assert_allclose(back[:, [0, 1, 2, 6, 7, 8, 9, 13]], chunk[:, [0, 1, 2, 6, 7, 8, 9, 13]], atol=1e-6)
    assert np.abs(np.diff(back[:, 12])).max() < 0.1  # decoded angles are continuous along the chunk
    with pytest.raises(ValueError, match="relative to the robot state"):
        space.decode(space.encode(chunk, state), None)


def test_fit_statistics_skip_padding_and_a_flat_dimension_stays_put(tmp_path):
    rng = np.random.default_rng(1)
    states, actions = _episode(rng)
    chunks = np.stack([actions[np.minimum(np.arange(t, t + 8), len(actions) - 1)] for t in range(len(actions))])
    pads = np.stack([np.arange(t, t + 8) >= len(actions) for t in range(len(actions))])
    chunks[pads] = 99.0  # padded rows carry garbage that must not enter the statistics
    space = ActionSpace.fit("absolute", states, chunks, pads, EULER)
    assert space.normalizer.high["action"].max() < 10
    # left y never varies (0.5): a model's noise there comes back within millimetres of 0.5
    noisy = space.encode(actions[:8], states[0])
    noisy[:, 1] = 1.5
    assert np.abs(space.decode(noisy, states[0])[:, 1] - 0.5).max() < 2e-3
    # saved and loaded as one file; an older export with only stats.json is absolute
    space.save(tmp_path)
    again = load_action_space(tmp_path)
    np.testing.assert_allclose(again.encode(actions[:8], states[0]), space.encode(actions[:8], states[0]))
    assert load_action_space(tmp_path / "nothing") is None
    old = tmp_path / "old"
    old.mkdir()
    (old / "stats.json").write_text('{"action": {"q01": [0]*14, "q99": [1]*14}}'.replace("[0]*14", str([0] * 14))
                                    .replace("[1]*14", str([1] * 14)))
    assert load_action_space(old).representation == "absolute"


def test_normalizer_floor_keeps_constant_dimensions_at_zero():
    norm = Normalizer({"action": [0.0, 0.5]}, {"action": [1.0, 0.5]})
    y = norm.normalize("action", np.array([[0.5, 0.5], [1.0, 0.5]]))
    np.testing.assert_allclose(y, [[0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(norm.unnormalize("action", np.array([[0.0, 1.5]]))[0, 1], 0.5 + 1.5e-3)
