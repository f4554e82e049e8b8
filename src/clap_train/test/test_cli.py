"""The `clap` command: sub-commands dispatch lazily, unknown ones fail with the valid names."""

import subprocess
import sys

from clap_train import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*cli.COMMANDS, *cli.ROS_COMMANDS]:
        assert name in out


def test_unknown_command_names_the_valid_ones(capsys):
    try:
        cli.main(["frobnicate"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err
    assert "frobnicate" in err and "convert" in err


def test_ros_command_without_ros_package_explains(monkeypatch, capsys):
    monkeypatch.setenv("AMENT_PREFIX_PATH", "/nonexistent")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli.main(["replay", "bag"]) == 2
    assert "clap_policy_ros" in capsys.readouterr().err


def test_clap_train_never_imports_ros():
    """Importing every clap_train module must not pull in rclpy or any ROS message package."""
    code = (
        "import importlib, pkgutil, sys, clap_train\n"
        "for m in pkgutil.walk_packages(clap_train.__path__, 'clap_train.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'rclpy', 'rosidl_runtime_py', 'clap_msgs', 'sensor_msgs', 'std_msgs', 'geometry_msgs'})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
