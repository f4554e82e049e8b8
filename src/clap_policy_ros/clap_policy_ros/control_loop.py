"""
One control tick (pure numpy, no ROS): the plan's action for this tick, made safe, or a hold.

The node calls ``ControlLoop.tick`` from its control timer at the control rate and publishes
what it returns (commands.py). Per tick:

- a stale camera drops the plan and holds (``holding_reason`` names the cameras);
- no instruction holds;
- otherwise the chunk executor's action for the tick goes through the safety filter (workspace,
  speed and gripper limits relative to the last command); a tick the plan has nothing for holds.

Holding means repeating the last command; before the first one, and at the first tick of an
episode (``RunState.from_measured``), it is the robot's measured state (when known), so the arm
starts from where it is, not from where the last episode left its command: the speed limit
would otherwise drag a reset robot back towards the old pose. ``None`` means there is nothing
to send.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .run_state import RunState
from .safety import SafetyFilter


class ControlLoop:
    """Turns the shared plan into one safe 14-D command per control tick."""

    def __init__(self, state: RunState, safety: SafetyFilter):
        self._state = state
        self._safety = safety
        self.last_cmd: np.ndarray | None = None  # the last command sent: what a hold repeats

    def tick(self, step: int, stale: str,
             measured: Callable[[], np.ndarray | None]) -> np.ndarray | None:
        """
        Return the command for control tick ``step``, or None when there is nothing to send.

        ``stale``: the stale cameras ("" when all are fresh); ``measured``: the robot's state as
        a 14-D vector (None when unknown), asked for only before the first command and at the
        first tick of an episode.
        """
        st = self._state
        with st.lock:
            restart, st.from_measured = st.from_measured, False
            if stale:
                st.executor.clear()
                st.holding_reason = f"stale camera: {stale}"
                target = None
            elif not st.instruction:
                target = None
                st.holding_reason = "no instruction"
            else:
                target = st.executor.action_at(step)
        previous = self.last_cmd
        if previous is None or restart:
            now = measured()
            previous = now if now is not None else previous
        if target is None:
            if previous is not None:
                self.last_cmd = previous
            return previous
        safe, _ = self._safety.filter(target, previous)
        self.last_cmd = safe
        return safe
