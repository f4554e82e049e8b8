"""Record exactly the topics of the topic contract with `ros2 bag record` (mcap storage).

    ros2 launch launch/record.launch.py [contract:=config/contract/astribot.yaml] \
        [out:=recordings/episode_0001] [storage:=mcap]

The topic list is the contract's (``Contract.all_topics``, clap_train's loader), the same file
that `clap convert` and the policy node read, so a recording always carries what the converter
needs. One recording = one episode. Needs a ROS 2 install with launch and rosbag2 (the apt
packages; not available from the PyPI wheels) and clap_train (the sourced workspace).
"""

from __future__ import annotations

import datetime
import pathlib

from clap_train.data.contract import load_contract


def record_command(contract: str | pathlib.Path | None, out: str, storage: str = "mcap") -> list[str]:
    """The `ros2 bag record` command line for a contract file (None or "": the default contract)."""
    topics = [t.topic for t in load_contract(contract or None).all_topics()]
    return ["ros2", "bag", "record", "--storage", storage, "--output", out, *topics]


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
            DeclareLaunchArgument(
                "contract", default_value="", description="topic contract YAML (default: the astribot contract)"
            ),
            DeclareLaunchArgument(
                "out", default_value="", description="bag folder (default: recordings/episode_<time>)"
            ),
            DeclareLaunchArgument(
                "storage", default_value="mcap", description="rosbag2 storage plugin: mcap or sqlite3"
            ),
            OpaqueFunction(function=_record),
        ]
    )
