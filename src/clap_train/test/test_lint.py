"""Static checks of clap_train: flake8 and pep257 through the ament linters."""

import pathlib

import pytest
from ament_flake8.main import main_with_errors as flake8_main
from ament_pep257.main import main as pep257_main

PACKAGE = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.linter
def test_flake8():
    rc, errors = flake8_main(argv=["--config", str(PACKAGE.parents[1] / ".flake8"),
                                   str(PACKAGE / "clap_train"), str(PACKAGE / "test"), str(PACKAGE / "setup.py")])
    assert rc == 0, f"{len(errors)} flake8 error(s):\n" + "\n".join(errors[:30])


@pytest.mark.linter
def test_pep257():
    # ament's convention, less D213 (summary on the docstring's second line) and D401
    # (imperative mood): clap_train is a library, not ROS node code.
    rc = pep257_main(argv=["--add-ignore", "D213", "D401", "--", str(PACKAGE / "clap_train"), str(PACKAGE / "test")])
    assert rc == 0, "pep257 found docstring errors (see the captured output)"
