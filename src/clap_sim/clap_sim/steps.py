"""The building blocks of the pipeline recipes (clap_sim.pipeline): where a run's files lie, its steps, running them.

A recipe is a list (or several lists) of ``clap_train.train.runner.Step``: a ``clap`` command and
the file whose existence says it is done. This module makes the steps every recipe shares (record
and convert, the data stages, CLAP-NTP and CLAP-RF, an evaluation), runs several plans side by
side (``run_side_by_side``: two one-thread jobs at a time) and reads back what a finished run says
about itself (``training_seconds``, ``rf_history``, ``StepSeconds``). ``stage_config`` loads a
stage's config with overrides, as ``clap train`` would (a bad key fails before anything runs).
ROS-free.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from clap_train.io import atomic_write_text
from clap_train.train.runner import Step, StepResult, run_steps, stage_step

ROOT = pathlib.Path(__file__).resolve().parents[3]  # the checkout (config/ lives there)
CONFIGS = ROOT / "config" / "train"
TRAIN_SEED, HELDOUT_SEED = 0, 1000  # recordings use seeds 0..N-1; held-out evaluation starts at 1000
TEST_SEED = 2000  # the test block: seeds no recipe or budget was chosen on (those are chosen on 1000..)
HUMAN_SEED = 500  # first seed of the human-look videos
# ACT-style temporal ensembling with a new chunk every tick: the executor under which the small CPU
# policies succeed (bench/RESULTS.md, "A policy that performs")
EVAL_EXECUTOR = ("--executor", "temporal_ensemble", "--replan-every", "1")
LOCKSTEP = ("--lockstep", "--no-video", *EVAL_EXECUTOR)  # in-process evaluation, no DDS
EXECUTORS = ("open_loop", "temporal_ensemble", "rtc")


def stage_env() -> dict[str, str]:
    """The environment of the steps: unbuffered output, EGL rendering, DDS on this machine."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env


class Layout(NamedTuple):
    """Where a pipeline's data and runs lie under its output folder (``Layout.of(out)``)."""

    bags: pathlib.Path
    videos: pathlib.Path
    robot_ds: pathlib.Path
    human_ds: pathlib.Path
    runs: pathlib.Path
    act_vae: pathlib.Path
    vd_vae: pathlib.Path

    @classmethod
    def of(cls, out: pathlib.Path) -> Layout:
        runs = out / "runs"
        return cls(out / "bags", out / "human_videos", out / "dataset", out / "human_dataset", runs,
                   runs / "act_vae" / "act_vae", runs / "vd_vae" / "vd_vae")


def check_positive(**values: int) -> None:
    """Raise ValueError naming every value below 1."""
    bad = {k: v for k, v in values.items() if v < 1}
    if bad:
        raise ValueError(f"these must be >= 1: {bad}")


def check_overrides(**overrides: Sequence[str]) -> None:
    """Raise ValueError naming every override that is not ``KEY=VALUE``."""
    bad = {k: [s for s in v if "=" not in s or s.startswith("=")] for k, v in overrides.items()}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        raise ValueError(f"config overrides must be KEY=VALUE, got {bad}")


def check_heldout(eval_seed: int, episodes: int, demos: int, human_videos: int) -> None:
    """Raise ValueError when the evaluation seeds overlap the demonstrations' or the human-look videos' seeds."""
    held = set(range(eval_seed, eval_seed + episodes))
    for what, first, n in (("demonstration", TRAIN_SEED, demos), ("human-video", HUMAN_SEED, human_videos)):
        if held & set(range(first, first + n)):
            raise ValueError(f"evaluation seeds {eval_seed}..{eval_seed + episodes - 1} overlap the {what} seeds "
                             f"{first}..{first + n - 1}: choose another eval_seed")


def record_steps(p: Layout, task: str, demos: int, human_videos: int, human_task: str | None = None,
                 tag: str = "") -> list[Step]:
    """Demonstrations of ``task`` and human-look videos of ``human_task`` (default: ``task``), converted, into ``p``.

    ``tag`` is added to the step names (several tasks in one pipeline).
    """
    t = f" ({tag})" if tag else ""
    return [
        Step(f"record scripted demos{t}", ("sim", "record", "--task", task, "--episodes", str(demos), "--out",
                                           str(p.bags), "--seed", str(TRAIN_SEED), "--workers", "2"),
             p.bags / ".done", touch=True),
        Step(f"render human videos{t}", ("sim", "human-videos", "--task", human_task or task, "--episodes",
                                         str(human_videos), "--out", str(p.videos), "--seed", str(HUMAN_SEED)),
             p.videos / ".done", touch=True),
        Step(f"convert bags{t}", ("convert", str(p.bags), "--out", str(p.robot_ds), "--workers", "2"),
             p.robot_ds / ".done", touch=True),
        Step(f"convert human videos{t}", ("convert-videos", str(p.videos), "--out", str(p.human_ds)),
             p.human_ds / ".done", touch=True),
    ]


def label_step(vd_vae: pathlib.Path, human_ds: pathlib.Path, name: str = "label human videos") -> Step:
    """``clap label-videos``: the VD-VAE's pseudo tokens into ``human_ds`` (its ``meta/pseudo_tokens.parquet``)."""
    return Step(name, ("label-videos", "--vd-vae", str(vd_vae), "--dataset", str(human_ds)),
                human_ds / ".labelled", touch=True)


def data_steps(out: pathlib.Path, task: str, demos: int, human_videos: int, configs: pathlib.Path,
               human_task: str | None = None) -> list[Step]:
    """The data steps: demonstrations and human-look videos, converted; the Act-VAE and the VD-VAE; pseudo labels.

    Demonstrations are of ``task``, the human-look videos of ``human_task`` (default: the same task).
    """
    p = Layout.of(out)
    return record_steps(p, task, demos, human_videos, human_task) + [
        stage_step("train Act-VAE", "act-vae", configs / "act_vae.yaml", p.runs / "act_vae",
                   p.act_vae / "config.json", datasets=[p.robot_ds]),
        stage_step("train VD-VAE", "vd-vae", configs / "vd_vae.yaml", p.runs / "vd_vae", p.vd_vae / "config.json",
                   datasets=[p.robot_ds], human_datasets=[p.human_ds], sets=[f"act_vae={p.act_vae}"]),
        label_step(p.vd_vae, p.human_ds),
    ]


def ntp_step(runs: pathlib.Path, configs: pathlib.Path, act_vae: pathlib.Path, datasets: Sequence[pathlib.Path],
             human_datasets: Sequence[pathlib.Path], sets: Sequence[str] = (), name: str = "train CLAP-NTP") -> Step:
    """CLAP-NTP into ``runs/ntp`` (its policy: ``runs/ntp/policy``)."""
    return stage_step(name, "ntp", configs / "ntp.yaml", runs / "ntp", runs / "ntp" / "policy",
                      datasets=datasets, human_datasets=human_datasets, sets=[f"act_vae={act_vae}", *sets])


def rf_step(runs: pathlib.Path, configs: pathlib.Path, datasets: Sequence[pathlib.Path],
            human_datasets: Sequence[pathlib.Path], sets: Sequence[str], name: str = "train CLAP-RF + KM") -> Step:
    """CLAP-RF + KM into ``runs/rf`` (its policy: ``runs/rf/policy``); ``sets`` name ``init`` or ``act_vae``."""
    return stage_step(name, "rf", configs / "rf.yaml", runs / "rf", runs / "rf" / "policy",
                      datasets=datasets, human_datasets=human_datasets, sets=sets)


def policy_steps(out: pathlib.Path, runs: pathlib.Path, configs: pathlib.Path, ntp_set: tuple[str, ...] = (),
                 rf_set: tuple[str, ...] = (), human_ds: pathlib.Path | None = None) -> list[Step]:
    """CLAP-NTP, then CLAP-RF + KM from it, on ``out``'s datasets and Act-VAE, into ``runs``.

    ``ntp_set`` / ``rf_set``: extra config overrides of each stage; ``human_ds``: another labelled
    human-video dataset than ``out``'s.
    """
    p = Layout.of(out)
    robot, human = [p.robot_ds], [human_ds or p.human_ds]
    return [ntp_step(runs, configs, p.act_vae, robot, human, ntp_set),
            rf_step(runs, configs, robot, human, [f"init={runs / 'ntp' / 'policy'}", *rf_set])]


def eval_step(name: str, out: pathlib.Path, task: str, policy: pathlib.Path, seed: int, episodes: int,
              *extra: str) -> Step:
    """Closed loop through the policy node over DDS (``clap sim eval``; ``--lockstep`` among ``extra``: in-process)."""
    return Step(name, ("sim", "eval", "--task", task, "--episodes", str(episodes), "--seed", str(seed),
                       "--policy", str(policy), "--out", str(out), *extra), out / "eval.json")


def stage_config(stage: str, config: pathlib.Path, overrides: Sequence[str] = ()) -> Any:
    """``stage``'s config from ``config`` with ``overrides``, as ``clap train`` loads it (ConfigError, ValueError)."""
    import importlib

    from clap_train.config import load_config
    from clap_train.train.cli import ALIASES, STAGES

    spec = importlib.import_module(STAGES[ALIASES.get(stage, stage)][0]).SPEC
    return load_config(spec.config, config, list(overrides))


def stage_configs(configs: pathlib.Path, **overrides: Sequence[str]) -> dict[str, Any]:
    """Stage -> its config in the folder ``configs`` with its overrides (``ntp=[...]``, ``rf=[...]``).

    A recipe's runner calls it first, so that a missing file or a bad key fails before any step runs.
    """
    out = {}
    for stage, sets in overrides.items():
        path = configs / f"{stage}.yaml"  # act_vae.yaml, vd_vae.yaml, ntp.yaml, rf.yaml
        if not path.is_file():
            raise ValueError(f"{configs}: no {path.name}")
        out[stage] = stage_config(stage.replace("_", "-"), path, sets)
    return out


# -- running plans and reading back what they did ----------------------------------------------------------


def run_side_by_side(plans: Mapping[str, Sequence[Step]], env: dict[str, str],
                     parallel: bool = True) -> dict[str, list[StepResult]]:
    """Run the plans (lists of steps) two at a time, one CPU thread each, or one after another."""
    if not parallel:
        return {name: run_steps(plan, env) for name, plan in plans.items()}
    env1 = dict(env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_steps, plan, env1) for name, plan in plans.items()}
        return {name: f.result() for name, f in futures.items()}


def write_result(out: pathlib.Path, result: dict, markdown: str, copy_to: pathlib.Path | None = None) -> None:
    """A bench's figures: ``out/result.json``, ``out/result.md`` and the JSON at ``copy_to``; prints the markdown."""
    text = json.dumps(result, indent=1) + "\n"
    atomic_write_text(out / "result.json", text)
    atomic_write_text(out / "result.md", markdown)
    if copy_to is not None:
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(copy_to, text)
    print(markdown)


class StepSeconds:
    """Wall seconds of every step that ran, in a JSON file kept across resumed runs (a skipped step keeps its own)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def add(self, results: Sequence[StepResult] | Mapping[str, Sequence[StepResult]]) -> None:
        """Record the steps of ``results`` (``run_steps``' or ``run_side_by_side``'s) that ran to the end."""
        lists = results.values() if isinstance(results, Mapping) else [results]
        for r in (r for rs in lists for r in rs):
            if r.status == "ok":
                self.seconds[r.name] = round(r.seconds, 1)
        atomic_write_text(self.path, json.dumps(self.seconds, indent=1, sort_keys=True) + "\n")

    def total(self, names) -> float:
        """The seconds of the steps named (those never recorded count 0)."""
        return sum(self.seconds.get(n, 0.0) for n in names)


def _latest_state(stage_dir: pathlib.Path) -> dict:
    name = (stage_dir / "checkpoints" / "latest").read_text().strip()
    return json.loads((stage_dir / "checkpoints" / name / "state.json").read_text())


def training_seconds(run: pathlib.Path) -> dict[str, float]:
    """Wall seconds each training stage under ``run`` looped (from its last checkpoint's history)."""
    out = {}
    for name, sub in (("act_vae", "act_vae"), ("vd_vae", "vd_vae"), ("ntp", "ntp"), ("rf_stage1", "rf/stage1"),
                      ("rf_stage2", "rf/stage2")):
        try:
            history = _latest_state(run / sub).get("history", [])
            out[name] = float(history[-1].get("elapsed_s", 0.0)) if history else 0.0
        except (OSError, ValueError, IndexError):
            continue
    return out


def rf_history(stage_dir: pathlib.Path) -> list[dict]:
    """The loop history (step, elapsed_s, ...) of an RF stage's latest checkpoint; [] when there is none."""
    try:
        return _latest_state(stage_dir).get("history", [])
    except (OSError, ValueError):
        return []


def curve_point_steps(points: list[dict], rf_run: pathlib.Path) -> None:
    """Give each learning-curve point (``point``: ``step-N`` or ``final``) its RF step and seconds, in place.

    The seconds come from the RF stage-2 history; where the history no longer holds that step (it
    keeps the last steps only) they are estimated from the last entry (``rf_seconds_estimated``).
    """
    history = rf_history(rf_run / "stage2")
    last = history[-1] if history else None
    for point in points:
        step = int(point["point"].split("-")[1]) if point["point"].startswith("step-") else (
            last["step"] if last else None)
        point["rf_step"] = step
        point["rf_seconds"] = next((round(h["elapsed_s"], 1) for h in history if h["step"] == step), None)
        if point["rf_seconds"] is None and last and step:
            point["rf_seconds"] = round(last["elapsed_s"] * step / last["step"], 1)
            point["rf_seconds_estimated"] = True


def curve_policies(rf_run: pathlib.Path) -> dict[str, pathlib.Path]:
    """Point name -> policy: every intermediate export of an RF run (``step-N``, in step order) and ``final``."""
    exports = sorted((rf_run / "exports").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return {**{p.name: p for p in exports}, "final": rf_run / "policy"}
