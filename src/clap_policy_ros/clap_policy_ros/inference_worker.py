"""
The inference worker: a plain thread, off the executor, that turns camera sets into chunks.

It wakes on each new complete camera set (``notify_new_set``, called by the camera intake) and,
when the chunk executor wants a new plan, runs ``policy.predict`` on the freshest set. A set that
completed while the model was busy is not used (it would be up to one frame old), so every chunk
is computed from the freshest observation there is. The chunk is checked (shape, NaN/inf) and
handed to the executor under the shared lock; ``on_chunk`` then publishes it. The control tick
never waits for the model: it only reads the executor's plan.

The policy is anything with the members of ``clap_train.interface.Policy`` (``ClapPolicy`` by
default); this package imports that torch-free module, never ``clap_train.policy``.
"""

from __future__ import annotations

import importlib
import pathlib
import threading
import time
from typing import Callable

import numpy as np
from clap_train.interface import Policy

from .run_state import RunState
from .safety import SafetyFilter
from .synchronizer import FreshestSetSynchronizer, SyncedSet


def load_policy_class(spec: str) -> type[Policy]:
    """Import ``module:Class``; the error names the spec."""
    module_name, _, class_name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name or "ClapPolicy")
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"policy_class {spec!r} cannot be imported: {exc}") from exc


def load_policy(spec: str, model_dir: str, device: str, logger) -> Policy:
    """Load the policy ``spec`` (module:Class) from ``model_dir``; errors name what is wrong."""
    if not model_dir:
        raise ValueError("parameter model_dir is empty: point it at a policy checkpoint")
    if not pathlib.Path(model_dir).is_dir():  # before the import: a wrong path is named without loading torch
        raise FileNotFoundError(f"model_dir {model_dir} is not a directory")
    cls = load_policy_class(spec)
    t0 = time.monotonic()
    policy = cls.load(model_dir, device=device, warmup=True)
    logger.info(f"loaded {cls.__name__} from {model_dir} in {time.monotonic() - t0:.1f} s")
    return policy


class InferenceWorker:
    """
    Runs the model on fresh camera sets while started; see the module docstring.

    ``measured()``: the robot's state (14-D or None); ``on_chunk(actions, prediction,
    observation stamp, sequence)``: publish an accepted chunk; ``warn(key, text)``: a throttled
    warning.
    """

    def __init__(self, policy: Policy, state: RunState, sync: FreshestSetSynchronizer,
                 now: Callable[[], float], measured: Callable[[], np.ndarray | None],
                 on_chunk: Callable, warn: Callable[[str, str], None]):
        self._policy = policy
        self._state = state
        self._sync = sync
        self._now = now
        self._measured = measured
        self._on_chunk = on_chunk
        self._warn = warn
        self._wake = threading.Condition()
        self._sets_completed = 0
        self._running = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Tell whether the worker may still hand out chunks (False from ``stop`` on)."""
        return self._running

    def notify_new_set(self) -> None:
        """Wake the worker: a newer complete camera set exists."""
        with self._wake:
            self._sets_completed += 1
            self._wake.notify_all()

    def start(self) -> None:
        """Start the thread."""
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="clap_inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop handing out chunks at once and join the thread; False if it did not end."""
        self._running = False
        with self._wake:
            self._wake.notify_all()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout=timeout)
        return not thread.is_alive()

    def _loop(self) -> None:
        seen = self._sets_completed
        st = self._state
        while self._running:
            with self._wake:
                self._wake.wait_for(lambda: self._sets_completed != seen or not self._running,
                                    timeout=0.5)
                fresh = self._sets_completed != seen
                seen = self._sets_completed
            if not self._running:
                break
            if not fresh:
                continue
            with st.lock:
                instruction = st.instruction
                want = bool(instruction) and st.executor.needs_plan(st.tick)
            if not want:
                continue
            synced = self._sync.take_new(self._now())
            if synced is None:
                continue
            self._infer(synced, instruction)
            with self._wake:
                seen = self._sets_completed  # wait for a set newer than the model's run

    def _infer(self, synced: SyncedSet, instruction: str) -> None:
        """Run the model on one camera set and hand the checked chunk to the executor."""
        st = self._state
        with st.lock:
            obs_step = st.tick
            prefix = st.executor.prefix_for(obs_step)
            # Prefix rows the new chunk never gets to execute: row 0 is this tick's (already
            # sent), then one per tick the model is expected to take. RTC freezes them.
            frozen = st.delay.delay + 1
            seed = st.seed + st.sequence
        images = {name: item.payload[0] for name, item in synced.items.items()}
        try:
            pred = self._policy.predict(images, instruction, self._measured(), mode=st.mode,
                                        prev_chunk=prefix,
                                        inference_delay=frozen if prefix is not None else 0,
                                        seed=seed)
        except Exception as exc:  # noqa: BLE001 - the node keeps holding, error reported
            st.last_error = f"predict failed: {exc}"
            self._warn("predict", st.last_error)
            return
        if not self._running:
            return  # deactivated while the model ran: nothing more goes out
        actions = np.asarray(pred.actions)
        config = st.executor.config
        problem = SafetyFilter.chunk_problem(actions, (config.chunk_len, config.action_dim))
        if problem:
            st.last_error = f"chunk rejected: {problem}"
            self._warn("chunk", st.last_error)
            with st.lock:
                st.executor.clear()
                st.holding_reason = st.last_error
            return
        with st.lock:
            if instruction != st.instruction:
                return  # instruction changed while the model ran
            st.delay.record(st.tick - obs_step)
            st.executor.add_chunk(actions, obs_step)
            st.holding_reason = ""
            sequence = st.sequence
            st.sequence += 1
        st.latencies.append(float(pred.latency))
        newest = max(synced.items.values(), key=lambda item: item.stamp)
        self._on_chunk(actions, pred, newest.payload[1], sequence)
