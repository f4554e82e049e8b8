"""``clap train STAGE``: one runner module per CLAP stage.

Each stage module provides ``add_arguments(parser)`` and ``run(args) -> int``; it is imported
only when its stage runs.
"""

from __future__ import annotations

import argparse

STAGES: dict[str, tuple[str, str]] = {
    "act-vae": ("clap_train.train.act_vae", "Act-VAE: the action codebook (Alg. 1)"),
    "vd-vae": ("clap_train.train.vd_vae", "VD-VAE with contrastive alignment (Alg. 2)"),
    "ntp": ("clap_train.train.ntp", "CLAP-NTP: Qwen3-VL next-token prediction of subtasks and action tokens (Alg. 3)"),
    "post": ("clap_train.train.post", "CLAP-RF flow head with Knowledge Matching (Alg. 4)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=sorted(STAGES), help="which stage to train")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the stage's own arguments (see clap train STAGE -h)")


def run(args: argparse.Namespace) -> int:
    from clap_train.cli import run_module

    module_name, help_text = STAGES[args.stage]
    return run_module(module_name, f"clap train {args.stage}", help_text, args.rest)
