"""flake8 (the workspace's .flake8) and pep257 over clap_policy_ros, through the ament linters' APIs."""

import pathlib

import pytest
from ament_flake8.main import main_with_errors
from ament_pep257.main import main as pep257_main

PKG = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = PKG.parents[1] / "launch" / "astribot.launch.py"


@pytest.mark.linter
def test_flake8():
    rc, errors = main_with_errors(argv=["--config", str(PKG.parents[1] / ".flake8"),
                                        str(PKG / "clap_policy_ros"),
                                        str(PKG / "test"), str(LAUNCH), str(PKG / "setup.py")])
    assert rc == 0, "flake8 errors:\n" + "\n".join(errors)


@pytest.mark.linter
def test_pep257():
    rc = pep257_main(argv=[str(PKG / "clap_policy_ros"), str(LAUNCH)])
    assert rc == 0, "pep257 errors (see the output above)"
