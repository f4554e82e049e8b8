"""``clap_sim.token_replay``: the scripted plan replayed through an Act-VAE's tokens (NTP with every token right)."""

import numpy as np
import pytest
import torch
from clap_sim.scripted import scripted_trajectory
from clap_sim.tasks import TASKS
from clap_sim.token_replay import TokenReplay, token_replay
from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.samples.action_space import ActionSpace
from clap_train.models.act_vae import ActVAE, ActVAEConfig


@pytest.fixture(scope="module")
def random_act_vae(tmp_path_factory):
    """An untrained Act-VAE export whose action space is fitted on transfer-cube plans."""
    out = tmp_path_factory.mktemp("act_vae")
    task = TASKS["transfer_cube"]()
    plans = [scripted_trajectory(task.sample(s)).actions14().astype(np.float64) for s in range(3)]
    rows = np.concatenate(plans)
    space = ActionSpace.fit("absolute", rows, rows[:, None, :], np.zeros((len(rows), 1), bool),
                            DEFAULT_LAYOUT.euler_indices)
    torch.manual_seed(0)
    ActVAE(ActVAEConfig(d_model=32, layers=1, decoder_layers=1, heads=2, ffn_mult=2, code_dim=8,
                        codebook_size=16)).save_pretrained(out)
    space.save(out)
    return out


def test_the_raw_plan_replays_through_the_control_path_and_random_tokens_do_not(random_act_vae):
    task = TASKS["transfer_cube"]()
    raw = token_replay(random_act_vae, task, [0], through_tokens=False)
    assert raw == [{"seed": 0, "success": True, "max_reward": task.max_reward}]
    # An untrained Act-VAE's decoded chunks are not the plan: the replay goes through the tokens.
    tokens = token_replay(random_act_vae, task, [0])
    assert not tokens[0]["success"] and tokens[0]["max_reward"] < task.max_reward


def test_a_chunk_is_the_plan_from_the_scene_step_on_held_after_its_end(random_act_vae):
    task = TASKS["transfer_cube"]()
    scene = task.make_scene(image_size=16)
    try:
        raw = TokenReplay(random_act_vae, scene, through_tokens=False)
        with pytest.raises(ValueError, match="measured' or 'plan'"):
            TokenReplay(random_act_vae, scene, state="commanded")
        with pytest.raises(RuntimeError, match="begin"):
            raw.chunk_at(0, np.zeros(14))
        raw.begin(task, 5)
        plan = scripted_trajectory(task.sample(5)).actions14()
        np.testing.assert_allclose(raw.chunk_at(10, np.zeros(14)), plan[10:42], atol=1e-6)
        end = raw.chunk_at(len(plan) - 2, np.zeros(14))
        np.testing.assert_allclose(end[2:], np.repeat(plan[-1:], 30, axis=0), atol=1e-6)
        task.reset(scene, 5)
        for _ in range(7):
            scene.step()
        np.testing.assert_allclose(raw.predict({}, "", np.zeros(14)).actions, plan[7:39], atol=1e-6)
        coded = TokenReplay(random_act_vae, scene)
        coded.begin(task, 5)
        off = np.abs(coded.chunk_at(10, plan[9]) - plan[10:42])[:, DEFAULT_LAYOUT.indices("x", "y", "z")]
        assert off.max() > 0.01  # metres: an untrained decoder is centimetres off
    finally:
        scene.close()
