"""Read a recipe's training step as the child process will: its stage's own parser, its config as loaded."""

import importlib

from clap_train.config import load_config
from clap_train.train import runner
from clap_train.train.cli import ALIASES, STAGES


def stage_args(step: runner.Step):
    """Parse a training step's command line with that stage's own parser (what the child process does)."""
    assert step.argv[0] == "train"
    return runner.parse_args(_spec(step), list(step.argv[2:]))


def stage_cfg(step: runner.Step):
    """The config the step's stage will train with (the YAML with the step's overrides)."""
    args = stage_args(step)
    return load_config(_spec(step).config, args.config, list(args.set))


def _spec(step: runner.Step):
    return importlib.import_module(STAGES[ALIASES.get(step.argv[1], step.argv[1])][0]).SPEC
