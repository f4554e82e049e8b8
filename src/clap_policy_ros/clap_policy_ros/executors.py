"""
A MultiThreadedExecutor that queues each ready callback once (rclpy 7.1, ROS 2 Jazzy).

Written here because the fix is not in the Jazzy rclpy this project runs on (PyPI wheels and
apt alike, rclpy 7.1.x): ``Executor._wait_for_ready_callbacks`` yields every task that is
neither executing nor done, and rclpy's ``MultiThreadedExecutor`` only *submits* a yielded task
to its thread pool. A task still waiting in the pool's queue is therefore yielded and submitted
again on the next spin, at once, without waiting: the spinning thread busy-loops while holding
the GIL, queues thousands of duplicates, and the callbacks themselves starve (ros2/rclpy#1452,
fixed upstream by #1547). Seen here: the sim bridge's tick fell from 47 to under 1 per second
while pose targets arrived at 30 Hz, and the policy node's camera callbacks stalled for 0.5 s.

``MultiThreadedExecutor`` below submits a task only when it is not already queued, and when the
generator offers a queued task again, waits (briefly, on a condition the pool thread signals as
the task starts) instead of spinning. Everything else is rclpy's own executor.
"""

from __future__ import annotations

import threading

from rclpy.executors import (ConditionReachedException, ExternalShutdownException,
                             ShutdownException, TimeoutException)
from rclpy.executors import MultiThreadedExecutor as _RclpyMultiThreadedExecutor

# Longest wait for a queued task to start before the spinning thread looks again (s). A task
# starts as soon as a pool thread is free, so this bounds only the all-threads-busy case.
_QUEUED_WAIT = 0.01


class MultiThreadedExecutor(_RclpyMultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor, minus the re-queueing busy loop (see the module doc)."""

    def __init__(self, num_threads: int | None = None, *, context=None):
        super().__init__(num_threads, context=context)
        self._queued: set = set()  # tasks handed to the pool that have not started yet
        self._queued_cond = threading.Condition()

    @property
    def queued(self) -> int:
        """Return how many callbacks wait for a pool thread (0 when the pool keeps up)."""
        with self._queued_cond:
            return len(self._queued)

    def _run(self, handler) -> None:
        with self._queued_cond:
            self._queued.discard(handler)
            self._queued_cond.notify_all()
        handler()

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException,
                ConditionReachedException):
            return
        with self._queued_cond:
            if handler in self._queued:  # offered again while it waits for a thread
                self._queued_cond.wait(timeout=_QUEUED_WAIT)
                return
            self._queued.add(handler)
        self._executor.submit(self._run, handler)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exception of a callback, as rclpy does
