"""The ``clap`` command: one entry point for data, training and evaluation jobs.

Each sub-command lives in its own module, imported only when that sub-command runs, so
``clap --help`` is fast and a job pulls in only what it needs. A module registered here
provides ``add_arguments(parser)`` and ``run(args) -> int``.

Jobs that need rclpy (replay, the policy node, the sim bridge) are executables of the ROS
packages; ``clap`` hands off to them as a subprocess so that clap_train itself never imports
ROS.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import subprocess
import sys

# name -> (module, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("clap_train.data.recording.convert_cli", "convert rosbag2 recordings to a LeRobot v3.0 dataset"),
    "convert-videos": (
        "clap_train.data.recording.convert_videos_cli",
        "convert a folder of human videos + instructions to a LeRobot v3.0 dataset",
    ),
    "train": ("clap_train.train.cli", "train a stage: act-vae, vd-vae, ntp, rf"),
    "label-videos": ("clap_train.train.label_videos", "write VD-VAE pseudo action tokens into a human-video dataset"),
    "eval": ("clap_train.eval.cli", "evaluations: offline, rate-distortion, token-agreement"),
    "predict": ("clap_train.predict_cli", "run ClapPolicy on images from files and print the chunk"),
}

# name -> (ROS package, executable, help). Started as subprocesses: they need rclpy.
ROS_COMMANDS: dict[str, tuple[str, str, str]] = {
    "replay": ("clap_policy_ros", "replay", "publish a rosbag2 recording on its original topics (needs ROS)"),
    "node": ("clap_policy_ros", "policy_node", "run the policy node (needs ROS)"),
    "sim": ("clap_sim", "sim", "simulation: record scripted demos, human videos, closed-loop eval"),
}


def run_module(module_name: str, prog: str, description: str, argv: list[str]) -> int:
    """Import a command module, build its parser and run it (``add_arguments`` + ``run``)."""
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


def find_ros_executable(package: str, executable: str) -> str | None:
    """Find a ROS package's executable through the ament index, without importing ROS."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if not prefix:
            continue
        candidate = os.path.join(prefix, "lib", package, executable)
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(executable)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clap",
        description="CLAP: data conversion, training and evaluation (ROS-free).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name, (_, _, help_text) in ROS_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in ROS_COMMANDS:
        package, executable, _ = ROS_COMMANDS[name]
        path = find_ros_executable(package, executable)
        if path is None:
            print(
                f"clap {name}: needs the ROS package {package} (executable {executable}); "
                "source scripts/env.sh (or your ROS workspace) first",
                file=sys.stderr,
            )
            return 2
        child = subprocess.Popen([path, *rest])
        # A SIGTERM for `clap` (a timeout, a supervisor) must reach the ROS process too.
        signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the child too (same process group): let it shut down cleanly.
            try:
                return child.wait(timeout=15)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):
                child.kill()
                return child.wait()
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join([*COMMANDS, *ROS_COMMANDS])}")
    module_name, help_text = COMMANDS[name]
    try:
        return run_module(module_name, f"clap {name}", help_text, rest)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"clap {name}: not available in this build ({module_name} is missing)", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
