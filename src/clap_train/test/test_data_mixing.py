"""Training on several datasets at once: mixing weights, own instructions, one normaliser, a bad mix named."""

import json
import pathlib
import shutil

import numpy as np
import pytest
import yaml

from clap_train.config import load_config
from clap_train.data.layout import ActionLayout
from clap_train.data.recording.lerobot_format import finalize, store_dir, write_frames
from clap_train.data.recording.synthetic import write_dataset
from clap_train.data.rotations import canonical_branch
from clap_train.data.samples.mixing import DatasetMix, MixError, shared_stats
from clap_train.data.samples.sources import DatasetEntry, Sources, open_robot
from clap_train.data.stats import vector_stats
from clap_train.train import act_vae, ntp, rf, runner, vd_vae

ROOT = pathlib.Path(__file__).resolve().parents[3]
TINY = ROOT / "config" / "train" / "tiny"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two robot datasets of different episodes (and instructions), two human-video datasets."""
    tmp = tmp_path_factory.mktemp("mix")
    return {
        "a": write_dataset(tmp / "a", 2, seed=1, episode_len=40, image_size=32),
        "b": write_dataset(tmp / "b", 3, seed=2, episode_len=40, image_size=32),
        "h1": write_dataset(tmp / "h1", 1, seed=3, episode_len=40, image_size=32, human=True),
        "h2": write_dataset(tmp / "h2", 1, seed=4, episode_len=40, image_size=32, human=True),
        "blind": write_dataset(tmp / "blind", 1, seed=5, episode_len=40, image_size=None),
    }


def _one_arm_dataset(root: pathlib.Path) -> pathlib.Path:
    """A robot dataset of another embodiment: one arm, 7-D state and action."""
    layout = ActionLayout(("solo",))
    eid = store_dir(root) / "ep000"
    eid.mkdir(parents=True)
    n = 40
    vec = np.tile(np.linspace(0, 1, layout.dim), (n, 1))
    write_frames(eid / "frames.parquet", {"timestamp": np.arange(n) / 30, "frame_index": np.arange(n),
                                          "task": ["wave"] * n, "subtask": [""] * n,
                                          "observation.state": vec, "action": vec}, layout.dim)
    (eid / "episode.json").write_text(json.dumps({"source": "test", "length": n, "vector_names": layout.names,
                                                  "cameras": {}}))
    finalize(root, fps=30, robot_type="solo", contract_yaml=None, euler_indices=layout.euler_indices)
    return root


def _cfg(**keys):
    return load_config(act_vae.ActVAETrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in keys.items()])


def test_weights_set_how_often_each_dataset_is_drawn(data):
    cfg = _cfg(datasets=[{"path": str(data["a"]), "weight": 3}, {"path": str(data["b"]), "weight": 1}])
    mix, _ = open_robot(Sources(robot=tuple(cfg.datasets)), cfg, 8, 32, progress=False)
    assert isinstance(mix, DatasetMix) and len(mix) == 80 + 120
    n = 4000
    share = np.mean([mix.locate(i)[0] == 0 for i in range(n)])
    # 3:1 -> 0.75; binomial standard error at n = 4000 is 0.007, the tolerance 0.03 (over 4 of them)
    assert abs(share - 0.75) < 0.03, share
    assert [mix.locate(i) for i in range(50)] == [mix.locate(i) for i in range(50)]  # deterministic in i
    # equal weights: about half each, although b has 1.5x the frames
    even = open_robot(Sources(robot=(DatasetEntry(str(data["a"])), DatasetEntry(str(data["b"])))), cfg, 8, 32,
                      progress=False)[0]
    assert abs(np.mean([even.locate(i)[0] == 0 for i in range(n)]) - 0.5) < 0.03


def test_each_sample_keeps_its_own_instruction(data):
    cfg = _cfg()
    mix, _ = open_robot(Sources(robot=(DatasetEntry(str(data["a"])), DatasetEntry(str(data["b"])))), cfg, 8, 32,
                        progress=False)
    tasks = [set(part.tasks) for part in mix.parts]
    assert not tasks[0] & tasks[1]  # different episodes, different instructions
    seen = set()
    for i in range(0, len(mix), 3):
        s = mix[i]
        assert s["instruction"] in tasks[s["dataset_index"]]
        seen.add(s["dataset_index"])
    assert seen == {0, 1}


def test_datasets_of_one_embodiment_share_one_normaliser(data):
    cfg = _cfg()
    a, own = open_robot(Sources(robot=(DatasetEntry(str(data["a"])),)), cfg, 8, 32, progress=False)
    # one dataset: its own meta/stats.json, which the shared computation reproduces
    assert own == json.loads((data["a"] / "meta" / "stats.json").read_text())
    for key in ("observation.state", "action"):
        np.testing.assert_allclose(shared_stats([a])[key]["q01"], own[key]["q01"], atol=1e-6)
    mix, stats = open_robot(Sources(robot=(DatasetEntry(str(data["a"])), DatasetEntry(str(data["b"])))), cfg, 8,
                            32, progress=False)
    assert mix.parts[0].normalizer is mix.parts[1].normalizer or (
        mix.parts[0].normalizer.to_dict() == mix.parts[1].normalizer.to_dict())
    # exact quantiles of the union, not an average of the two datasets' quantiles
    frames = [canonical_branch(p.frames("observation.state"), p.frames("action"), p.layout.euler_indices)[1]
              for p in mix.parts]
    assert stats["action"] == vector_stats(np.concatenate(frames))
    own_b = json.loads((data["b"] / "meta" / "stats.json").read_text())["action"]["q01"]
    assert not np.allclose(stats["action"]["q01"], own["action"]["q01"])
    assert not np.allclose(stats["action"]["q01"], own_b)
    s = mix[0]
    raw_state = mix.raw(0)[0]
    np.testing.assert_allclose(s["state"].numpy(), mix.parts[0].normalizer.normalize("observation.state", raw_state),
                               atol=1e-5)


def _train(tmp_path, *argv) -> int:
    return runner.main(act_vae.SPEC, ["--config", str(TINY / "act_vae.yaml"), "--run-dir", str(tmp_path / "run"),
                                      "--no-progress", *argv])


def test_a_bad_mix_is_an_error_that_names_the_dataset(data, tmp_path, capsys):
    other = _one_arm_dataset(tmp_path / "solo")
    cases = [
        (["--dataset", str(data["a"]), "--dataset", str(other)], [str(other), "layout", "solo_x"]),
        (["--dataset", str(data["a"]), "--dataset", str(data["blind"])], [str(data["blind"]), "cameras"]),
        (["--dataset", str(data["a"]), "--dataset", str(data["h1"])], [str(data["h1"]), "not a robot dataset"]),
        (["--dataset", str(tmp_path / "missing")], [str(tmp_path / "missing"), "no meta/info.json"]),
    ]
    empty = tmp_path / "empty"  # metadata without a single episode
    (empty / "meta").mkdir(parents=True)
    (empty / "meta" / "info.json").write_text((data["a"] / "meta" / "info.json").read_text())
    cases.append((["--dataset", str(data["a"]), "--dataset", str(empty)], [str(empty), "no episode metadata"]))
    nostate = tmp_path / "nostate"  # a robot dataset whose info.json lacks observation.state
    shutil.copytree(data["a"] / "meta", nostate / "meta")
    info = json.loads((data["a"] / "meta" / "info.json").read_text())
    del info["features"]["observation.state"]
    (nostate / "meta" / "info.json").write_text(json.dumps(info))
    cases.append((["--dataset", str(nostate)], [str(nostate), "observation.state"]))
    for argv, words in cases:
        assert _train(tmp_path, *argv) == 2, argv
        err = capsys.readouterr().err
        assert all(w in err for w in words), (words, err)
    assert not (tmp_path / "run").exists()  # nothing written before the data is checked
    with pytest.raises(MixError, match="a robot dataset given as human videos"):
        from clap_train.data.samples.sources import open_human

        open_human(Sources(synthetic=1, human=(DatasetEntry(str(data["a"])),)), _cfg(), 8, 32, seed=0,
                   progress=False)
    with pytest.raises(ValueError, match="weight must be > 0"):
        _cfg(datasets=[{"path": "x", "weight": 0}])


def test_act_vae_trains_on_a_weighted_mix_from_the_config(data, tmp_path):
    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump({"base": str(TINY / "act_vae.yaml"), "datasets": [
        {"path": str(data["a"]), "weight": 2.0}, {"path": str(data["b"]), "weight": 1.0}]}))
    assert runner.main(act_vae.SPEC, ["--config", str(config), "--run-dir", str(tmp_path / "run"), "--no-progress",
                                      "--set", "loop.steps=4", "loop.save_every=4", "loop.warmup_steps=0"]) == 0
    ran = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert ran["datasets"] == [{"path": str(data["a"]), "weight": 2.0}, {"path": str(data["b"]), "weight": 1.0}]
    exported = json.loads((tmp_path / "run" / "act_vae" / "stats.json").read_text())
    assert exported["action"]["count"] == [200]  # the shared statistics of both datasets' frames


def test_every_stage_trains_on_several_robot_and_human_datasets(data, tmp_path, act_vae_dir):
    """VD-VAE, CLAP-NTP and CLAP-RF read two robot and two human-video datasets with weights."""
    import torch

    from clap_train.data.samples.pseudo_tokens import read_pseudo_tokens, token_table, write_sidecar
    from clap_train.models.act_vae import ActVAE

    nq = ActVAE.from_pretrained(act_vae_dir).config.num_queries
    labelled = tmp_path / "h1"
    shutil.copytree(data["h1"], labelled)
    write_sidecar(token_table((0, t, [t % 7] * nq) for t in range(40)), labelled, {"source": "test"})
    mix = ["--dataset", str(data["a"]), "--dataset", str(data["b"]), "--set",
           f'human_datasets=[{{path: "{labelled}", weight: 2}}, {{path: "{data["h2"]}"}}]']
    runs = {
        "vd-vae": (vd_vae.SPEC, TINY / "vd_vae.yaml", [f"act_vae={act_vae_dir}", "loop.steps=2",
                                                       "loop.batch_size=4", "loop.warmup_steps=0",
                                                       "feature_cache=true"]),
        "ntp": (ntp.SPEC, TINY / "ntp.yaml", [f"act_vae={act_vae_dir}", "loop.steps=2", "loop.batch_size=4",
                                              "loop.warmup_steps=0", "human_fraction=0.5"]),
        "rf": (rf.SPEC, TINY / "rf.yaml", [f"act_vae={act_vae_dir}", "stage1.steps=1", "stage2.steps=1",
                                           "stage1.warmup_steps=0", "stage2.warmup_steps=0", "stage1.batch_size=4",
                                           "stage2.batch_size=4", "human_fraction=0.5"]),
    }
    for name, (spec, config, sets) in runs.items():
        run = tmp_path / name
        assert runner.main(spec, ["--config", str(config), "--run-dir", str(run), "--no-progress", *mix, *sets]) == 0
        ran = yaml.safe_load((run / "config.yaml").read_text())
        assert [d["path"] for d in ran["datasets"]] == [str(data["a"]), str(data["b"])]
        assert [d["weight"] for d in ran["human_datasets"]] == [2.0, 1.0]
    assert (tmp_path / "vd-vae" / "vd_vae" / "config.json").is_file()
    assert (tmp_path / "rf" / "policy").is_dir()
    # the labelled human dataset's tokens reach the NTP batches; the other's samples have none
    humans = f"human_datasets=[{{path: '{labelled}'}}, {{path: '{data['h2']}'}}]"
    cfg = load_config(ntp.NTPTrainConfig, TINY / "ntp.yaml", [f"act_vae={act_vae_dir}", "human_fraction=0.5", humans])
    sources = Sources(robot=(DatasetEntry(str(data["a"])),), human=tuple(cfg.human_datasets))
    job = ntp.prepare(cfg, sources, runner.RunOptions(run_dir=tmp_path / "x", progress=False))
    tokens = read_pseudo_tokens(labelled)
    humans = [job.dataset[i] for i in range(60)]
    humans = [s for s in humans if not s["is_robot"]]
    assert {s["dataset_index"] for s in humans} == {0, 1}
    for s in humans:
        want = tokens[(s["episode_index"], s["frame_index"])] if s["dataset_index"] == 0 else [-1] * nq
        assert torch.equal(s["action_tokens"], torch.tensor(want)), s["dataset_index"]
