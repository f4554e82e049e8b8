"""The CLAP pipeline on the simulation, as named, frozen recipes: record -> convert -> train -> label -> eval.

Each recipe is a frozen dataclass of what the experiment is (task, data sizes, stage configs,
evaluation) whose methods give the steps (``clap_train.train.runner.Step``); ``run_steps`` of that
runner runs them, each a ``clap`` command in a child process, skipped when its output exists (an
interrupted pipeline continues where it stopped). ``recipe(name, **changes)`` gives a registered
recipe with some fields changed:

    from clap_sim.pipeline import recipe
    from clap_train.train.runner import run_steps
    demo = recipe("demo", episodes=10)
    run_steps(demo.steps(out), stage_env())

Recipes: ``demo`` (``make demo``: scripts/demo.py), ``closed_loop`` (bench/closed_loop.py: the
learning curve and the ladder over DDS), ``human_transfer`` (bench/human_transfer.py: human videos
of an unseen variant), ``ablation`` (bench/ablation.py, clap_sim/ablation.py: every CLAP ingredient
ablated, several training seeds) and ``generalist`` (bench/generalist.py, clap_sim/generalist.py:
one policy for every task beside the single-task ones). A new recipe is a frozen dataclass with a
``name`` added to ``RECIPES``; the steps they share are in clap_sim/steps.py. Sim-side (it records
and evaluates in the simulation); the training steps are clap_train's stage runner.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import ClassVar

from clap_train.train.runner import Step

from .ablation import Ablation
from .generalist import Generalist
from .steps import (  # noqa: F401 (the recipes' building blocks, importable from here as before)
    CONFIGS, EVAL_EXECUTOR, EXECUTORS, HELDOUT_SEED, HUMAN_SEED, LOCKSTEP, ROOT, TEST_SEED, TRAIN_SEED, Layout,
    check_positive, data_steps, eval_step, policy_steps, stage_env,
)


@dataclasses.dataclass(frozen=True)
class Demo:
    """``make demo``: every stage at the demo's budget, then closed loop on held-out and training seeds."""

    name: ClassVar[str] = "demo"
    task: str = "transfer_cube"
    episodes: int = 50  # scripted robot demonstrations (seeds 0..N-1)
    human_episodes: int = 6
    eval_episodes: int = 10  # on held-out seeds
    # on training seeds (0: none; the 15-minute budget leaves no room for them by default)
    train_eval_episodes: int = 0
    configs: pathlib.Path = CONFIGS / "demo"

    def __post_init__(self) -> None:
        check_positive(episodes=self.episodes, human_episodes=self.human_episodes, eval_episodes=self.eval_episodes)
        if self.train_eval_episodes < 0:
            raise ValueError(f"train_eval_episodes must be >= 0, got {self.train_eval_episodes}")

    def training(self, out: pathlib.Path) -> list[Step]:
        """Record, convert and train every CLAP stage; the policy lands in ``out/runs/rf/policy``."""
        return (data_steps(out, self.task, self.episodes, self.human_episodes, self.configs)
                + policy_steps(out, Layout.of(out).runs, self.configs))

    def evaluations(self, out: pathlib.Path) -> dict[str, pathlib.Path]:
        """Where each evaluation goes: ``heldout`` and, when it runs, ``train`` (training seeds)."""
        evals = {"heldout": out / "eval_heldout_seeds"}
        if self.train_eval_episodes:
            evals["train"] = out / "eval_train_seeds"
        return evals

    def steps(self, out: pathlib.Path) -> list[Step]:
        policy = Layout.of(out).runs / "rf" / "policy"
        evals = self.evaluations(out)
        steps = self.training(out) + [
            eval_step("closed-loop eval, held-out seeds", evals["heldout"], self.task, policy, HELDOUT_SEED,
                      self.eval_episodes, *EVAL_EXECUTOR)]
        if "train" in evals:
            steps.append(eval_step("closed-loop eval, training seeds", evals["train"], self.task, policy, TRAIN_SEED,
                                   min(self.train_eval_episodes, self.episodes), "--no-video", *EVAL_EXECUTOR))
        return steps


@dataclasses.dataclass(frozen=True)
class ClosedLoop:
    """bench/closed_loop.py: the demo's stages at a larger budget, a learning curve, the ladder over DDS."""

    name: ClassVar[str] = "closed_loop"
    task: str = "transfer_cube"
    demos: int = 50
    human_videos: int = 20
    configs: pathlib.Path = CONFIGS / "closed_loop"
    episodes: int = 20  # per ladder cell
    curve_episodes: int = 20  # held-out episodes per learning-curve point
    modes: tuple[str, ...] = ("rf", "ntp")
    executors: tuple[str, ...] = EXECUTORS

    def __post_init__(self) -> None:
        check_positive(demos=self.demos, human_videos=self.human_videos, episodes=self.episodes,
                       curve_episodes=self.curve_episodes)
        unknown = sorted(set(self.executors) - set(EXECUTORS))
        if unknown:
            raise ValueError(f"unknown executors {unknown}; choose from {list(EXECUTORS)}")

    def training(self, out: pathlib.Path) -> list[Step]:
        return (data_steps(out, self.task, self.demos, self.human_videos, self.configs)
                + policy_steps(out, Layout.of(out).runs, self.configs))

    def curve_step(self, out: pathlib.Path, policy: pathlib.Path, point: str) -> Step:
        """Lock-step success of one intermediate (or the final) policy on held-out seeds."""
        return eval_step(f"learning curve {point}", out / "curve" / point, self.task, policy, HELDOUT_SEED,
                         self.curve_episodes, *LOCKSTEP)

    def ladder_steps(self, out: pathlib.Path, policy: pathlib.Path) -> dict[str, Step]:
        """``"mode executor part"`` -> its evaluation through the policy node over DDS."""
        steps = {}
        for mode in self.modes:
            for executor in self.executors:
                for part, seed in (("train", TRAIN_SEED), ("heldout", HELDOUT_SEED)):
                    n = min(self.episodes, self.demos) if part == "train" else self.episodes
                    # temporal ensembling with a new chunk whenever the last one is done (every tick
                    # when inference keeps up); the others at the node's replanning period
                    replan = ("--replan-every", "1") if executor == "temporal_ensemble" else ()
                    steps[f"{mode} {executor} {part}"] = eval_step(
                        f"ladder {mode} {executor} {part}", out / "ladder" / f"{mode}_{executor}_{part}", self.task,
                        policy, seed, n, "--mode", mode, "--executor", executor, *replan, "--no-video")
        return steps


@dataclasses.dataclass(frozen=True)
class HumanTransfer:
    """bench/human_transfer.py: whether human videos of a variant the robot never saw raise success on it."""

    name: ClassVar[str] = "human_transfer"
    ARMS: ClassVar[tuple[str, ...]] = ("robot_only", "with_human", "with_true_tokens")
    task: str = "coloured_cubes"
    novel: str = "coloured_cubes_novel"
    demos: int = 50
    human_videos: int = 30
    human_fraction: float = 0.25  # share of human samples in with_human's NTP
    configs: pathlib.Path = CONFIGS / "closed_loop"
    rf_steps: int | None = None  # CLAP-RF stage-2 steps (None: the config's)
    episodes: int = 20  # held-out episodes per cell
    seed: int = 0  # training seed of the arms (another seed trains into <arm>_s<seed>: a replicate)
    arms: tuple[str, ...] = ARMS

    def __post_init__(self) -> None:
        check_positive(demos=self.demos, human_videos=self.human_videos, episodes=self.episodes)
        if not 0.0 <= self.human_fraction < 1.0:
            raise ValueError(f"human_fraction must be in [0, 1), got {self.human_fraction}")
        unknown = sorted(set(self.arms) - set(self.ARMS))
        if unknown:
            raise ValueError(f"unknown arms {unknown}; choose from {list(self.ARMS)}")

    def data(self, out: pathlib.Path) -> list[Step]:
        return data_steps(out, self.task, self.demos, self.human_videos, self.configs, human_task=self.novel)

    def run_names(self) -> dict[str, str]:
        """Arm -> the folder of its runs (``<arm>_s<seed>`` for a replicate)."""
        return {a: a if not self.seed else f"{a}_s{self.seed}" for a in self.ARMS if a in self.arms}

    def training(self, out: pathlib.Path, true_tokens: pathlib.Path | None) -> dict[str, list[Step]]:
        """Run name -> its NTP and RF steps; ``true_tokens``: the human dataset labelled with true tokens."""
        seed = (f"loop.seed={self.seed}",) if self.seed else ()
        rf_set = ((f"stage2.steps={self.rf_steps}",) if self.rf_steps else ()) + (
            (f"stage1.seed={self.seed}", f"stage2.seed={self.seed}") if self.seed else ())
        with_human = (f"human_fraction={self.human_fraction}", *seed)
        setups = {"robot_only": (("human_fraction=0", *seed), None), "with_human": (with_human, None),
                  "with_true_tokens": (with_human, true_tokens)}
        return {name: policy_steps(out, out / "runs" / name, self.configs, ntp_set=setups[arm][0], rf_set=rf_set,
                                   human_ds=setups[arm][1]) for arm, name in self.run_names().items()}

    def evaluations(self, out: pathlib.Path) -> dict[str, list[Step]]:
        """Run name -> its lock-step evaluations on held-out seeds of the novel variant and of the task."""
        return {name: [eval_step(f"{name} on {task}", out / "eval" / name / task, task,
                                 out / "runs" / name / "rf" / "policy", HELDOUT_SEED, self.episodes,
                                 *LOCKSTEP) for task in (self.novel, self.task)]
                for name in self.run_names().values()}


RECIPES: dict[str, type] = {r.name: r for r in (Demo, ClosedLoop, HumanTransfer, Ablation, Generalist)}


def recipe(name: str, **changes):
    """The recipe registered as ``name``, with ``changes`` to its fields (None leaves a field as it is)."""
    if name not in RECIPES:
        raise KeyError(f"no recipe {name!r}; recipes: {', '.join(sorted(RECIPES))}")
    cls = RECIPES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise TypeError(f"recipe {name!r} has no field(s) {unknown}; fields: {', '.join(sorted(fields))}")
    return cls(**{k: v for k, v in changes.items() if v is not None})
