"""The generalist recipe (clap_sim.generalist) and bench/generalist.py: several datasets, budget rule, report."""

import json
import pathlib

import pytest
from clap_sim import generalist
from clap_sim.eval_report import newcombe
from clap_sim.generalist import TASKS, Generalist
from clap_sim.pipeline import recipe
from clap_sim.tasks import TASKS as ALL_TASKS
from stage_cli import stage_args, stage_cfg

STEPS = {"ntp": {"loop.steps": 2000, "loop.warmup_steps": 50},
         "rf": {"stage1.steps": 200, "stage1.warmup_steps": 100, "stage2.steps": 6000, "stage2.warmup_steps": 50,
                "export_every": 2000}}


def test_the_recipe_checks_its_fields():
    assert recipe("generalist") == Generalist() and Generalist().tasks == TASKS
    for bad, match in ((dict(tasks=("transfer_cube", "folding")), r"unknown tasks \['folding'\]; choose from"),
                       (dict(tasks=("insertion", "insertion")), "distinct"), (dict(tasks=()), "one or more"),
                       (dict(budget="half"), r"unknown budget 'half'; choose from \['per_task', 'same_steps'\]"),
                       (dict(curve_episodes=0), "curve_episodes"), (dict(rf_set=("x",)), "KEY=VALUE"),
                       (dict(eval_seed=40), "overlap the demonstration seeds 0..49")):
        with pytest.raises(ValueError, match=match):
            Generalist(**bad)


def test_every_stage_reads_every_task(tmp_path):
    steps = Generalist(demos=2, human_videos=1).data(tmp_path)
    assert [s.argv[:4] for s in steps[:4]] == [("sim", "record", "--task", "transfer_cube"),
                                               ("sim", "human-videos", "--task", "transfer_cube"),
                                               ("convert", str(tmp_path / "data/transfer_cube/bags"), "--out",
                                                str(tmp_path / "data/transfer_cube/dataset")),
                                               ("convert-videos", str(tmp_path / "data/transfer_cube/human_videos"),
                                                "--out", str(tmp_path / "data/transfer_cube/human_dataset"))]
    assert len({s.name for s in steps}) == len(steps)  # the step names say the task: every one is its own
    robot = [str(tmp_path / "data" / t / "dataset") for t in TASKS]
    human = [str(tmp_path / "data" / t / "human_dataset") for t in TASKS]
    act, vd = stage_cfg(steps[12]), stage_cfg(steps[13])
    assert [d.path for d in act.datasets] == robot and [d.path for d in vd.datasets] == robot
    assert [d.path for d in vd.human_datasets] == human and all(d.weight == 1 for d in vd.human_datasets)
    assert [s.argv[-1] for s in steps[14:]] == human and all(s.argv[0] == "label-videos" for s in steps[14:])


def test_the_budget_rule_gives_each_single_task_policy_the_same_samples_of_its_task():
    per_task = Generalist().single_overrides(STEPS)
    assert per_task == {"ntp": ("loop.steps=667",),
                        "rf": ("stage1.steps=67", "stage1.warmup_steps=67", "stage2.steps=2000", "export_every=667")}
    assert Generalist(tasks=("insertion", "transfer_cube")).single_overrides(STEPS)["rf"] == (
        "stage1.steps=100", "stage2.steps=3000", "export_every=1000")  # warm-up 100 <= 100 steps: kept
    assert Generalist(budget="same_steps").single_overrides(STEPS) == {"ntp": (), "rf": ()}
    no_exports = {**STEPS, "rf": {**STEPS["rf"], "export_every": 0}}
    assert "export_every=0" in Generalist().single_overrides(no_exports)["rf"]
    # the step counts come from the configs with the overrides
    steps = Generalist(rf_set=("stage2.steps=9000",)).generalist_steps()
    assert steps["rf"]["stage2.steps"] == 9000 and steps["ntp"]["loop.steps"] == 2000


def test_the_generalist_trains_on_all_tasks_and_each_single_task_policy_on_its_own(tmp_path):
    bench = Generalist(ntp_set=("loop.steps=300",), rf_set=("stage2.steps=900", "alpha=0.01"))
    plans = bench.training(tmp_path, bench.generalist_steps())
    assert list(plans) == ["generalist", *TASKS]
    ntp, rf = (stage_cfg(s) for s in plans["generalist"])
    assert len(ntp.datasets) == len(ntp.human_datasets) == 3 and ntp.loop.steps == 300
    assert rf.stage2.steps == 900 and rf.alpha == 0.01 and rf.init == str(tmp_path / "runs/generalist/ntp/policy")
    ntp, rf = (stage_cfg(s) for s in plans["insertion"])
    assert [d.path for d in ntp.datasets] == [str(tmp_path / "data/insertion/dataset")]
    assert [d.path for d in rf.human_datasets] == [str(tmp_path / "data/insertion/human_dataset")]
    assert ntp.loop.steps == 100 and rf.stage2.steps == 300 and rf.alpha == 0.01
    assert ntp.act_vae == str(tmp_path / "runs/act_vae/act_vae")  # the shared Act-VAE
    assert stage_args(plans["insertion"][1]).run_dir == tmp_path / "runs/single/insertion/rf"
    assert list(Generalist(single=False).training(tmp_path, STEPS)) == ["generalist"]


def test_evaluations_go_through_the_node_and_the_curve_is_lockstep(tmp_path):
    bench = Generalist(tasks=("insertion", "coloured_cubes"), episodes=3, curve_episodes=2)
    evals = bench.evaluations(tmp_path)
    assert list(evals) == ["generalist insertion", "generalist coloured_cubes", "insertion insertion",
                           "coloured_cubes coloured_cubes"]
    for step in evals.values():
        a = step.argv
        assert "--lockstep" not in a and "--save-steps" in a and a[a.index("--executor") + 1] == "temporal_ensemble"
        assert a[a.index("--replan-every") + 1] == "1" and a[a.index("--seed") + 1] == "2000"
    assert evals["insertion insertion"].argv[evals["insertion insertion"].argv.index("--policy") + 1] == str(
        tmp_path / "runs/single/insertion/rf/policy")
    for name in ("step-000200", "step-001000"):  # in step order, then the final policy
        (tmp_path / "runs/generalist/rf/exports" / name).mkdir(parents=True)
    curve = bench.curve(tmp_path)
    assert list(curve) == [f"{t} {p}" for p in ("step-000200", "step-001000", "final") for t in bench.tasks]
    a = curve["insertion final"][0].argv
    assert "--lockstep" in a and a[a.index("--policy") + 1] == str(tmp_path / "runs/generalist/rf/policy")


def _fake_eval(path: pathlib.Path, rewards: list[int]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    per = [{"success": r == 4, "max_reward": r} for r in rewards]
    wins = sum(r == 4 for r in rewards)
    path.joinpath("eval.json").write_text(json.dumps({"successes": wins, "episodes": len(rewards),
                                                      "success_rate": wins / len(rewards), "per_episode": per}))


def test_the_report_compares_both_policies_and_shows_where_episodes_fail(tmp_path):
    bench = Generalist(tasks=("transfer_cube", "insertion"), episodes=5)
    _fake_eval(tmp_path / "eval/generalist/transfer_cube", [4, 4, 4, 4, 4])
    _fake_eval(tmp_path / "eval/transfer_cube/transfer_cube", [4, 4, 4, 4, 2])  # the single-task policy
    _fake_eval(tmp_path / "eval/generalist/insertion", [0, 1, 1, 3, 4])
    table = generalist.table(tmp_path, bench)
    tc, ins = table["transfer_cube"], table["insertion"]
    assert tc["generalist"]["max_reward_histogram"] == [0, 0, 0, 0, 5] and tc["goal"] == 0.95 and tc["goal_met"]
    d, lo, hi = newcombe(5, 5, 4, 5)
    assert tc["difference"] == {"points": 20.0, "ci95_points": [round(100 * lo, 1), round(100 * hi, 1)],
                                "within_goal": True}
    assert ins["generalist"]["max_reward_histogram"] == [1, 2, 0, 1, 1] and not ins["goal_met"]
    assert "single" not in ins and "difference" not in ins
    # the learning curve: the RF step from the export's name, the samples of each task
    (tmp_path / "runs/generalist/rf/exports/step-000010").mkdir(parents=True)
    _fake_eval(tmp_path / "curve/transfer_cube/step-000010", [0, 4, 4, 1, 1])
    _fake_eval(tmp_path / "curve/transfer_cube/final", [4, 4, 4, 1, 4])
    stage2 = tmp_path / "runs/generalist/rf/stage2/checkpoints"
    (stage2 / "step-000020").mkdir(parents=True)
    (stage2 / "latest").write_text("step-000020")
    (stage2 / "step-000020/state.json").write_text(json.dumps({"history": [{"step": 10, "elapsed_s": 5.0},
                                                                           {"step": 20, "elapsed_s": 11.0}]}))
    curves = generalist.curves(tmp_path, bench, stage2_batch=16)
    assert list(curves) == ["transfer_cube"]
    assert [(p["point"], p["rf_step"], p["task_samples"], p["successes"], p["rf_seconds"])
            for p in curves["transfer_cube"]] == [("step-000010", 10, 80, 2, 5.0), ("final", 20, 160, 4, 11.0)]
    cpu = generalist.cpu(tmp_path, bench)
    assert cpu["training_loop_seconds"]["generalist"] == {"rf_stage2": 11.0} and cpu["goal_met"]
    md = generalist.markdown({"tasks": list(bench.tasks), "demos": 50, "human_videos": 20, "budget": "per_task",
                              "episodes": 5, "eval_seed": 2000, "table": table, "curves": curves, "cpu": cpu})
    assert "| transfer_cube | 5/5 | 0.57-1.00 | 4/5 | 0.38-0.96 | +20.0 (" in md and ">= 95 %: met" in md
    assert "- insertion, generalist: 0 (not both parts grasped) 1, 1 (both parts grasped) 2," in md
    assert "| final | 20 | 160 | 4/5 | 0.38-0.96 |" in md
    generalist.plot_task(tmp_path / "transfer_cube.png", "transfer_cube", tc, curves["transfer_cube"])
    assert (tmp_path / "transfer_cube.png").stat().st_size > 1000


def test_every_task_names_its_reward_stages():
    for name, cls in ALL_TASKS.items():
        assert len(cls.stages) == cls.max_reward + 1, name


def test_bad_arguments_stop_the_bench_before_it_runs_anything(tmp_path, capsys):
    out = tmp_path / "out"
    for args, message in ((("--tasks", "transfer_cube", "folding"), "unknown tasks ['folding']"),
                          (("--budget", "half"), "invalid choice: 'half'"),
                          (("--set-rf", "stage2.steps=0"), "steps must be positive"),
                          (("--set-ntp", "loop.stepz=3"), "unknown key(s) stepz"),
                          (("--eval-seed", "0"), "overlap the demonstration seeds"),
                          (("--configs", str(tmp_path)), "no ntp.yaml")):
        with pytest.raises(SystemExit) as exit_:
            generalist.parse_args([*args, "--out", str(out)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, args
    # good arguments: the recipe, the generalist's step counts (with the overrides) and its stage-2 batch
    args, bench, steps, batch = generalist.parse_args(["--set-rf", "stage2.steps=30", "stage2.warmup_steps=5",
                                                       "--out", str(out)])
    assert steps["rf"]["stage2.steps"] == 30 and batch == 16 and bench.rf_set[-1] == "stage2.warmup_steps=5"
    assert not out.exists()
