"""
``clap replay BAG [--rate R]``: publish a rosbag2 recording on its original topics and timing.

rosbag2's own player (``ros2 bag play``) is not installable from PyPI wheels, so this reads
the bag with the ``rosbags`` library (sqlite3 and mcap) and publishes each message's stored CDR
bytes unchanged through rclpy's serialized publishing (``Publisher.publish(bytes)``): no
deserialise/re-serialise step, so what the node receives is bit-identical to what was recorded.
The ROS message class of each topic (needed to create the publisher) is imported from its type
name. ``/clock`` carries the recording's time (the bag's receive timestamps), so a node run with
``use_sim_time:=true`` sees header stamps of the recording as fresh.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time

import rclpy
import rclpy.duration
from rclpy.executors import ExternalShutdownException
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock


class ReplayError(RuntimeError):
    """A bag or topic that cannot be replayed; the message names it."""


def message_class(msgtype: str, topic: str):
    """Import the rclpy message class of ``pkg/msg/Name``; errors name topic and type."""
    package, kind, name = (msgtype.split("/") + ["", ""])[:3]
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ReplayError(f"topic {topic}: message type {msgtype!r} is not available to rclpy "
                          f"({exc}); build or source its interface package") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clap replay", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=pathlib.Path, help="rosbag2 folder (sqlite3 or mcap)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--topics", nargs="*", default=None, help="only these topics")
    parser.add_argument("--start-delay", type=float, default=1.0,
                        help="seconds to wait after creating publishers (DDS discovery)")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds until every replayed topic has a subscriber")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def replay(bag: pathlib.Path, rate: float = 1.0, topics: list[str] | None = None,
           start_delay: float = 1.0, clock: bool = True, progress: bool = True,
           wait_for_subscribers: float = 0.0) -> int:
    """Publish every message of ``bag``; return the number of messages published."""
    from rosbags.highlevel import AnyReader
    from tqdm import tqdm

    if rate <= 0:
        raise ReplayError(f"--rate must be > 0, got {rate}")
    bag = pathlib.Path(bag)
    if not bag.exists():
        raise ReplayError(f"bag {bag} does not exist")
    try:
        reader = AnyReader([bag])
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types; name the bag
        raise ReplayError(f"bag {bag} cannot be read: {exc}") from exc
    node = rclpy.create_node("clap_replay")
    try:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        if topics:
            missing = sorted(set(topics) - {c.topic for c in connections})
            if missing:
                raise ReplayError(f"bag {bag} has no topic(s) {missing}")
        for conn in connections:
            if conn.msgtype and getattr(conn, "ext", None) is not None:
                fmt = getattr(conn.ext, "serialization_format", "cdr")
                if fmt != "cdr":
                    raise ReplayError(f"bag {bag}, topic {conn.topic}: serialization "
                                      f"{fmt!r} is not cdr")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        pubs = {}
        for conn in connections:
            if conn.topic not in pubs:
                pubs[conn.topic] = node.create_publisher(
                    message_class(conn.msgtype, conn.topic), conn.topic, qos)
        clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None
        time.sleep(start_delay)
        deadline = time.monotonic() + wait_for_subscribers
        while wait_for_subscribers > 0:
            lonely = sorted(t for t, p in pubs.items() if p.get_subscription_count() == 0)
            if not lonely:
                time.sleep(0.2)  # let the reliable matches settle
                break
            if time.monotonic() > deadline:
                raise ReplayError(f"no subscriber on {lonely} after {wait_for_subscribers} s")
            time.sleep(0.05)
        count = 0
        total = sum(c.msgcount for c in connections)
        wall0 = bag0 = None
        bar = tqdm(total=total, desc=f"replay {bag.name}", unit="msg", disable=not progress)

        def publish_clock(ns: int) -> None:
            if clock_pub is not None:
                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = divmod(int(ns), 1_000_000_000)
                clock_pub.publish(msg)

        for conn, stamp, raw in reader.messages(connections=connections):
            if wall0 is None:
                wall0, bag0 = time.monotonic(), stamp
            due = wall0 + (stamp - bag0) * 1e-9 / rate
            while True:  # sleep until due, keeping /clock moving at ~100 Hz
                left = due - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, 0.01))
                elapsed = (time.monotonic() - wall0) * rate
                publish_clock(bag0 + min(int(elapsed * 1e9), stamp - bag0))
            publish_clock(stamp)
            pubs[conn.topic].publish(bytes(raw))
            count += 1
            bar.update(1)
            if not rclpy.ok():
                break
        bar.close()
        for pub in pubs.values():  # reliable delivery of the tail before the node goes away
            pub.wait_for_all_acked(rclpy.duration.Duration(seconds=2.0))
        return count
    finally:
        reader.close()
        node.destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``replay`` executable (``clap replay``)."""
    args_all = sys.argv if argv is None else [sys.argv[0], *argv]
    rclpy.init(args=args_all)
    from rclpy.utilities import remove_ros_args

    args = build_parser().parse_args(remove_ros_args(args_all)[1:])
    try:
        n = replay(args.bag, args.rate, args.topics, args.start_delay, not args.no_clock,
                   not args.no_progress, args.wait_for_subscribers)
        print(f"replayed {n} messages from {args.bag}", flush=True)
        return 0
    except ReplayError as exc:
        print(f"clap replay: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
