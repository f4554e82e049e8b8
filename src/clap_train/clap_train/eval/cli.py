"""``clap eval NAME``: evaluation jobs, one module each (imported only when it runs)."""

from __future__ import annotations

import argparse

EVALS: dict[str, tuple[str, str]] = {
    "offline": ("clap_train.eval.offline",
                "a policy's chunks vs recorded ones per dimension group, baselines, compounding check"),
    "rate-distortion": ("clap_train.eval.rate_distortion", "Act-VAE rate-distortion sweep (Table V, Eq. 8)"),
    "token-agreement": ("clap_train.eval.token_agreement",
                        "VD-VAE tokens of robot transitions vs Act-VAE tokens of their true chunks"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("evaluation", choices=sorted(EVALS), help="which evaluation to run")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="its own arguments (see clap eval NAME -h)")


def run(args: argparse.Namespace) -> int:
    from clap_train.cli import run_module

    module_name, help_text = EVALS[args.evaluation]
    return run_module(module_name, f"clap eval {args.evaluation}", help_text, args.rest)
