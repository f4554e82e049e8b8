"""One runner for every ``clap train STAGE``: command line, config, run folder and errors, said once.

A stage module declares a ``StageSpec``: its name, its config dataclass, which data it reads, and
two functions. ``prepare(cfg, sources, options)`` opens the inputs and checks them; whatever it
raises (ConfigError, FileNotFoundError, ValueError, RuntimeError) becomes one line on stderr and
exit status 2, before anything is written. ``train(prepared, options)`` then runs the stage through
the shared loop (train/loop.py) and exports its result. Between the two the runner creates the run
folder and writes the config as it ran (``RUN_DIR/config.yaml``).

Every setting is a config key: the YAML sets it and ``--set key=value`` overrides it, including
the paths to earlier stages' exports (``act_vae``, ``init``). The old flags ``--act-vae DIR`` and
``--init DIR`` are kept as shorthands that become ``--set act_vae=DIR`` / ``--set init=DIR``; they
do not bypass the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from collections.abc import Callable
from typing import Any, Literal

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

    ``human``: which human-data inputs the stage takes: none, ``dataset`` (``--human-dataset``)
    or ``both`` (``--human-dataset`` or ``--human-synthetic N``). ``path_keys``: config keys that
    name an earlier stage's export; each gets a ``--key-with-dashes DIR`` shorthand for ``--set``.
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


def add_arguments(spec: StageSpec, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=pathlib.Path, help=f"YAML config ({spec.config.__name__})")
    parser.add_argument("--run-dir", type=pathlib.Path, required=True, help="checkpoints, TensorBoard, export")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="robot LeRobot v3.0 dataset directory")
    src.add_argument("--synthetic", type=int, metavar="N", help="use N scripted synthetic robot episodes instead")
    if spec.human == "dataset":
        parser.add_argument("--human-dataset", help="human-video LeRobot dataset directory")
    elif spec.human == "both":
        hum = parser.add_mutually_exclusive_group()
        hum.add_argument("--human-dataset", help="human-video LeRobot dataset (with pseudo action tokens)")
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
    sources = Sources(dataset=args.dataset, synthetic=args.synthetic,
                      human_dataset=getattr(args, "human_dataset", None),
                      human_synthetic=getattr(args, "human_synthetic", None))
    try:
        cfg = load_config(spec.config, args.config, args.set)
        prepared = spec.prepare(cfg, sources, options)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"clap train {spec.name}: {exc}", file=sys.stderr)
        return 2
    options.run_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():  # several processes (torchrun / accelerate launch): rank 0 writes
        save_config(cfg, options.run_dir / "config.yaml")
    return int(spec.train(prepared, options) or 0)


def main(spec: StageSpec, argv: list[str], prog: str | None = None) -> int:
    return run(spec, parse_args(spec, argv, prog))
