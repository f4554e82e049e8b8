"""Record exactly the topics of the topic contract with `ros2 bag record` (mcap storage).

    ros2 launch launch/record.launch.py [contract:=config/contract/astribot.yaml] \
        [out:=recordings/episode_0001] [storage:=mcap]

The topic list is read from the same contract file that `clap convert` and the policy node read,
so a recording always carries what the converter needs. One recording = one episode. Needs a ROS 2
install with launch and rosbag2 (the apt packages; not available from the PyPI wheels).
"""

from __future__ import annotations

import datetime
import pathlib

import yaml

DEFAULT_CONTRACT = pathlib.Path(__file__).resolve().parent.parent / "config" / "contract" / "astribot.yaml"


def contract_topics(path: str | pathlib.Path) -> list[str]:
    """Every topic named in a contract file (cameras, per-arm state and commands, instruction, subtask)."""
    data = yaml.safe_load(pathlib.Path(path).read_text())
    topics = [c["topic"] for c in data["cameras"]]
    for group in ("state", "action"):
        for arm in data[group]["arms"]:
            topics += [arm["pose"]["topic"], arm["gripper"]["topic"]]
    topics.append(data["instruction"]["topic"])
    if data.get("subtask"):
        topics.append(data["subtask"]["topic"])
    return topics


def record_command(contract: str | pathlib.Path, out: str, storage: str = "mcap") -> list[str]:
    """The `ros2 bag record` command line for a contract."""
    return ["ros2", "bag", "record", "--storage", storage, "--output", out, *contract_topics(contract)]


def _record(context, *args, **kwargs):
    from launch.actions import ExecuteProcess
    from launch.substitutions import LaunchConfiguration

    contract = LaunchConfiguration("contract").perform(context)
    out = LaunchConfiguration("out").perform(context)
    storage = LaunchConfiguration("storage").perform(context)
    if not out:
        out = f"recordings/episode_{datetime.datetime.now():%Y%m%d_%H%M%S}"
    return [ExecuteProcess(cmd=record_command(contract, out, storage), output="screen")]


def generate_launch_description():
    # launch is imported here, not at the top, so that tests on machines without a ROS install
    # (PyPI wheels have no `launch`) can still check the topic list against the contract.
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [
            DeclareLaunchArgument("contract", default_value=str(DEFAULT_CONTRACT), description="topic contract YAML"),
            DeclareLaunchArgument(
                "out", default_value="", description="bag folder (default: recordings/episode_<time>)"
            ),
            DeclareLaunchArgument(
                "storage", default_value="mcap", description="rosbag2 storage plugin: mcap or sqlite3"
            ),
            OpaqueFunction(function=_record),
        ]
    )
