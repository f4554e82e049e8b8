"""The ablation recipe (clap_sim.ablation) and bench/ablation.py: arms, seeds, shared data, pooled tables, errors."""

import json
import pathlib
import subprocess
import sys

import pytest
from clap_sim import ablation
from clap_sim.ablation import ARMS, Ablation
from clap_sim.eval_report import newcombe, wilson
from clap_sim.pipeline import recipe
from clap_sim.steps import CONFIGS, StepSeconds
from clap_train.train.runner import StepResult
from stage_cli import stage_args, stage_cfg

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _flat(phase):
    return {key: plan[0] for key, plan in phase.items()}


def test_the_recipe_checks_its_fields():
    assert recipe("ablation") == Ablation() and Ablation().seeds == (0, 1, 2) and Ablation().eval_seed == 2000
    assert Ablation().arms == ARMS == ("full", "no_human", "no_contrastive", "no_ntp", "no_km", "ntp_only")
    for bad, match in ((dict(arms=("full", "no_dogs")), r"unknown arms \['no_dogs'\]"),
                       (dict(arms=()), "arms must be one or more"),
                       (dict(seeds=(0, 0)), "seeds must be.*none repeated"),
                       (dict(seeds=(-1,)), "training seeds must be >= 0"), (dict(episodes=0), "episodes"),
                       (dict(human_fraction=0.0), r"human_fraction must be in \(0, 1\)"),
                       (dict(rf_set=("alpha",)), "KEY=VALUE"), (dict(ntp_set=("=3",)), "KEY=VALUE"),
                       (dict(eval_seed=10), "overlap the demonstration seeds 0..49"),
                       (dict(eval_seed=520), "overlap the human-video seeds 500..529")):
        with pytest.raises(ValueError, match=match):
            Ablation(**bad)


def test_data_is_made_once_with_a_second_vd_vae_without_the_contrastive_loss(tmp_path):
    steps = Ablation(demos=3, human_videos=2).data(tmp_path)
    assert steps[1].argv[:4] == ("sim", "human-videos", "--task", "coloured_cubes_novel")
    assert steps[0].argv[:4] == ("sim", "record", "--task", "coloured_cubes")
    copy, vd, label = steps[-3:]
    runs, human = Ablation.nocon(tmp_path)
    assert copy.argv == ("convert-videos", str(tmp_path / "human_videos"), "--out", str(human))
    cfg = stage_cfg(vd)
    assert cfg.model.lambda_con == 0.0 and cfg.act_vae == str(tmp_path / "runs" / "act_vae" / "act_vae")
    assert [d.path for d in cfg.human_datasets] == [str(human)] and stage_args(vd).run_dir == runs / "vd_vae"
    assert stage_cfg(steps[5]).model.lambda_con > 0  # the Full VD-VAE keeps its config's weight
    assert label.argv == ("label-videos", "--vd-vae", str(runs / "vd_vae" / "vd_vae"), "--dataset", str(human))
    assert label.marker == human / ".labelled"
    assert len(Ablation(arms=("full", "no_km")).data(tmp_path)) == 7  # no lambda_con = 0 pair without its arm


def test_each_arm_trains_what_its_row_says(tmp_path):
    bench = Ablation(seeds=(0, 4), ntp_set=("loop.steps=70", "human_fraction=0.5", "vlm.layers=3"),
                     rf_set=("stage2.steps=90", "alpha=0.01"))
    ntp, rf = (_flat(p) for p in bench.training(tmp_path))
    assert list(ntp) == [f"{a} s{s} ntp" for s in (0, 4) for a in ("full", "no_human", "no_contrastive")]
    rf_arms = ("full", "no_human", "no_contrastive", "no_ntp", "no_km")
    assert list(rf) == [f"{a} s{s} rf" for s in (0, 4) for a in rf_arms]
    full, no_human, no_con = (stage_cfg(ntp[f"{a} s4 ntp"]) for a in ("full", "no_human", "no_contrastive"))
    # the seed goes to loop.seed; ntp_set reaches every arm; the arm's own override wins
    assert full.loop.seed == 4 and full.loop.steps == 70 and full.human_fraction == 0.5 and full.vlm.layers == 3
    assert no_human.human_fraction == 0.0 and no_human.loop.steps == 70 and no_human.loop.seed == 4
    assert [d.path for d in no_con.human_datasets] == [str(Ablation.nocon(tmp_path)[1])]
    assert [d.path for d in full.human_datasets] == [str(tmp_path / "human_dataset")]
    assert stage_args(ntp["no_contrastive s0 ntp"]).run_dir == tmp_path / "runs" / "no_contrastive" / "s0" / "ntp"
    cfgs = {a: stage_cfg(rf[f"{a} s4 rf"]) for a in ("full", "no_human", "no_contrastive", "no_ntp", "no_km")}
    for arm, cfg in cfgs.items():  # the seed goes to both RF stages; rf_set reaches every arm
        assert cfg.stage1.seed == 4 and cfg.stage2.seed == 4 and cfg.stage2.steps == 90, arm
    assert cfgs["full"].init == str(tmp_path / "runs" / "full" / "s4" / "ntp" / "policy") and cfgs["full"].alpha == 0.01
    # w/o KM: full's CLAP-NTP of the same seed, alpha 0 over rf_set's
    assert cfgs["no_km"].init == cfgs["full"].init and cfgs["no_km"].alpha == 0.0
    assert stage_args(rf["no_km s4 rf"]).run_dir == tmp_path / "runs" / "no_km" / "s4" / "rf"
    # w/o NTP: the random backbone of the RF config's vlm, with ntp_set's vlm changes, the Act-VAE given
    assert cfgs["no_ntp"].init is None and cfgs["no_ntp"].act_vae == str(tmp_path / "runs" / "act_vae" / "act_vae")
    assert cfgs["no_ntp"].vlm.layers == 3 and cfgs["no_ntp"].alpha == 0.01
    assert cfgs["no_human"].human_fraction == 0.0
    assert cfgs["no_contrastive"].init == str(tmp_path / "runs" / "no_contrastive" / "s4" / "ntp" / "policy")


def test_arms_that_reuse_full_train_only_what_they_need(tmp_path):
    ntp, rf = (_flat(p) for p in Ablation(arms=("no_km",), seeds=(1,)).training(tmp_path))
    assert list(ntp) == ["full s1 ntp"] and list(rf) == ["no_km s1 rf"]
    ntp, rf = (_flat(p) for p in Ablation(arms=("ntp_only",), seeds=(1,)).training(tmp_path))
    assert list(ntp) == ["full s1 ntp"] and list(rf) == ["full s1 rf"]
    ntp, rf = (_flat(p) for p in Ablation(arms=("no_ntp",), seeds=(1,)).training(tmp_path))
    assert ntp == {} and list(rf) == ["no_ntp s1 rf"]


def test_a_grounded_table_starts_every_backbone_from_one_grounding(tmp_path):
    bench = Ablation(seeds=(3,), grounded=True, configs=CONFIGS / "coloured_cubes")
    ground = [s for s in bench.data(tmp_path) if s.name == "ground the backbone"]
    where = tmp_path / "runs" / "grounded"
    assert len(ground) == 1 and ground[0].marker == where / "vlm" / "config.json"
    a = ground[0].argv
    assert a[:2] == ("sim", "ground") and a[a.index("--config") + 1] == str(CONFIGS / "coloured_cubes" / "ntp.yaml")
    assert a[a.index("--out") + 1] == str(where) and a[a.index("--task") + 1] == "coloured_cubes"
    ntp, rf = (_flat(p) for p in bench.training(tmp_path))
    assert {stage_cfg(step).init for step in ntp.values()} == {str(where)}
    # w/o NTP: CLAP-RF + KM from the grounded backbone (the paper's starts from the pretrained VLM)
    no_ntp = stage_cfg(rf["no_ntp s3 rf"])
    assert no_ntp.init == str(where) and no_ntp.act_vae == str(tmp_path / "runs" / "act_vae" / "act_vae")
    assert stage_cfg(rf["full s3 rf"]).init == str(tmp_path / "runs" / "full" / "s3" / "ntp" / "policy")
    assert not [s for s in Ablation().data(tmp_path) if s.name == "ground the backbone"]


def test_every_policy_is_evaluated_in_lockstep_in_and_out_of_distribution(tmp_path):
    evals = _flat(Ablation(arms=("ntp_only", "full"), seeds=(2,), episodes=5, eval_seed=3000).evaluations(tmp_path))
    assert list(evals) == ["full s2 id", "full s2 ood", "ntp_only s2 id", "ntp_only s2 ood"]
    for key, step in evals.items():
        a = step.argv
        assert a[:2] == ("sim", "eval") and "--lockstep" in a and "--no-video" in a
        assert a[a.index("--executor") + 1] == "temporal_ensemble" and a[a.index("--replan-every") + 1] == "1"
        assert a[a.index("--seed") + 1] == "3000" and a[a.index("--episodes") + 1] == "5"
        assert a[a.index("--task") + 1] == ("coloured_cubes" if key.endswith("id") else "coloured_cubes_novel")
        assert a[a.index("--policy") + 1] == str(tmp_path / "runs" / "full" / "s2" / "rf" / "policy")
        assert a[-2:] == ("--mode", "ntp") if key.startswith("ntp_only") else "--mode" not in a
    assert evals["ntp_only s2 ood"].marker == tmp_path / "eval/ntp_only/s2/coloured_cubes_novel/eval.json"


def _fake_eval(path: pathlib.Path, successes: int, episodes: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    per = [{"success": i < successes, "max_reward": 4 if i < successes else 1} for i in range(episodes)]
    path.joinpath("eval.json").write_text(json.dumps({"successes": successes, "episodes": episodes,
                                                      "success_rate": successes / episodes, "per_episode": per}))


FAKE = {("full", "ood"): (8, 6, 10), ("no_human", "ood"): (2, 3, 1), ("full", "id"): (9, 9, 8),
        ("no_ntp", "id"): (5, 4, 6), ("no_km", "ood"): (7, 7, 6), ("ntp_only", "id"): (0, 1, 0),
        ("no_contrastive", "ood"): (6, 6, 6)}


def test_the_table_pools_seeds_and_the_claims_are_newcombe_differences(tmp_path):
    bench = Ablation(seeds=(0, 1, 2), episodes=10)
    for (arm, variant), wins in FAKE.items():
        for seed, s in zip(bench.seeds, wins):
            _fake_eval(bench.eval_dir(tmp_path, arm, seed, variant), s, 10)
    _fake_eval(bench.eval_dir(tmp_path, "no_human", 0, "id"), 3, 10)  # one seed only: pooled over what exists
    cells = ablation.collect(tmp_path, bench)
    full = cells["full"]["ood"]
    assert full["pooled"]["successes"] == 24 and full["pooled"]["episodes"] == 30 and full["pooled"]["rate"] == 0.8
    assert full["pooled"]["ci95"] == [round(x, 3) for x in wilson(24, 30)]
    assert full["per_seed"]["1"]["successes"] == 6 and full["pooled"]["mean_max_reward"] == round((24 * 4 + 6) / 30, 2)
    assert cells["no_human"]["id"]["pooled"]["episodes"] == 10 and "id" not in cells["no_km"]
    rows = {r["claim"]: r for r in ablation.claims(cells)}
    assert list(rows) == ["human videos", "contrastive alignment", "Knowledge Matching", "NTP pretraining", "NTP vs RF"]
    d, lo, hi = newcombe(24, 30, 6, 30)
    assert rows["human videos"]["points"] == round(100 * d, 1) == 60.0
    assert rows["human videos"]["ci95_points"] == [round(100 * lo, 1), round(100 * hi, 1)] and lo > 0
    assert rows["human videos"]["met"] is True and rows["contrastive alignment"]["met"] is None
    assert rows["Knowledge Matching"]["points"] == round(100 * (24 - 20) / 30, 1) and rows["Knowledge Matching"]["met"]
    assert rows["NTP pretraining"]["variant"] == "id" and rows["NTP pretraining"]["points"] == round(100 * 11 / 30, 1)
    assert rows["NTP vs RF"]["arm"] == "ntp_only" and rows["NTP vs RF"]["points"] == round(100 * (1 - 26) / 30, 1)
    _fake_eval(bench.eval_dir(tmp_path, "no_km", 0, "ood"), 10, 10)  # KM below direct fine-tuning: not met
    _fake_eval(bench.eval_dir(tmp_path, "no_km", 1, "ood"), 10, 10)
    assert not {r["claim"]: r for r in ablation.claims(ablation.collect(tmp_path, bench))}["Knowledge Matching"]["met"]
    md = ablation.markdown({"task": bench.task, "novel": bench.novel, "demos": 50, "human_videos": 30,
                            "seeds": [0, 1, 2], "episodes": 10, "eval_seed": 2000, "cells": cells,
                            "claims": list(rows.values()), "cpu": None})
    assert "| Full | 26/30 (87 %) | 0.70-0.95 | s0 9/10, s1 9/10, s2 8/10 | 24/30 (80 %) |" in md
    assert "| human videos | Full - w/o human videos | OOD | +60.0 |" in md
    assert "| w/o KM (alpha 0) | - | - | - | 20/30 (67 %) |" in md


def _fake_run(stage_dir: pathlib.Path, seconds: float) -> None:
    ckpt = stage_dir / "checkpoints" / "step-000010"
    ckpt.mkdir(parents=True)
    (stage_dir / "checkpoints" / "latest").write_text("step-000010\n")
    (ckpt / "state.json").write_text(json.dumps({"history": [{"step": 5, "elapsed_s": 1.0},
                                                             {"step": 10, "elapsed_s": seconds}]}))


def test_cpu_hours_sum_every_training_loop_and_every_evaluation(tmp_path):
    bench = Ablation(arms=("full", "no_contrastive", "no_km", "ntp_only"), seeds=(0,))
    for sub, secs in (("act_vae", 100), ("vd_vae", 200), ("nocon/vd_vae", 300), ("full/s0/ntp", 400),
                      ("full/s0/rf/stage1", 50), ("full/s0/rf/stage2", 600), ("no_km/s0/rf/stage2", 700)):
        _fake_run(tmp_path / "runs" / sub, secs)
    seconds = StepSeconds(tmp_path / "step_seconds.json")
    seconds.add({"a": [StepResult("eval full s0 id", 36.0, "ok"), StepResult("eval full s0 ood", 0.0, "skipped")],
                 "b": [StepResult("record scripted demos", 72.0, "ok"), StepResult("train Act-VAE", 9.0, "ok")]})
    seconds.add([StepResult("eval full s0 ood", 18.0, "ok"), StepResult("eval no_km s0 id", 5.0, "FAILED (exit 1)")])
    assert StepSeconds(tmp_path / "step_seconds.json").seconds == {  # kept across runs; failed steps left out
        "eval full s0 id": 36.0, "eval full s0 ood": 18.0, "record scripted demos": 72.0, "train Act-VAE": 9.0}
    cpu = ablation.cpu_accounting(tmp_path, bench, seconds, measured_cpu_s=7200.0)
    assert cpu["training_loop_seconds"]["data"] == {"act_vae": 100.0, "vd_vae": 200.0, "vd_vae_nocon": 300.0}
    assert cpu["training_loop_seconds"]["no_km s0"] == {"rf_stage2": 700.0}
    assert cpu["training_s"] == 2350.0 and cpu["evaluation_s"] == 54.0 and cpu["data_steps_s"] == 72.0
    assert cpu["cpu_hours"] == round((2350 + 54 + 72) / 3600, 2) and cpu["measured_cpu_hours"] == 2.0


def test_bad_arguments_stop_the_bench_before_it_runs_anything(tmp_path, capsys):
    out = tmp_path / "out"
    for args, message in ((("--arms", "full", "no_dogs"), "invalid choice: 'no_dogs'"),
                          (("--seeds", "0", "1", "1"), "seeds must be one or more, none repeated"),
                          (("--episodes", "0"), "these must be >= 1: {'episodes': 0}"),
                          (("--human-fraction", "1"), "human_fraction must be in (0, 1)"),
                          (("--set-rf", "alpha"), "config overrides must be KEY=VALUE"),
                          (("--set-rf", "stage2.stepz=3"), "unknown key(s) stepz"),
                          (("--set-ntp", "loop.steps=0"), "steps must be positive"),
                          (("--eval-seed", "1"), "overlap the demonstration seeds"),
                          (("--configs", str(tmp_path)), "no ntp.yaml")):
        with pytest.raises(SystemExit) as exit_:
            ablation.parse_args([*args, "--out", str(out)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, args
    args, bench = ablation.parse_args(["--arms", "no_km", "--seeds", "3", "4", "--set-rf", "stage2.steps=90",
                                       "--set-rf", "alpha=0.1", "--set-ntp", "loop.steps=70", "--out", str(out)])
    assert bench == Ablation(arms=("no_km",), seeds=(3, 4), rf_set=("stage2.steps=90", "alpha=0.1"),
                             ntp_set=("loop.steps=70",)) and args.out == out and args.parallel
    assert not out.exists()
    # the bench wires it: a bad argument exits with 2 before anything runs
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ablation.py"), "--arms", "dogs", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'dogs'" in proc.stderr and not out.exists()
