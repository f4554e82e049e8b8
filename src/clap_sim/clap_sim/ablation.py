"""The ``ablation`` recipe (bench/ablation.py): every CLAP ingredient ablated on the sim in closed loop, replicated.

The analog of the paper's Tables VI and VII (issue 21, item 3). The data are made once and shared
by every arm (``Ablation.data``): robot demonstrations of ``coloured_cubes`` (seeds 0..N-1),
human-look videos of ``coloured_cubes_novel`` (colours and words no demonstration shows),
converted; the Act-VAE; the VD-VAE and its pseudo labels; and, for the w/o-contrastive arm, a
second VD-VAE with ``model.lambda_con=0`` whose pseudo labels go into a second conversion of the
same videos (``human_dataset_nocon``: the label step writes its sidecar into the dataset folder;
the converter is deterministic, so the copy's files are byte-identical to the first's).

The arms, each trained once per training seed (``loop.seed`` of CLAP-NTP, ``stage1.seed`` and
``stage2.seed`` of CLAP-RF), under ``runs/<arm>/s<seed>``:

| arm | recipe |
| --- | --- |
| ``full`` | CLAP-NTP on robot + pseudo-labelled human videos (``human_fraction``), then CLAP-RF + KM |
| ``no_human`` | ``full`` with ``human_fraction=0`` (in CLAP-NTP, and in CLAP-RF) |
| ``no_contrastive`` | ``full``, its human videos labelled by the lambda_con = 0 VD-VAE |
| ``no_ntp`` | CLAP-RF + KM from the random backbone (no ``init``; ``act_vae`` given; stage 1 as configured) |
| ``no_km`` | CLAP-RF with ``alpha=0`` from ``full``'s CLAP-NTP of the same seed (reused, not retrained) |
| ``ntp_only`` | ``full``'s policy evaluated with ``--mode ntp``: no training of its own |

Every policy is evaluated in lock-step (temporal ensembling, a new chunk every tick) on
``episodes`` seeds from ``eval_seed`` of ``coloured_cubes`` (``id``: in distribution) and of
``coloured_cubes_novel`` (``ood``), under ``eval/<arm>/s<seed>/<task>``. ``collect`` pools each
cell over the training seeds (Wilson 95 % interval) and ``claims`` gives each claim's pooled
difference with a Newcombe 95 % interval, beside the issue's goal. Episodes of the seeds are
pooled as independent trials: the interval leaves the seed-to-seed spread out, which the per-seed
figures show.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import ClassVar, NamedTuple

from clap_train.train.runner import Step, stage_step

from .eval_report import newcombe, success_summary, wilson
from .steps import (
    CONFIGS, LOCKSTEP, ROOT, TEST_SEED, Layout, StepSeconds, check_heldout, check_overrides, check_positive,
    data_steps, eval_step, label_step, ntp_step, rf_step, stage_configs, training_seconds,
)

ARMS = ("full", "no_human", "no_contrastive", "no_ntp", "no_km", "ntp_only")
TITLES = {"full": "Full", "no_human": "w/o human videos", "no_contrastive": "w/o contrastive",
          "no_ntp": "w/o NTP pretraining", "no_km": "w/o KM (alpha 0)", "ntp_only": "NTP only"}
VARIANTS = ("id", "ood")


class Claim(NamedTuple):
    """One claim: ``arm`` - ``baseline`` on ``variant``, with the issue's goal (``met(d, lo, hi)``), if any."""

    name: str
    arm: str
    baseline: str
    variant: str
    goal: str = ""
    met: Callable[[float, float, float], bool] | None = None


CLAIMS = (
    Claim("human videos", "full", "no_human", "ood", ">= +20 points, lower bound > 0",
          lambda d, lo, hi: d >= 0.2 and lo > 0),
    Claim("contrastive alignment", "full", "no_contrastive", "ood"),
    Claim("Knowledge Matching", "full", "no_km", "ood", ">= direct fine-tuning", lambda d, lo, hi: d >= 0),
    Claim("NTP pretraining", "full", "no_ntp", "id", "above random init", lambda d, lo, hi: d > 0),
    Claim("NTP vs RF", "ntp_only", "full", "id"),
)


@dataclasses.dataclass(frozen=True)
class Ablation:
    """bench/ablation.py: the arms of the module docstring on shared data, ``seeds`` training seeds each."""

    name: ClassVar[str] = "ablation"
    ARMS: ClassVar[tuple[str, ...]] = ARMS
    task: str = "coloured_cubes"
    novel: str = "coloured_cubes_novel"
    demos: int = 50
    human_videos: int = 30
    human_fraction: float = 0.25  # share of human samples in CLAP-NTP (all arms but no_human)
    configs: pathlib.Path = CONFIGS / "closed_loop"
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds
    episodes: int = 20  # evaluation episodes per policy and variant
    eval_seed: int = TEST_SEED  # first evaluation seed (recipes are chosen on 1000..; 2000.. is the test block)
    ntp_set: tuple[str, ...] = ()  # extra CLAP-NTP overrides of every arm (the budget)
    rf_set: tuple[str, ...] = ()  # extra CLAP-RF overrides of every arm
    arms: tuple[str, ...] = ARMS
    # every arm's backbone starts grounded (``clap sim ground`` with the configs' CLAP-NTP config, once, shared):
    # the sim's stand-in for a pretrained VLM; no_ntp then runs CLAP-RF + KM from it instead of random weights
    grounded: bool = False

    def __post_init__(self) -> None:
        check_positive(demos=self.demos, human_videos=self.human_videos, episodes=self.episodes)
        if not 0.0 < self.human_fraction < 1.0:
            raise ValueError(f"human_fraction must be in (0, 1) (the Full arm trains on human videos), "
                             f"got {self.human_fraction}")
        for what, items in (("arms", self.arms), ("seeds", self.seeds)):
            if not items or len(set(items)) != len(items):
                raise ValueError(f"{what} must be one or more, none repeated; got {list(items)}")
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown arms {unknown}; choose from {list(ARMS)}")
        if min(self.seeds) < 0:
            raise ValueError(f"training seeds must be >= 0, got {list(self.seeds)}")
        check_overrides(ntp_set=self.ntp_set, rf_set=self.rf_set)
        check_heldout(self.eval_seed, self.episodes, self.demos, self.human_videos)

    # -- where things lie ------------------------------------------------------------------------------------

    @property
    def variants(self) -> dict[str, str]:
        """Variant -> task: ``id`` (the demonstrated task) and ``ood`` (the novel one the human videos show)."""
        return {"id": self.task, "ood": self.novel}

    @staticmethod
    def run_dir(out: pathlib.Path, arm: str, seed: int) -> pathlib.Path:
        return out / "runs" / arm / f"s{seed}"

    @staticmethod
    def grounded_dir(out: pathlib.Path) -> pathlib.Path:
        """The grounded backbone's folder (its ``vlm/``: a stage's ``init``)."""
        return out / "runs" / "grounded"

    @staticmethod
    def nocon(out: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
        """The lambda_con = 0 VD-VAE's run folder and its labelled copy of the human videos."""
        return out / "runs" / "nocon", out / "human_dataset_nocon"

    def policy(self, out: pathlib.Path, arm: str, seed: int) -> pathlib.Path:
        """The policy an arm evaluates (``ntp_only``: ``full``'s)."""
        return self.run_dir(out, "full" if arm == "ntp_only" else arm, seed) / "rf" / "policy"

    def eval_dir(self, out: pathlib.Path, arm: str, seed: int, variant: str) -> pathlib.Path:
        return out / "eval" / arm / f"s{seed}" / self.variants[variant]

    # -- the steps ---------------------------------------------------------------------------------------------

    def data(self, out: pathlib.Path) -> list[Step]:
        """The shared data: datasets, Act-VAE, VD-VAE and labels, and (for no_contrastive) the lambda_con = 0 pair."""
        steps = data_steps(out, self.task, self.demos, self.human_videos, self.configs, human_task=self.novel)
        if self.grounded:
            where = self.grounded_dir(out)
            steps.append(Step("ground the backbone", ("sim", "ground", "--config", str(self.configs / "ntp.yaml"),
                                                      "--task", self.task, "--out", str(where), "--no-progress"),
                              where / "vlm" / "config.json"))
        if "no_contrastive" in self.arms:
            p = Layout.of(out)
            runs, human = self.nocon(out)
            vd_vae = runs / "vd_vae" / "vd_vae"
            steps += [
                Step("convert human videos again (for the lambda_con=0 labels)",
                     ("convert-videos", str(p.videos), "--out", str(human)), human / ".done", touch=True),
                stage_step("train VD-VAE, lambda_con=0", "vd-vae", self.configs / "vd_vae.yaml", runs / "vd_vae",
                           vd_vae / "config.json", datasets=[p.robot_ds], human_datasets=[human],
                           sets=[f"act_vae={p.act_vae}", "model.lambda_con=0"]),
                label_step(vd_vae, human, "label human videos (lambda_con=0 VD-VAE)")]
        return steps

    def trained_ntp(self) -> list[str]:
        """Arms whose own CLAP-NTP is trained (no_km and ntp_only reuse full's)."""
        need = {"full"} if {"full", "no_km", "ntp_only"} & set(self.arms) else set()
        need |= {"no_human", "no_contrastive"} & set(self.arms)
        return [a for a in ARMS if a in need]

    def trained_rf(self) -> list[str]:
        """Arms whose own CLAP-RF is trained (ntp_only evaluates full's)."""
        need = {"full"} if {"full", "ntp_only"} & set(self.arms) else set()
        return [a for a in ARMS if a in need | ({"no_human", "no_contrastive", "no_ntp", "no_km"} & set(self.arms))]

    def human_ds(self, out: pathlib.Path, arm: str) -> pathlib.Path:
        return self.nocon(out)[1] if arm == "no_contrastive" else Layout.of(out).human_ds

    def ntp_sets(self, out: pathlib.Path, arm: str, seed: int) -> tuple[str, ...]:
        """CLAP-NTP overrides of an arm: its start, the human share, ``ntp_set``, the arm's own, the training seed."""
        start = (f"init={self.grounded_dir(out)}",) if self.grounded else ()
        own = ("human_fraction=0",) if arm == "no_human" else ()
        return (*start, f"human_fraction={self.human_fraction}", *self.ntp_set, *own, f"loop.seed={seed}")

    def rf_sets(self, out: pathlib.Path, arm: str, seed: int) -> tuple[str, ...]:
        """CLAP-RF overrides of an arm: where it starts, ``rf_set``, the arm's own, the training seeds."""
        if arm == "no_ntp" and self.grounded:  # the grounded backbone, as the paper's starts from Qwen3-VL
            start = (f"act_vae={Layout.of(out).act_vae}", f"init={self.grounded_dir(out)}")
        elif arm == "no_ntp":  # the random backbone: built from the RF config's vlm, with ntp_set's vlm changes
            start = (f"act_vae={Layout.of(out).act_vae}", *(s for s in self.ntp_set if s.startswith("vlm.")))
        else:
            start = (f"init={self.run_dir(out, 'full' if arm == 'no_km' else arm, seed) / 'ntp' / 'policy'}",)
        own = {"no_km": ("alpha=0",), "no_human": ("human_fraction=0",)}.get(arm, ())
        return (*start, *self.rf_set, *own, f"stage1.seed={seed}", f"stage2.seed={seed}")

    def training(self, out: pathlib.Path) -> list[dict[str, list[Step]]]:
        """Two phases of one-step plans: every CLAP-NTP, then every CLAP-RF (no_km needs full's CLAP-NTP)."""
        p = Layout.of(out)
        ntp, rf = {}, {}
        for seed in self.seeds:
            for arm in self.trained_ntp():
                key = f"{arm} s{seed} ntp"
                ntp[key] = [ntp_step(self.run_dir(out, arm, seed), self.configs, p.act_vae, [p.robot_ds],
                                     [self.human_ds(out, arm)], self.ntp_sets(out, arm, seed), name=key)]
            for arm in self.trained_rf():
                key = f"{arm} s{seed} rf"
                rf[key] = [rf_step(self.run_dir(out, arm, seed), self.configs, [p.robot_ds], [self.human_ds(out, arm)],
                                   self.rf_sets(out, arm, seed), name=key)]
        return [ntp, rf]

    def evaluations(self, out: pathlib.Path) -> dict[str, list[Step]]:
        """``"<arm> s<seed> <variant>"`` -> its lock-step evaluation (``ntp_only``: ``--mode ntp``)."""
        plans = {}
        for seed in self.seeds:
            for arm in (a for a in ARMS if a in self.arms):
                for variant, task in self.variants.items():
                    key = f"{arm} s{seed} {variant}"
                    mode = ("--mode", "ntp") if arm == "ntp_only" else ()
                    plans[key] = [eval_step(f"eval {key}", self.eval_dir(out, arm, seed, variant), task,
                                            self.policy(out, arm, seed), self.eval_seed, self.episodes,
                                            *LOCKSTEP, *mode)]
        return plans


# -- the report ------------------------------------------------------------------------------------------------


def pooled(cells: list[dict]) -> dict:
    """Success summaries (``success_summary``) of several training seeds as one: summed counts, Wilson interval."""
    s, n = sum(c["successes"] for c in cells), sum(c["episodes"] for c in cells)
    lo, hi = wilson(s, n)
    return {"successes": s, "episodes": n, "rate": s / n if n else 0.0, "ci95": [round(lo, 3), round(hi, 3)],
            "mean_max_reward": round(sum(c["mean_max_reward"] * c["episodes"] for c in cells) / n, 2) if n else 0.0}


def collect(out: pathlib.Path, bench: Ablation) -> dict:
    """Arm -> variant -> ``pooled`` and ``per_seed`` (seed -> summary), from the eval.json files that exist."""
    cells: dict = {}
    for arm in (a for a in ARMS if a in bench.arms):
        for variant in VARIANTS:
            per_seed = {}
            for seed in bench.seeds:
                path = bench.eval_dir(out, arm, seed, variant) / "eval.json"
                if path.is_file():
                    per_seed[str(seed)] = success_summary(json.loads(path.read_text()))
            if per_seed:
                cells.setdefault(arm, {})[variant] = {"pooled": pooled(list(per_seed.values())), "per_seed": per_seed}
    return cells


def claims(cells: dict) -> list[dict]:
    """Each claim whose two arms were evaluated: the pooled difference in points, its Newcombe 95 % CI, the goal."""
    rows = []
    for c in CLAIMS:
        a, b = (cells.get(arm, {}).get(c.variant, {}).get("pooled") for arm in (c.arm, c.baseline))
        if not a or not b or not a["episodes"] or not b["episodes"]:
            continue
        d, lo, hi = newcombe(a["successes"], a["episodes"], b["successes"], b["episodes"])
        rows.append({"claim": c.name, "arm": c.arm, "baseline": c.baseline, "variant": c.variant,
                     "points": round(100 * d, 1), "ci95_points": [round(100 * lo, 1), round(100 * hi, 1)],
                     "goal": c.goal, "met": None if c.met is None else bool(c.met(d, lo, hi))})
    return rows


def cpu_accounting(out: pathlib.Path, bench: Ablation, seconds: StepSeconds, measured_cpu_s: float | None) -> dict:
    """Training-loop seconds of every stage (checkpoint histories) + evaluation and data-step wall seconds.

    Every job of the arms runs on one thread, so its wall seconds are its CPU seconds;
    ``measured_cpu_s`` is the CPU time the child processes of these runs reported (user + system).
    """
    training = {"data": {k: v for k, v in training_seconds(out / "runs").items()}}
    nocon = training_seconds(bench.nocon(out)[0])
    if nocon:
        training["data"]["vd_vae_nocon"] = nocon["vd_vae"]
    for arm in dict.fromkeys(bench.trained_ntp() + bench.trained_rf()):
        for seed in bench.seeds:
            secs = training_seconds(bench.run_dir(out, arm, seed))
            if secs:
                training[f"{arm} s{seed}"] = secs
    train_s = sum(v for stages in training.values() for v in stages.values())
    eval_s = seconds.total(s.name for plan in bench.evaluations(out).values() for s in plan)
    data_s = seconds.total(s.name for s in bench.data(out) if s.argv[0] != "train")
    total = train_s + eval_s + data_s
    return {"training_loop_seconds": training, "training_s": round(train_s, 1), "evaluation_s": round(eval_s, 1),
            "data_steps_s": round(data_s, 1), "cpu_hours": round(total / 3600, 2),
            "measured_cpu_hours": None if measured_cpu_s is None else round(measured_cpu_s / 3600, 2)}


def _cell(c: dict | None) -> tuple[str, str, str]:
    if not c:
        return "-", "-", "-"
    p = c["pooled"]
    seeds = ", ".join(f"s{s} {v['successes']}/{v['episodes']}" for s, v in c["per_seed"].items())
    rate = f"{p['successes']}/{p['episodes']} ({100 * p['rate']:.0f} %)"
    return rate, f"{p['ci95'][0]:.2f}-{p['ci95'][1]:.2f}", seeds


def markdown(result: dict) -> str:
    """The table (arms x variants, pooled and per seed), the claims beside their goals, the CPU hours."""
    r = result
    lines = [f"# Ablation on the sim: {r['demos']} demonstrations of {r['task']}, {r['human_videos']} human-look "
             f"videos of {r['novel']}; training seeds {r['seeds']}; {r['episodes']} episodes per policy and "
             f"variant from seed {r['eval_seed']} (lock-step, temporal ensembling)", "",
             f"| arm | in distribution ({r['task']}) | 95 % CI | per seed | out of distribution ({r['novel']}) "
             "| 95 % CI | per seed |", "| --- | ---: | --- | --- | ---: | --- | --- |"]
    for arm, cell in r["cells"].items():
        lines.append(f"| {TITLES[arm]} | " + " | ".join(" | ".join(_cell(cell.get(v))) for v in VARIANTS) + " |")
    lines += ["", "| claim | difference | on | points | 95 % CI (Newcombe) | goal | met |",
              "| --- | --- | --- | ---: | --- | --- | --- |"]
    for c in r["claims"]:
        met = "-" if c["met"] is None else ("yes" if c["met"] else "no")
        lines.append(f"| {c['claim']} | {TITLES[c['arm']]} - {TITLES[c['baseline']]} | {c['variant'].upper()} | "
                     f"{c['points']:+.1f} | {c['ci95_points'][0]:+.1f} to {c['ci95_points'][1]:+.1f} | "
                     f"{c['goal'] or '-'} | {met} |")
    cpu = r.get("cpu")
    if cpu:
        measured = f"; CPU time measured: {cpu['measured_cpu_hours']} h" if cpu.get("measured_cpu_hours") else ""
        lines += ["", f"CPU: {cpu['cpu_hours']} h (training loops {cpu['training_s'] / 3600:.2f} h, evaluation "
                      f"{cpu['evaluation_s'] / 3600:.2f} h, recording/conversion/labels "
                      f"{cpu['data_steps_s'] / 3600:.2f} h){measured}."]
    return "\n".join(lines) + "\n"


# -- the command line (bench/ablation.py) ----------------------------------------------------------------------


def parse_args(argv: list[str] | None, description: str = "") -> tuple[argparse.Namespace, Ablation]:
    """bench/ablation.py's arguments and the recipe they give; a bad one exits with status 2 and says why.

    The CLAP-NTP and CLAP-RF configs are loaded with the overrides here, so that a bad key fails
    now and not after the data stages.
    """
    from clap_train.config import ConfigError

    p = argparse.ArgumentParser(prog="bench/ablation.py", description=description)
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds of every arm")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per policy and variant")
    p.add_argument("--eval-seed", type=int, default=TEST_SEED,
                   help="first evaluation seed (2000: the test block; choose recipes on 1000..)")
    p.add_argument("--demos", type=int, default=50, help="coloured_cubes demonstrations (seeds 0..N-1)")
    p.add_argument("--human-videos", type=int, default=30, help="human-look videos of coloured_cubes_novel")
    p.add_argument("--human-fraction", type=float, default=0.25, help="share of human samples in CLAP-NTP")
    p.add_argument("--configs", type=pathlib.Path, default=CONFIGS / "closed_loop", help="stage configs folder")
    p.add_argument("--set-ntp", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="CLAP-NTP overrides for every arm (e.g. loop.steps=4000)")
    p.add_argument("--set-rf", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="CLAP-RF overrides for every arm (e.g. stage2.steps=8000)")
    p.add_argument("--grounded", action="store_true",
                   help="every backbone starts grounded (clap sim ground, once): the sim's pretrained VLM")
    p.add_argument("--no-parallel", dest="parallel", action="store_false", help="one job at a time")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "out" / "ablation")
    p.add_argument("--results", type=pathlib.Path, default=ROOT / "bench" / "results" / "ablation.json",
                   help="where result.json is copied (bench/results/: the figures RESULTS.md cites)")
    args = p.parse_args(argv)
    try:
        bench = Ablation(arms=tuple(args.arms), seeds=tuple(args.seeds), episodes=args.episodes,
                         eval_seed=args.eval_seed, demos=args.demos, human_videos=args.human_videos,
                         human_fraction=args.human_fraction, configs=args.configs, ntp_set=tuple(args.set_ntp),
                         rf_set=tuple(args.set_rf), grounded=args.grounded)
        stage_configs(bench.configs, ntp=bench.ntp_set, rf=bench.rf_set)
    except (ValueError, ConfigError) as exc:
        p.error(str(exc))
    return args, bench
