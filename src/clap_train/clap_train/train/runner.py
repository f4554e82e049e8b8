"""One runner for every ``clap train STAGE``: command line, config, run folder and errors, said once.

A stage module declares a ``StageSpec``: its name, its config dataclass, which data it reads, and
two functions. ``prepare(cfg, sources, options)`` opens the inputs and checks them; whatever it
raises (ConfigError, FileNotFoundError, ValueError, RuntimeError) becomes one line on stderr and
exit status 2, before anything is written. ``train(prepared, options)`` then runs the stage through
the shared loop (train/loop.py) and exports its result. Between the two the runner creates the run
folder and writes the config as it ran (``RUN_DIR/config.yaml``).

Every setting is a config key: the YAML sets it and ``--set key=value`` overrides it, including
the paths to earlier stages' exports (``act_vae``, ``init``) and the datasets (``datasets``,
``human_datasets``: lists of ``{path, weight}``, data/samples/sources.py). The flags ``--act-vae DIR``,
``--init DIR``, ``--dataset DIR`` and ``--human-dataset DIR`` are shorthands for ``--set`` (a
repeated ``--dataset`` lists several datasets of weight 1); they do not bypass the config.
``--synthetic N`` (and ``--human-synthetic N``) trains on N scripted episodes written as a dataset.

Pipelines (``make demo``, the closed-loop benches: clap_sim/pipeline.py) run their steps with
``run_steps``: each step is a ``clap`` command in a child process, skipped when its output exists;
a training step (``stage_step``) is ``clap train STAGE``, i.e. this runner again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from clap_train.config import ConfigError, load_config, save_config
from clap_train.data.samples.sources import Sources
from clap_train.train.loop import is_main_process


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How this run of a stage goes (not what it learns: that is the config)."""

    run_dir: pathlib.Path
    resume: bool = False
    progress: bool = True
    stop_after: int | None = None


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """What a stage module tells the runner.

    ``human``: which human-data inputs the stage takes: none, ``dataset`` (``human_datasets`` /
    ``--human-dataset``) or ``both`` (those or ``--human-synthetic N``). ``path_keys``: config keys
    that name an earlier stage's export; each gets a ``--key-with-dashes DIR`` shorthand for ``--set``.
    """

    name: str
    help: str
    config: type
    prepare: Callable[[Any, Sources, RunOptions], Any]
    train: Callable[[Any, RunOptions], int]
    human: Literal["none", "dataset", "both"] = "none"
    path_keys: tuple[str, ...] = ()


class _SetKey(argparse.Action):
    """``--act-vae DIR``: appends ``act_vae="DIR"`` to the ``--set`` overrides, in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "set", None) or [])
        items.append(f"{self.metavar}={json.dumps(str(values))}")  # quoted: YAML reads it as a string
        namespace.set = items


class _DatasetKey(argparse.Action):
    """``--dataset DIR`` (repeatable): sets the config's ``datasets`` to these folders, weight 1 each."""

    def __call__(self, parser, namespace, values, option_string=None):
        listed = dict(getattr(namespace, "_listed", None) or {})
        listed[self.metavar] = [*listed.get(self.metavar, []), str(values)]
        namespace._listed = listed
        items = [item for item in (getattr(namespace, "set", None) or []) if not item.startswith(self.metavar + "=")]
        items.append(f"{self.metavar}={json.dumps([{'path': p} for p in listed[self.metavar]])}")
        namespace.set = items


def add_arguments(spec: StageSpec, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=pathlib.Path, help=f"YAML config ({spec.config.__name__})")
    parser.add_argument("--run-dir", type=pathlib.Path, required=True, help="checkpoints, TensorBoard, export")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--dataset", action=_DatasetKey, metavar="datasets", dest="set", default=[],
                     help="robot LeRobot v3.0 dataset directory (repeat for several; or datasets: in the config)")
    src.add_argument("--synthetic", type=int, metavar="N", help="use N scripted synthetic robot episodes instead")
    if spec.human != "none":
        hum = parser.add_mutually_exclusive_group()
        hum.add_argument("--human-dataset", action=_DatasetKey, metavar="human_datasets", dest="set", default=[],
                         help="human-video LeRobot dataset directory (repeat for several; or human_datasets:)")
        if spec.human == "both":
            hum.add_argument("--human-synthetic", type=int, metavar="N", help="N synthetic human episodes")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    keys = ", ".join(spec.path_keys)
    parser.add_argument("--set", action="extend", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. loop.steps=10" + (f" or {spec.path_keys[0]}=DIR" if keys else ""))
    for key in spec.path_keys:
        parser.add_argument("--" + key.replace("_", "-"), action=_SetKey, metavar=key, dest="set",
                            help=f"shorthand for --set {key}=DIR")
    parser.add_argument("--stop-after", type=int, help="stop at this step (for tests / staged runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_args(spec: StageSpec, argv: list[str], prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog or f"clap train {spec.name}", description=spec.help)
    add_arguments(spec, parser)
    return parser.parse_args(argv)


def run(spec: StageSpec, args: argparse.Namespace) -> int:
    """Load the config, prepare the inputs (errors: exit 2), write RUN_DIR/config.yaml, train."""
    options = RunOptions(run_dir=pathlib.Path(args.run_dir), resume=bool(args.resume),
                         progress=not args.no_progress, stop_after=args.stop_after)
    overrides = list(args.set)
    if args.synthetic is not None:  # the synthetic episodes replace the config's datasets
        overrides.append("datasets=[]")
    if getattr(args, "human_synthetic", None) is not None:
        overrides.append("human_datasets=[]")
    try:
        cfg = load_config(spec.config, args.config, overrides)
        if spec.human == "none" and cfg.human_datasets:
            raise ConfigError(f"{spec.name} reads no human videos; human_datasets must be empty")
        sources = Sources(robot=tuple(cfg.datasets), human=tuple(cfg.human_datasets), synthetic=args.synthetic,
                          human_synthetic=getattr(args, "human_synthetic", None))
        prepared = spec.prepare(cfg, sources, options)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"clap train {spec.name}: {exc}", file=sys.stderr)
        return 2
    options.run_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():  # several processes (torchrun / accelerate launch): rank 0 writes
        save_config(cfg, options.run_dir / "config.yaml")
    rc = int(spec.train(prepared, options) or 0)
    _leave_process_group()  # after a stage that ended normally (a failed rank exits, and torchrun stops the rest)
    return rc


def _leave_process_group() -> None:
    """Under torchrun / accelerate launch: leave the process group before the process exits.

    Without it gloo's threads are torn down by the interpreter's exit, which now and then aborts a
    rank after its work is done ("terminate called without an active exception", exit -6; seen in
    test_multiprocess from a fresh clone).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(spec: StageSpec, argv: list[str], prog: str | None = None) -> int:
    return run(spec, parse_args(spec, argv, prog))


# -- pipelines: several `clap` jobs in a row (clap_sim.pipeline's recipes, `make demo`, the benches) ---------


class StepResult(NamedTuple):
    """How one pipeline step went: its name, its wall seconds and ``ok``, ``skipped`` or ``FAILED (exit N)``."""

    name: str
    seconds: float
    status: str


@dataclasses.dataclass(frozen=True)
class Step:
    """One pipeline step: a ``clap`` command line and the file whose existence says it is done.

    ``touch``: the command leaves no such file of its own, so the runner writes ``marker`` after it
    succeeds (a converted dataset, a labelled one).
    """

    name: str
    argv: tuple[str, ...]
    marker: pathlib.Path
    touch: bool = False


def stage_step(name: str, stage: str, config: pathlib.Path, run_dir: pathlib.Path, marker: pathlib.Path, *,
               datasets: Sequence[pathlib.Path] = (), human_datasets: Sequence[pathlib.Path] = (),
               sets: Sequence[str] = ()) -> Step:
    """A step that trains ``stage`` (``clap train STAGE``, this module's runner) and resumes a run it finds."""
    argv = ["train", stage, "--config", str(config), "--run-dir", str(run_dir), "--resume"]
    argv += [a for d in datasets for a in ("--dataset", str(d))]
    argv += [a for d in human_datasets for a in ("--human-dataset", str(d))]
    if sets:
        argv += ["--set", *sets]
    return Step(name, tuple(argv), marker)


def failed(results: Sequence[StepResult]) -> bool:
    """Whether ``run_steps`` stopped at a failed step."""
    return any(r.status.startswith("FAILED") for r in results)


def run_steps(steps: Sequence[Step], env: dict[str, str] | None = None) -> list[StepResult]:
    """Run each step whose marker is missing as a ``clap`` child process; stop at the first failure."""
    results: list[StepResult] = []
    for i, step in enumerate(steps, 1):
        if step.marker.exists():
            print(f"\n[{i}/{len(steps)}] {step.name}: done before, skipped ({step.marker})", flush=True)
            results.append(StepResult(step.name, 0.0, "skipped"))
            continue
        print(f"\n[{i}/{len(steps)}] {step.name}\n$ {shlex.join(['clap', *step.argv])}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "clap_train.cli", *step.argv], env=env)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            results.append(StepResult(step.name, took, f"FAILED (exit {proc.returncode})"))
            return results
        if step.touch:
            step.marker.write_text(f"{time.time()}\n")
        results.append(StepResult(step.name, took, "ok"))
    return results
