"""``clap train STAGE``: one module per CLAP stage, each run by the shared stage runner.

Each stage module declares ``SPEC`` (a ``StageSpec``, train/runner.py); it is imported only when its
stage runs. ``post`` is the old name of ``rf`` and stays as an alias.
"""

from __future__ import annotations

import argparse
import importlib

STAGES: dict[str, tuple[str, str]] = {
    "act-vae": ("clap_train.train.act_vae", "Act-VAE: the action codebook (Alg. 1)"),
    "vd-vae": ("clap_train.train.vd_vae", "VD-VAE with contrastive alignment (Alg. 2)"),
    "ntp": ("clap_train.train.ntp", "CLAP-NTP: Qwen3-VL next-token prediction of subtasks and action tokens (Alg. 3)"),
    "rf": ("clap_train.train.rf", "CLAP-RF flow head with Knowledge Matching (Alg. 4)"),
}
ALIASES: dict[str, str] = {"post": "rf"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=[*STAGES, *ALIASES], help="which stage to train (post: the old name of rf)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the stage's own arguments (see clap train STAGE -h)")


def run(args: argparse.Namespace) -> int:
    from clap_train.train import runner

    name = ALIASES.get(args.stage, args.stage)
    spec = importlib.import_module(STAGES[name][0]).SPEC
    return runner.main(spec, args.rest, prog=f"clap train {args.stage}")
