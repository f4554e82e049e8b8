"""ClapPolicy: load, predict in both modes, save -> load identity, determinism, RTC, errors, threads."""

import json
import math
import threading

import numpy as np
import pytest
import torch

from clap_train.config import to_dict
from clap_train.data.samples.action_space import ActionSpace
from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.samples.normalize import Normalizer
from clap_train.interface import Policy
from clap_train.models.act_vae import ActVAEConfig
from clap_train.models.flow_head import FlowHeadConfig
from clap_train.models.vlm import VLMConfig
from clap_train.policy import ClapPolicy, PolicyMeta, Prediction, save_policy
from clap_train.testing import build_policy_parts, make_tiny_policy, tiny_stats

SMALL = VLMConfig(image_size=64, hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128,
                  vision_hidden=32, vision_heads=2)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return make_tiny_policy(tmp_path_factory.mktemp("p") / "policy", vlm=SMALL)


@pytest.fixture(scope="module")
def policy(policy_dir):
    return ClapPolicy.load(policy_dir)


def camera_frames(seed=0, size=(48, 80)):
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 255, (*size, 3), dtype=np.uint8) for c in ("head", "left_wrist", "right_wrist")}


def test_contract_attributes(policy):
    assert policy.chunk_len == 32 and policy.action_dim == 14 and policy.rate_hz == 30.0
    assert policy.camera_names == ["head", "left_wrist", "right_wrist"]
    assert policy.action_names[:7] == ["left_x", "left_y", "left_z", "left_roll", "left_pitch", "left_yaw",
                                       "left_gripper"]
    assert policy.image_size == 64 and policy.modes == ["ntp", "rf"]
    assert policy.layout == DEFAULT_LAYOUT and policy.action_names == DEFAULT_LAYOUT.names
    assert isinstance(policy, Policy)  # what the node calls (clap_train.interface)
    assert isinstance(policy.predict(camera_frames(), "go", mode="ntp"), Prediction)


def test_prediction_is_the_interfaces():
    import clap_train.interface

    assert Prediction is clap_train.interface.Prediction


@pytest.mark.parametrize("mode", ["rf", "ntp"])
def test_predict_shapes_units_and_determinism(policy, mode):
    imgs = camera_frames()
    a = policy.predict(imgs, "put the red block on the mat", mode=mode, seed=3)
    b = policy.predict(imgs, "put the red block on the mat", mode=mode, seed=3)
    assert a.actions.shape == (32, 14) and a.actions.dtype == np.float32 and a.mode == mode
    assert np.all(np.isfinite(a.actions)) and a.latency > 0
    np.testing.assert_array_equal(a.actions, b.actions)
    euler = a.actions[:, [3, 4, 5, 10, 11, 12]]
    assert euler.min() >= -math.pi and euler.max() < math.pi
    if mode == "ntp":
        assert a.tokens.shape == (16,) and a.tokens.min() >= 0 and a.tokens.max() < 256
        assert isinstance(a.subtask, str)
    else:
        assert a.tokens is None and a.subtask == ""
        c = policy.predict(imgs, "put the red block on the mat", mode=mode, seed=4)
        assert not np.allclose(a.actions, c.actions)  # the seed drives the flow noise


def test_images_change_the_prediction(policy):
    a = policy.predict(camera_frames(0), "go", mode="rf")
    b = policy.predict(camera_frames(1), "go", mode="rf")
    assert not np.allclose(a.actions, b.actions)
    # missing wrist cameras are allowed (as in training with wrist dropout)
    only_head = policy.predict({"head": camera_frames(0)["head"]}, "go", mode="rf")
    assert only_head.actions.shape == (32, 14)


def test_save_then_load_gives_identical_outputs(tmp_path):
    act_cfg = ActVAEConfig(codebook_size=64, d_model=32, layers=1, decoder_layers=1, heads=2, ffn_mult=2,
                           code_dim=8)
    flow_cfg = FlowHeadConfig(vlm_hidden=SMALL.hidden_size, feature_layers=[0, 1], d_model=32, layers=1, heads=2)
    vlm, proc, _, act_vae, head = build_policy_parts(SMALL, act_cfg, flow_cfg, seed=5)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.01 * torch.randn_like(p))
    meta = PolicyMeta(image_size=64, num_queries=16, codebook_size=64, flow=flow_cfg, max_subtask_tokens=8)
    space = ActionSpace("absolute", Normalizer.from_stats(tiny_stats()), meta.euler_indices)
    live = ClapPolicy(tmp_path, meta, vlm, proc, act_vae, space, head, torch.device("cpu"), torch.float32)
    path = save_policy(tmp_path / "saved", meta, vlm, proc, act_vae, space, head)
    loaded = ClapPolicy.load(path, warmup=False)
    imgs = camera_frames(7)
    state = np.linspace(0.1, 0.9, 14)
    for mode in ("rf", "ntp"):
        a = live.predict(imgs, "fold the towel", state=state, mode=mode, seed=1)
        b = loaded.predict(imgs, "fold the towel", state=state, mode=mode, seed=1)
        np.testing.assert_allclose(a.actions, b.actions, rtol=0, atol=1e-6)
        assert a.subtask == b.subtask
        if mode == "ntp":
            np.testing.assert_array_equal(a.tokens, b.tokens)


def test_rtc_prefix_follows_previous_chunk(policy):
    imgs = camera_frames(2)
    first = policy.predict(imgs, "go", mode="rf", seed=0)
    executed = 6  # actions run since `first` started; the new chunk starts at first[6]
    prev = first.actions[executed:]
    d = 4
    guided = policy.predict(imgs, "go", mode="rf", prev_chunk=prev, inference_delay=d, seed=9)
    free = policy.predict(imgs, "go", mode="rf", seed=9)
    np.testing.assert_allclose(guided.actions[:d], prev[:d], atol=1e-5)
    pos = [0, 1, 2, 6, 7, 8, 13]  # positions and grippers (no angle wrap in the comparison)
    jump_guided = np.abs(guided.actions[d, pos] - prev[d, pos]).max()
    jump_free = np.abs(free.actions[d, pos] - prev[d, pos]).max()
    assert jump_guided < jump_free
    assert jump_guided < 0.5 * np.abs(free.actions[:d, pos] - prev[:d, pos]).max()


def test_bad_inputs_are_named(policy, tmp_path):
    imgs = camera_frames()
    with pytest.raises(ValueError, match="left_wrist"):
        policy.predict({**imgs, "left_wrist": imgs["left_wrist"].astype(np.float32)}, "go")
    with pytest.raises(ValueError, match="unknown camera.*'belly'"):
        policy.predict({"belly": imgs["head"]}, "go")
    with pytest.raises(ValueError, match="mode"):
        policy.predict(imgs, "go", mode="fast")
    with pytest.raises(ValueError, match="prev_chunk"):
        policy.predict(imgs, "go", prev_chunk=np.zeros((4, 3)), inference_delay=1)
    with pytest.raises(ValueError, match="state"):
        policy.predict(imgs, "go", state=np.zeros(5))
    with pytest.raises(FileNotFoundError, match="policy.json"):
        ClapPolicy.load(tmp_path)


def test_incomplete_or_ntp_only_directories(policy_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(policy_dir, broken)
    (broken / "flow_head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="flow_head.safetensors"):
        ClapPolicy.load(broken, warmup=False)
    meta = json.loads((broken / "policy.json").read_text())
    meta["flow"] = None
    (broken / "policy.json").write_text(json.dumps(meta))
    ntp_only = ClapPolicy.load(broken, warmup=False)
    assert ntp_only.modes == ["ntp"]
    with pytest.raises(ValueError, match="no RF flow head"):
        ntp_only.predict(camera_frames(), "go", mode="rf")
    (broken / "action_space.json").unlink()
    with pytest.raises(FileNotFoundError, match="action_space.json"):
        ClapPolicy.load(broken, warmup=False)


# policy.json's action names as policies saved before the layout had a module of its own list them
SAVED_NAMES = ["left_x", "left_y", "left_z", "left_roll", "left_pitch", "left_yaw", "left_gripper",
               "right_x", "right_y", "right_z", "right_roll", "right_pitch", "right_yaw", "right_gripper"]


def test_a_policy_saved_before_loads_and_its_names_give_the_layout(policy_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(policy_dir, old)
    meta = json.loads((old / "policy.json").read_text())
    assert meta["format"] == "clap-policy/1" and meta["action_dim"] == 14
    meta["action_names"] = SAVED_NAMES
    (old / "policy.json").write_text(json.dumps(meta, indent=1))
    loaded = ClapPolicy.load(old, warmup=False)
    assert loaded.action_names == SAVED_NAMES and loaded.layout == DEFAULT_LAYOUT
    assert loaded.meta.euler_indices == [3, 4, 5, 10, 11, 12] == loaded.space.euler_indices
    assert json.loads(json.dumps(to_dict(loaded.meta))) == meta  # and it is saved as it was read
    meta["action_names"] = [f"joint_{i}" for i in range(14)]
    (old / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not one arm's"):
        ClapPolicy.load(old, warmup=False)


def test_thread_safe_predictions_match_sequential(policy):
    imgs = [camera_frames(i) for i in range(4)]
    expected = [policy.predict(imgs[i], "go", mode="rf", seed=i).actions for i in range(4)]
    got = [None] * 4

    def work(i):
        got[i] = policy.predict(imgs[i], "go", mode="rf", seed=i).actions

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


def test_default_tiny_policy_reads_224_frames(tmp_path):
    path = make_tiny_policy(tmp_path / "default", seed=1)
    policy = ClapPolicy.load(path)  # warm-up runs both modes once
    assert policy.image_size == 224 and policy.vlm.config.text_config.num_hidden_layers == 4
    frames = camera_frames(3, size=(480, 640))
    pred = policy.predict(frames, "put the block on the mat", state=np.zeros(14), mode="rf")
    assert pred.actions.shape == (32, 14) and np.all(np.isfinite(pred.actions))


def test_predictions_stay_within_the_trained_action_range(policy_dir, monkeypatch):
    policy = ClapPolicy.load(policy_dir, warmup=False)
    monkeypatch.setattr(policy.flow_head, "sample", lambda *a, **k: torch.full((1, 32, 14), 50.0))
    pred = policy.predict({"head": np.zeros((64, 64, 3), np.uint8)}, "go", mode="rf")
    limit = policy.space.normalizer.unnormalize("action", np.full((1, 14), 1.5))[0]
    pos = [0, 1, 2, 6, 7, 8, 9, 13]  # positions and grippers (Euler angles are re-wrapped)
    np.testing.assert_allclose(pred.actions[:, pos], np.broadcast_to(limit[pos], (32, 8)), rtol=1e-5, atol=1e-5)
