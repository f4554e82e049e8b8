"""
What the node tells its operator: the PolicyStatus message, input diagnostics, throttled logs.

- ``StatusReporter`` publishes ``clap_msgs/PolicyStatus`` at ``status_rate_hz``: lifecycle and
  policy state, instruction, subtask, per-camera age, latencies, queue depth, the last error.
- ``InputCheck`` finds publishers on the node's input topics that it cannot hear (wrong message
  type, best-effort publisher on a reliable input) and names them, in the log and in the
  stale-camera reason. rclpy's default QoS-event handlers would report these too, but each is one
  more waitable per entity that the executor walks on every wake-up, so the node has none.
- ``ThrottledLog`` keeps a warning that repeats at 30 Hz down to one line per period and key.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
from clap_msgs.msg import CameraStatus, PolicyStatus
from rclpy.qos import ReliabilityPolicy

from .run_state import RunState
from .synchronizer import FreshestSetSynchronizer


class ThrottledLog:
    """Warnings at most once per ``period`` seconds per key."""

    def __init__(self, logger):
        self._logger = logger
        self._times: dict[str, float] = {}

    def warn(self, key: str, text: str, period: float = 2.0) -> None:
        """Log ``text`` as a warning unless ``key`` was logged within ``period`` seconds."""
        now = time.monotonic()
        if now - self._times.get(key, -1e9) >= period:
            self._times[key] = now
            self._logger.warning(text)


def type_name(cls) -> str:
    """Return the ROS type name of a message class, e.g. sensor_msgs/msg/Image."""
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


class InputCheck:
    """The node's inputs (topic, message type, reliable) and what keeps them from arriving."""

    def __init__(self, node, warn: Callable[..., None]):
        self._node = node
        self._warn = warn
        self._inputs: list[tuple[str, str, bool]] = []
        self.problems: dict[str, str] = {}  # topic -> why its messages do not arrive

    def add(self, topic: str, cls, reliable: bool) -> None:
        """Watch one input topic subscribed with message class ``cls``."""
        self._inputs.append((topic, type_name(cls), reliable))

    def check(self) -> None:
        """Find publishers on the input topics that the node cannot hear; log and keep them."""
        problems = {}
        for topic, type_name_, reliable in self._inputs:
            for info in self._node.get_publishers_info_by_topic(topic):
                who = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                if info.topic_type != type_name_:
                    problems[topic] = (f"publisher {who} sends {info.topic_type}, this node "
                                       f"subscribes with {type_name_}")
                elif reliable and info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT:
                    problems[topic] = (f"publisher {who} is best-effort, this node subscribes "
                                       "reliable")
        for topic, text in problems.items():
            self._warn(f"input:{topic}", f"{topic}: {text}; its messages do not arrive",
                       period=10.0)
        self.problems = problems


def policy_state(last_error: str, active: bool, instruction: str, holding_reason: str) -> int:
    """Return the PolicyStatus.STATE_* the node is in."""
    if last_error.startswith(("configure failed", "predict failed")):
        return PolicyStatus.STATE_ERROR
    if not active or not instruction:
        return PolicyStatus.STATE_IDLE
    if holding_reason:
        return PolicyStatus.STATE_HOLDING
    return PolicyStatus.STATE_RUNNING


class StatusReporter:
    """
    Builds and publishes PolicyStatus; every 2 s it runs the input check first.

    ``lifecycle()``: the node's (lifecycle state label, control active).
    """

    def __init__(self, publisher, state: RunState, sync: FreshestSetSynchronizer,
                 camera_topics: dict[str, str], inputs: InputCheck, frame_id: str, clock,
                 rate_hz: float, lifecycle: Callable[[], tuple[str, bool]]):
        self._publisher = publisher
        self._state = state
        self._sync = sync
        self._camera_topics = camera_topics
        self._inputs = inputs
        self._frame_id = frame_id
        self._clock = clock
        self._check_every = max(1, int(2.0 * rate_hz))
        self._lifecycle = lifecycle
        self._calls = 0

    def publish(self) -> None:
        """Publish one PolicyStatus."""
        self._calls += 1
        if self._calls % self._check_every == 1:
            self._inputs.check()  # every 2 s
        st, sync = self._state, self._sync
        ages = sync.ages(self._clock.now().nanoseconds * 1e-9)
        lat = list(st.latencies)
        depth = st.queue_depth()
        label, active = self._lifecycle()
        msg = PolicyStatus(
            lifecycle_state=label,
            policy_state=policy_state(st.last_error, active, st.instruction, st.holding_reason),
            instruction=st.instruction, subtask=st.subtask, mode=st.mode,
            cameras=[CameraStatus(name=k, topic=self._camera_topics[k], age=float(a),
                                  fresh=bool(0 <= a <= sync.max_age[k]))
                     for k, a in ages.items()],
            last_latency=lat[-1] if lat else 0.0,
            p95_latency=float(np.percentile(lat, 95)) if lat else 0.0,
            queue_depth=depth, chunks=st.sequence,
            last_error=st.holding_reason or st.last_error)
        msg.header.stamp = self._clock.now().to_msg()
        msg.header.frame_id = self._frame_id
        self._publisher.publish(msg)
