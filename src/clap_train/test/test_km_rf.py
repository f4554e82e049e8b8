"""``clap train rf``: stage 1 -> frozen reference, stage 2 RF + KM; exact resume; exported RF policy."""

import json
import pathlib

import numpy as np
import pytest
import torch

from clap_train.policy import ClapPolicy
from clap_train.train import rf, runner
from clap_train.train.checkpoint import latest_checkpoint

CONFIG = pathlib.Path(__file__).resolve().parents[3] / "config" / "train" / "tiny" / "rf.yaml"


def args(run_dir, act_vae_dir, s1, s2, stop_after=None, resume=False, extra=()):
    argv = ["--config", str(CONFIG), "--synthetic", "2", "--human-synthetic", "1", "--run-dir", str(run_dir),
            "--no-progress", "--set", f"act_vae={act_vae_dir}", f"stage1.steps={s1}", f"stage2.steps={s2}",
            "stage1.warmup_steps=0", "stage2.warmup_steps=0", "stage1.save_every=2", "stage2.save_every=2",
            "synthetic_episode_len=40", *extra]
    if stop_after is not None:
        argv += ["--stop-after", str(stop_after)]
    if resume:
        argv.append("--resume")
    return runner.parse_args(rf.SPEC, argv)


def history(stage_dir):
    return json.loads((latest_checkpoint(stage_dir) / "state.json").read_text())["history"]


def test_rf_trains_with_km_and_exports_an_rf_policy(tmp_path, act_vae_dir):
    run = tmp_path / "run"
    assert runner.run(rf.SPEC, args(run, act_vae_dir, 2, 40, extra=("stage2.lr=3e-3", "stage2.batch_size=2"))) == 0
    h2 = history(run / "stage2")
    # policy == reference before the first update: KL exactly zero at stage 2's first step
    assert h2[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert max(h["kl"] for h in h2) > 0  # ... and it moves once the policy branch trains
    first = np.mean([h["rf_loss"] for h in h2[:4]])
    last = np.mean([h["rf_loss"] for h in h2[-4:]])
    assert last < 0.8 * first, (first, last)
    policy = ClapPolicy.load(run / "policy")
    assert policy.modes == ["ntp", "rf"] and policy.meta.flow.feature_layers == [0, 1]
    img = {"head": np.zeros((64, 64, 3), np.uint8)}
    for mode in ("rf", "ntp"):
        assert policy.predict(img, "use the left arm", mode=mode).actions.shape == (32, 14)


def tiny_stage_two(act_vae_dir, **settings):
    """Stage 2's pieces at a tiny size: (cfg, processor, vocab, act_vae, frozen reference, policy model, dataset).

    The policy branch is moved away from the reference, so that their KL is not zero.
    """
    import copy

    from clap_train.data.recording.synthetic import synthetic_dataset
    from clap_train.data.samples.sources import open_dataset
    from clap_train.models.flow_head import FlowHead, FlowHeadConfig
    from clap_train.models.pretrained import load_act_vae, load_backbone
    from clap_train.models.vlm import VLMConfig

    head = FlowHeadConfig(vlm_hidden=64, feature_layers=[0, 1], d_model=32, layers=1, heads=2,
                          **settings.pop("flow", {}))
    cfg = rf.RFTrainConfig(vlm=VLMConfig(image_size=64, hidden_size=64, layers=2, intermediate_size=128,
                                         vision_hidden=32, vision_heads=2), alpha=1.0, flow=head, **settings)
    act_vae = load_act_vae(str(act_vae_dir))
    vlm, proc, vocab = load_backbone(cfg.vlm, None, 32)
    reference = copy.deepcopy(vlm).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    model = rf.RFModel(vlm, FlowHead(head))
    with torch.no_grad():
        for p in model.vlm.model.language_model.layers[1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    ds = open_dataset(synthetic_dataset(1, episode_len=40, image_size=64), 32, image_size=64, progress=False)
    return cfg, proc, vocab, act_vae, reference, model, ds


def test_reference_is_frozen_and_gets_no_gradient(act_vae_dir):
    from clap_train.data.samples.dataset import collate_samples

    cfg, proc, vocab, act_vae, reference, model, ds = tiny_stage_two(act_vae_dir)
    batch = collate_samples([ds[0], ds[5]])
    loss, metrics = rf.rf_km_loss_fn(proc, vocab, act_vae, reference, cfg)(model, batch, 0)
    loss.backward()
    assert metrics["kl"] > 0
    assert all(p.grad is None for p in reference.parameters())
    assert model.vlm.model.language_model.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0
    assert model.head.feat_proj.weight.grad.abs().sum() > 0


def test_cached_reference_logits_give_the_reference_passs_kl(act_vae_dir):
    """The KM reference cache (bench/train_speed.py): a sample seen before costs no reference pass, same KL."""
    import dataclasses

    from clap_train.data.samples.dataset import collate_samples
    from clap_train.models.knowledge_matching import ReferenceCache

    cfg, proc, vocab, act_vae, reference, model, ds = tiny_stage_two(act_vae_dir, wrist_dropout=0.5)
    ds = rf.Indexed(ds)
    cache = ReferenceCache(max_bytes=2 ** 24)

    def kl(batch, with_cache, config=cfg):
        torch.manual_seed(0)  # the same wrist dropout, state dropout and flow noise in every call
        fn = rf.rf_km_loss_fn(proc, vocab, act_vae, reference, config, cache if with_cache else None)
        return fn(model, batch, 0)[1]["kl"]

    first = collate_samples([ds[i] for i in (0, 5, 9)])
    direct = kl(first, False)
    assert direct > 0
    assert kl(first, True) == pytest.approx(direct, rel=1e-5)  # cold: every sample computed
    assert (cache.hits, cache.misses) == (0, 3)
    assert kl(first, True) == pytest.approx(direct, rel=1e-5)  # warm: every sample from the cache
    assert (cache.hits, cache.misses) == (3, 3)
    # with all cameras shown (the key is the sample and its cameras): two seen, two new, in another batch
    all_cameras = dataclasses.replace(cfg, wrist_dropout=0.0)
    cache = ReferenceCache(max_bytes=2 ** 24)
    kl(first, True, all_cameras)
    mixed = collate_samples([ds[i] for i in (5, 20, 0, 31)])
    assert kl(mixed, True, all_cameras) == pytest.approx(kl(mixed, False, all_cameras), rel=1e-5)
    assert (cache.hits, cache.misses) == (2, 5)
    # alpha 0 is direct fine-tuning: no reference pass at all
    calls = []
    reference.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(0)
    loss, metrics = rf.rf_km_loss_fn(proc, vocab, act_vae, reference, dataclasses.replace(cfg, alpha=0.0))(
        model, first, 0)
    assert metrics["kl"] == 0.0 and not calls


def test_resume_in_stage_two_reproduces_next_step_loss(tmp_path, act_vae_dir):
    straight = tmp_path / "straight"
    assert runner.run(rf.SPEC, args(straight, act_vae_dir, 2, 5)) == 0
    killed = tmp_path / "killed"
    assert runner.run(rf.SPEC, args(killed, act_vae_dir, 2, 5, stop_after=5)) == 0  # 2 stage-1 steps + 3 stage-2 steps
    assert not (killed / "policy").exists()
    assert runner.run(rf.SPEC, args(killed, act_vae_dir, 2, 5, resume=True)) == 0
    a, b = history(straight / "stage2"), history(killed / "stage2")
    assert [h["step"] for h in b] == [1, 2, 3, 4, 5]
    for ha, hb in zip(a, b):
        assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-5, abs=1e-6), (ha, hb)
    assert history(killed / "stage1")[-1]["step"] == 2  # stage 1 was reloaded, not retrained


def test_lora_stage_two_starts_at_the_reference_and_exports_plain_weights(tmp_path, act_vae_dir):
    run = tmp_path / "lora"
    extra = ("finetune=lora", "lora_rank=4", "stage2.lr=3e-3", "stage2.batch_size=2")
    assert runner.run(rf.SPEC, args(run, act_vae_dir, 1, 4, extra=extra)) == 0
    h2 = history(run / "stage2")
    assert h2[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # lora_B = 0: policy == reference at the start
    assert h2[-1]["kl"] > 0  # the adapters moved the token policy
    from safetensors import safe_open

    with safe_open(str(run / "policy" / "vlm" / "model.safetensors"), "pt") as f:
        assert not any("lora" in k or "base_layer" in k for k in f.keys())
    policy = ClapPolicy.load(run / "policy")
    assert policy.predict({"head": np.zeros((64, 64, 3), np.uint8)}, "go", mode="rf").actions.shape == (32, 14)


def test_kill_9_in_stage_two_then_resume(tmp_path, act_vae_dir, sigkill_after_checkpoint):
    import subprocess
    import sys

    steps = 30

    def argv(run_dir):
        return [
            sys.executable, "-m", "clap_train.cli", "train", "rf", "--config", str(CONFIG), "--synthetic", "2",
            "--run-dir", str(run_dir), "--no-progress", "--set", f"act_vae={act_vae_dir}", "stage1.steps=1",
            f"stage2.steps={steps}", "stage1.warmup_steps=0", "stage2.warmup_steps=0", "stage2.save_every=2",
            "synthetic_episode_len=40"]

    run = tmp_path / "killed"
    env = sigkill_after_checkpoint(argv(run), run / "stage2", timeout=120, min_step=4)
    killed_at = history(run / "stage2")[-1]["step"]
    assert killed_at < steps
    assert subprocess.run(argv(run) + ["--resume"], env=env, capture_output=True).returncode == 0
    straight = tmp_path / "straight"
    assert subprocess.run(argv(straight), env=env, capture_output=True).returncode == 0
    a, b = history(straight / "stage2"), history(run / "stage2")
    assert [h["step"] for h in b] == list(range(1, steps + 1))
    for ha, hb in zip(a[killed_at:], b[killed_at:]):  # the steps after the kill
        assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-4, abs=1e-6), (ha, hb)
    assert (run / "policy" / "policy.json").is_file()


def test_pipeline_on_a_converted_lerobot_dataset(tmp_path, act_vae_dir):
    """rosbag2 -> clap convert -> clap train ntp -> clap train rf -> ClapPolicy, on real files."""
    from clap_train.data.contract import load_contract
    from clap_train.data.recording.convert import convert_bags
    from clap_train.data.recording.synthetic_bag import CameraSetup, write_bag
    from clap_train.train import ntp as ntp_train

    cams = {n: CameraSetup("rgb8", 48, 64) for n in ("head", "left_wrist", "right_wrist")}
    write_bag(tmp_path / "bags/e0", duration_s=1.2, cameras=cams, yaw_cross=True)
    convert_bags([tmp_path / "bags"], load_contract(), tmp_path / "robot", progress=False)
    assert runner.main(ntp_train.SPEC, [
        "--config", str(CONFIG.parent / "ntp.yaml"), "--dataset", str(tmp_path / "robot"),
        "--run-dir", str(tmp_path / "ntp"), "--no-progress", "--set", f"act_vae={act_vae_dir}", "loop.steps=4",
        "loop.warmup_steps=0", "loop.batch_size=2"]) == 0
    assert runner.main(rf.SPEC, [
        "--config", str(CONFIG), "--dataset", str(tmp_path / "robot"), "--run-dir", str(tmp_path / "rf"),
        "--no-progress", "--set", f"init={tmp_path / 'ntp' / 'policy'}", "stage1.steps=1", "stage2.steps=2",
        "stage1.warmup_steps=0", "stage2.warmup_steps=0", "stage1.batch_size=2", "stage2.batch_size=2"]) == 0
    policy = ClapPolicy.load(tmp_path / "rf" / "policy")
    stats = json.loads((tmp_path / "robot" / "meta" / "stats.json").read_text())
    # the tiny Act-VAE names no action space: the dataset's own absolute one is exported
    assert policy.space.representation == "absolute"
    assert policy.space.normalizer.to_dict()["action"]["q01"] == pytest.approx(stats["action"]["q01"])
    frame = np.zeros((48, 64, 3), np.uint8)
    for mode in ("rf", "ntp"):
        pred = policy.predict({"head": frame, "left_wrist": frame}, "put the cube in the bowl", mode=mode)
        assert pred.actions.shape == (32, 14) and np.all(np.isfinite(pred.actions))


def test_rf_trains_with_vision_aux_in_both_stages(tmp_path, act_vae_dir):
    run = tmp_path / "run"
    assert runner.run(rf.SPEC, args(run, act_vae_dir, 2, 4, extra=("vision_aux=4.0",))) == 0
    h1, h2 = history(run / "stage1"), history(run / "stage2")
    assert all(h["vision_aux_loss"] > 0 for h in h1 + h2)
    # the head changes no logit: policy == reference at stage 2's first step, as without it
    assert h2[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    from safetensors import safe_open

    keys = [k for f in (run / "policy").rglob("*.safetensors") for k in safe_open(str(f), "pt").keys()]
    assert keys and not any(k.startswith("aux") or ".aux." in k for k in keys)


def test_a_head_that_reads_the_subtask_trains_and_decodes_it_in_rf_mode(tmp_path, act_vae_dir):
    run = tmp_path / "run"
    extra = ("flow.read_subtask=true", "subtask_loss=1.0", "stage2.lr=3e-3", "stage2.batch_size=2")
    assert runner.run(rf.SPEC, args(run, act_vae_dir, 2, 30, extra=extra)) == 0
    h2 = history(run / "stage2")
    assert all(h["subtask_loss"] > 0 for h in h2)
    first, last = np.mean([h["subtask_loss"] for h in h2[:3]]), np.mean([h["subtask_loss"] for h in h2[-3:]])
    assert last < first, (first, last)
    policy = ClapPolicy.load(run / "policy")
    assert policy.meta.flow.read_subtask
    frame = np.zeros((48, 64, 3), np.uint8)
    pred = policy.predict({"head": frame, "left_wrist": frame}, "put the cube in the bowl", mode="rf")
    ntp = policy.predict({"head": frame, "left_wrist": frame}, "put the cube in the bowl", mode="ntp")
    # RF mode decodes the same subtask as NTP mode (the same greedy decoding), then reads it
    assert pred.subtask and pred.subtask == ntp.subtask
    assert pred.actions.shape == (32, 14) and np.all(np.isfinite(pred.actions))


def test_subtask_jitter_reads_a_nearby_frames_subtask_and_scores_only_own_text(act_vae_dir):
    """``subtask_jitter``: the head reads a subtask drawn within R frames; the text loss skips the drawn-away ones."""
    from clap_train.data.samples.dataset import collate_samples

    cfg, proc, vocab, act_vae, reference, model, ds = tiny_stage_two(
        act_vae_dir, subtask_loss=1.0, subtask_jitter=3, flow={"read_subtask": True})
    near = rf.Indexed(ds, subtask_radius=3)
    own = [ds[i]["subtask"] for i in range(len(ds))]
    assert len(set(own)) > 1  # the synthetic episode has phases
    for i in (0, 1, 17, len(ds) - 1):  # clipped to the episode's first and last frame
        window = near[i]["subtask_window"]
        assert window == tuple(own[min(max(j, 0), len(ds) - 1)] for j in range(i - 3, i + 4))
    boundary = next(i for i in range(1, len(ds)) if own[i] != own[i - 1])  # the first phase change
    batch = collate_samples([near[boundary], near[boundary - 1]])
    torch.manual_seed(0)
    drawn = rf.jittered_subtasks(batch)
    torch.manual_seed(0)
    assert rf.jittered_subtasks(batch) == drawn  # seeded per step by the loop: resume stays exact
    assert all(t in w for t, w in zip(drawn, batch["subtask_window"]))
    assert rf.jittered_subtasks(collate_samples([ds[boundary]])) == [own[boundary]]  # no window: its own

    def text_loss(windows):
        torch.manual_seed(0)
        fn = rf.rf_km_loss_fn(proc, vocab, act_vae, reference, cfg)
        return fn(model, {**batch, "subtask_window": windows}, 0)[1]["subtask_loss"]

    mine = [(s,) for s in batch["subtask"]]
    swapped = [(batch["subtask"][1],), (batch["subtask"][0],)]  # each reads the other phase's text
    assert text_loss(mine) > 0
    assert text_loss(swapped) == 0.0  # a text that is not the frame's own is never a label
    half = [mine[0], swapped[1]]
    assert 0 < text_loss(half) != text_loss(mine)


def test_subtask_jitter_needs_a_head_that_reads_the_subtask():
    with pytest.raises(ValueError, match="subtask_jitter needs flow.read_subtask"):
        rf.RFTrainConfig(subtask_jitter=8)
    with pytest.raises(ValueError, match="subtask_jitter must be >= 0"):
        rf.RFTrainConfig(subtask_jitter=-1)


def test_negative_subtask_loss_is_refused():
    with pytest.raises(ValueError, match="subtask_loss must be >= 0"):
        rf.RFTrainConfig(subtask_loss=-1.0)
