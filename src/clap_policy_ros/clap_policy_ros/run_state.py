"""
What the policy node is doing now, shared by its threads (pure Python, no ROS).

The control tick, the inference worker, the services, the action and the status all read or
write the instruction, the plan (``ChunkExecutor``) and the counters below; ``lock`` guards the
executor and every field that changes together with it. It is held only for short reads and
updates, never while the model runs.
"""

from __future__ import annotations

import collections
import threading

from .chunk_executor import ChunkExecutor, DelayEstimator


class RunState:
    """The instruction, the plan and the counters; see the module docstring."""

    def __init__(self, instruction: str = "", seed: int = 0, mode: str = "rf"):
        self.lock = threading.RLock()
        self.executor: ChunkExecutor | None = None  # set at configure (chunk shape of the model)
        self.delay: DelayEstimator | None = None
        self.tick = 0  # control ticks since start
        self.instruction = instruction
        self.subtask = ""
        self.subtask_index = 0
        self.seed = seed  # base seed of the flow noise; chunk k uses seed + k
        self.mode = mode  # rf or ntp (live parameter)
        self.sequence = 0  # chunks accepted since start
        self.holding_reason = ""
        self.last_error = ""
        # set when an episode starts: the robot may have been moved or reset since the last
        # command, so the next command starts from its measured state (control_loop.py)
        self.from_measured = False
        self.latencies: collections.deque[float] = collections.deque(maxlen=100)

    def advance(self) -> int:
        """Count one control tick; return its number."""
        with self.lock:
            self.tick += 1
            return self.tick

    def set_instruction(self, text: str, reset_queue: bool) -> str:
        """Follow ``text`` ("" = hold); drop the plan on reset or hold; return the previous one."""
        with self.lock:
            previous = self.instruction
            self.instruction = text
            if reset_queue or not text:
                if self.executor is not None:
                    self.executor.clear()
            if text != previous:  # the old subtask belonged to the old instruction
                self.subtask_index = 0
                self.subtask = ""
        return previous

    def note_subtask(self, subtask: str) -> tuple[str, str, int] | None:
        """Record a published chunk's subtask; on a change return (instruction, it, index)."""
        with self.lock:
            if subtask == self.subtask:
                return None
            self.subtask = subtask
            index = self.subtask_index
            self.subtask_index += 1
            return self.instruction, subtask, index

    def queue_depth(self) -> int:
        """Return the actions left in the current chunk from this tick on."""
        with self.lock:
            return self.executor.remaining(self.tick) if self.executor else 0

    def last_latency(self) -> float:
        """Return the model's latency of the last accepted chunk (s), 0.0 before the first."""
        lat = list(self.latencies)
        return lat[-1] if lat else 0.0
