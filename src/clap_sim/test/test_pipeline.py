"""The pipeline recipes (clap_sim.pipeline): a registry of frozen recipes whose steps the stage runner runs."""

import dataclasses
import json
import pathlib

import pytest
from clap_sim.pipeline import RECIPES, ClosedLoop, Demo, HumanTransfer, recipe
from clap_sim.steps import CONFIGS
from stage_cli import stage_args


def test_the_registry_names_its_recipes_and_their_fields():
    assert {"demo", "closed_loop", "human_transfer", "ablation", "generalist"} <= set(RECIPES)
    with pytest.raises(KeyError, match="no recipe 'generalst'; recipes: ablation, closed_loop, demo, generalist, "
                                       "human_transfer"):
        recipe("generalst")
    with pytest.raises(TypeError, match="no field.*'demos'.*fields: configs, episodes"):
        recipe("demo", demos=3)
    demo = recipe("demo", episodes=7, configs=None)  # None keeps the default
    assert demo == Demo(episodes=7) and demo.configs.name == "demo" and demo.configs.is_dir()
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo.episodes = 8
    with pytest.raises(ValueError, match="eval_episodes"):
        Demo(eval_episodes=0)
    with pytest.raises(ValueError, match="unknown executors \\['fast'\\]"):
        ClosedLoop(executors=("rtc", "fast"))
    with pytest.raises(ValueError, match="unknown arms"):
        HumanTransfer(arms=("robot_only", "with_dogs"))


def test_demo_steps_record_convert_train_and_evaluate(tmp_path):
    steps = recipe("demo", episodes=4, eval_episodes=6, train_eval_episodes=5).steps(tmp_path)
    assert [s.argv[:2] for s in steps] == [
        ("sim", "record"), ("sim", "human-videos"), ("convert", str(tmp_path / "bags")),
        ("convert-videos", str(tmp_path / "human_videos")), ("train", "act-vae"), ("train", "vd-vae"),
        ("label-videos", "--vd-vae"), ("train", "ntp"), ("train", "rf"), ("sim", "eval"), ("sim", "eval")]
    assert "--episodes" in steps[0].argv and steps[0].argv[steps[0].argv.index("--episodes") + 1] == "4"
    # the training steps are command lines of the stage runner: its parser reads them
    for step in steps:
        if step.argv[0] == "train":
            args = stage_args(step)
            assert args.resume and pathlib.Path(args.run_dir).parent == tmp_path / "runs"
            assert f'datasets=[{{"path": "{tmp_path / "dataset"}"}}]' in args.set
    rf = stage_args(steps[8])
    assert f"init={tmp_path / 'runs' / 'ntp' / 'policy'}" in rf.set
    assert steps[8].marker == tmp_path / "runs" / "rf" / "policy"
    # held-out: all six; training seeds: no more episodes than demonstrations
    assert steps[9].argv[steps[9].argv.index("--episodes") + 1] == "6"
    assert steps[9].marker == recipe("demo").evaluations(tmp_path)["heldout"] / "eval.json"
    assert steps[10].argv[steps[10].argv.index("--episodes") + 1] == "4"
    assert steps[10].argv[steps[10].argv.index("--seed") + 1] == "0"
    assert [s.argv[:2] for s in recipe("demo", train_eval_episodes=0).steps(tmp_path)][-2:] == [
        ("train", "rf"), ("sim", "eval")]
    with pytest.raises(ValueError, match="train_eval_episodes"):
        Demo(train_eval_episodes=-1)


def test_closed_loop_and_human_transfer_steps(tmp_path):
    bench = recipe("closed_loop", task="insertion", modes=("rf",), executors=("rtc", "open_loop"))
    ladder = bench.ladder_steps(tmp_path, tmp_path / "policy")
    assert list(ladder) == ["rf rtc train", "rf rtc heldout", "rf open_loop train", "rf open_loop heldout"]
    assert ladder["rf rtc heldout"].argv[ladder["rf rtc heldout"].argv.index("--seed") + 1] == "1000"
    assert "--lockstep" in bench.curve_step(tmp_path, tmp_path / "p", "final").argv
    ht = recipe("human_transfer", seed=3, arms=("robot_only", "with_true_tokens"), rf_steps=100)
    assert ht.run_names() == {"robot_only": "robot_only_s3", "with_true_tokens": "with_true_tokens_s3"}
    plans = ht.training(tmp_path, tmp_path / "true")
    ntp = stage_args(plans["robot_only_s3"][0])
    assert "human_fraction=0" in ntp.set and "loop.seed=3" in ntp.set
    rf = stage_args(plans["with_true_tokens_s3"][1])
    assert "stage2.steps=100" in rf.set and f'human_datasets=[{{"path": "{tmp_path / "true"}"}}]' in rf.set
    assert ht.data(tmp_path)[1].argv[:4] == ("sim", "human-videos", "--task", "coloured_cubes_novel")
    evals = ht.evaluations(tmp_path)
    assert [s.name for s in evals["robot_only_s3"]] == ["robot_only_s3 on coloured_cubes_novel",
                                                        "robot_only_s3 on coloured_cubes"]


def test_write_result_writes_the_json_the_markdown_and_the_copy(tmp_path, capsys):
    from clap_sim.steps import write_result

    result = {"task": "insertion", "cells": {"a": [1, 2]}}
    write_result(tmp_path, result, "# table\n", copy_to=tmp_path / "results" / "bench.json")
    assert json.loads((tmp_path / "result.json").read_text()) == result
    assert (tmp_path / "result.md").read_text() == "# table\n"
    assert (tmp_path / "results" / "bench.json").read_text() == (tmp_path / "result.json").read_text()
    assert "# table" in capsys.readouterr().out


SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_training_config_loads_for_its_stage(path):
    import importlib

    from clap_train.config import load_config
    from clap_train.train.cli import STAGES

    stage = path.stem.replace("_", "-")
    assert stage in STAGES, f"{path}: the file name does not name a stage ({list(STAGES)})"
    load_config(importlib.import_module(STAGES[stage][0]).SPEC.config, path)
