#!/usr/bin/env python3
"""The workspace's one lint: flake8 and pep257 (through the ament linters) with the settings of .flake8.

    python scripts/lint.py            # src/ bench/ scripts/ launch/ test/ (what `make lint` runs)
    python scripts/lint.py src/clap_sim

Exit status 0 when both are clean, 1 otherwise (their findings on stdout).
"""

from __future__ import annotations

import argparse
import configparser
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".flake8"
PATHS = ("src", "bench", "scripts", "launch", "test")


def pep257_ignores() -> list[str]:
    """The [pep257] add-ignore codes of .flake8."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return [c.strip() for c in parser.get("pep257", "add-ignore", fallback="").split(",") if c.strip()]


def lint(paths: list[str]) -> int:
    """Run flake8 and pep257 over ``paths``; the number of tools that found something."""
    from ament_flake8.main import main_with_errors as flake8_main
    from ament_pep257.main import main as pep257_main

    failed = 0
    rc, errors = flake8_main(argv=["--config", str(CONFIG), *paths])
    if rc:
        print(f"flake8: {len(errors)} error(s)")
        failed += 1
    ignores = pep257_ignores()
    if pep257_main(argv=[*(["--add-ignore", *ignores] if ignores else []), "--", *paths]):
        print("pep257: docstring errors (above)")
        failed += 1
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help=f"files or folders (default: {' '.join(PATHS)})")
    args = parser.parse_args(argv)
    paths = args.paths or [str(ROOT / p) for p in PATHS]
    return 1 if lint(paths) else 0


if __name__ == "__main__":
    sys.exit(main())
