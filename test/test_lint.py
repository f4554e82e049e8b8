"""The workspace's one lint (scripts/lint.py: flake8 and pep257 with .flake8's settings) finds nothing."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.linter
def test_lint_is_clean():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "lint.py")], capture_output=True, text=True,
                         timeout=600)
    found = [line for line in run.stdout.splitlines() if not line.startswith(("checking ", "* "))]
    assert run.returncode == 0, "\n".join(found[-60:])
