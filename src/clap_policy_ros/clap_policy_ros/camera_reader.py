"""
Camera intake on a thread of its own: a wait set over the camera subscriptions, nothing else.

The camera messages are the policy node's hot path: 90 a second, and each set's last image is
on the way to the model. An rclpy executor, even a single-threaded one over just these
subscriptions, rebuilds its wait set and walks its entities in Python for every message; this
reader builds one wait set for the cameras (plus a guard condition to stop it) and, whenever it
wakes, takes every camera that has a message and calls its callback in this thread. It is
what ``rclpy.wait_for_message`` does for one message, in a loop. The subscriptions belong to a
node that no executor spins (their own callbacks are never called).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Sequence

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy


class CameraReader:
    """Subscribe ``node`` to ``topics`` [(msg class, topic, callback(msg))] and read them."""

    def __init__(self, node, topics: Sequence[tuple[type, str, Callable]], qos,
                 on_error: Callable[[BaseException], None] | None = None):
        self._node = node
        self._subs = [(node.create_subscription(
            cls, topic, lambda _msg: None, qos,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False)), callback)
            for cls, topic, callback in topics]
        self._stop = GuardCondition(None, None, context=node.context)
        self._running = True
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="clap_cameras", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        context = self._node.context
        try:
            with contextlib.ExitStack() as handles:
                for sub, _ in self._subs:
                    handles.enter_context(sub.handle)
                handles.enter_context(self._stop.handle)
                handles.enter_context(context.handle)
                wait_set = _rclpy.WaitSet(len(self._subs), 1, 0, 0, 0, 0, context.handle)
                while self._running and context.ok():
                    wait_set.clear_entities()
                    for sub, _ in self._subs:
                        wait_set.add_subscription(sub.handle)
                    wait_set.add_guard_condition(self._stop.handle)
                    wait_set.wait(-1)  # the GIL is released while waiting
                    ready = wait_set.get_ready_entities("subscription")
                    for sub, callback in self._subs:
                        if not self._running:
                            break
                        if sub.handle.pointer in ready:
                            taken = sub.handle.take_message(sub.msg_type, sub.raw)
                            if taken is not None:
                                callback(taken[0])
        except Exception as exc:  # noqa: BLE001 - reported; the node sees stale cameras and holds
            if self._running and self._on_error is not None:
                self._on_error(exc)

    def stop(self) -> None:
        """Stop the thread (it wakes on the guard condition) and destroy the subscriptions."""
        self._running = False
        self._stop.trigger()
        self._thread.join(timeout=2.0)
        for sub, _ in self._subs:
            self._node.destroy_subscription(sub)
        self._stop.destroy()
        self._subs = []
