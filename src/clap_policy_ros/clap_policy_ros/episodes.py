"""
The node's task interface: the instruction and episode services and the ExecuteTask action.

``~/set_instruction``, ``~/start_episode``, ``~/end_episode`` and ``~/execute_task`` change
what the robot does only through ``RunState.set_instruction`` (an empty instruction holds the
last commanded pose). Episodes are appended to the JSON-lines episode log,
flushed and fsynced before the service answers. The action follows one instruction, sends
feedback (subtask, elapsed, latency, queue depth) at 10 Hz and ends on cancel (hold), on a
replaced instruction, on its timeout (hold) or at shutdown.
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

from clap_msgs.action import ExecuteTask
from clap_msgs.srv import EndEpisode, SetInstruction, StartEpisode
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup

from .conversions import to_duration
from .episode_log import EpisodeLog
from .run_state import RunState

FEEDBACK_PERIOD = 0.1  # s


class Episodes:
    """Create the services and the action on ``node``; ``ok()``: the ROS context is up."""

    def __init__(self, node, state: RunState, log: EpisodeLog, ok: Callable[[], bool]):
        self._state = state
        self._log = log
        self._clock = node.get_clock()
        self._ok = ok
        self._episode: dict | None = None
        self._counter = 0
        services = MutuallyExclusiveCallbackGroup()  # short callbacks
        node.create_service(SetInstruction, "~/set_instruction", self._on_set_instruction,
                            callback_group=services)
        node.create_service(StartEpisode, "~/start_episode", self._on_start_episode,
                            callback_group=services)
        node.create_service(EndEpisode, "~/end_episode", self._on_end_episode,
                            callback_group=services)
        # Reentrant: a goal's execute callback runs (and holds a thread) until the goal ends,
        # while cancel requests and new goals must still be answered.
        self._action_server = ActionServer(
            node, ExecuteTask, "~/execute_task", self._execute_task,
            goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup())

    def _on_set_instruction(self, request, response):
        response.previous_instruction = self._state.set_instruction(request.instruction,
                                                                    request.reset_queue)
        response.success = True
        response.message = ("holding: empty instruction" if not request.instruction
                            else f"following: {request.instruction}")
        return response

    def _on_start_episode(self, request, response):
        with self._state.lock:
            if self._episode is not None:
                response.success = False
                response.message = f"episode {self._episode['id']} is still running"
                response.episode_id = self._episode["id"]
                return response
            self._counter += 1
            episode_id = request.episode_id or f"ep-{self._counter:04d}-{uuid.uuid4().hex[:6]}"
            now = self._clock.now()
            episode = self._episode = {
                "id": episode_id, "instruction": request.instruction, "seed": int(request.seed),
                "start": time.monotonic(), "start_wall": time.time()}
            self._state.seed = int(request.seed)
            self._state.from_measured = True
        self._log.start(episode_id, request.instruction, request.seed, episode["start_wall"])
        self._state.set_instruction(request.instruction, reset_queue=True)
        response.success = True
        response.message = f"episode {episode_id} started, seed {request.seed}"
        response.episode_id = episode_id
        response.start_time = now.to_msg()
        return response

    def _on_end_episode(self, request, response):
        with self._state.lock:
            episode = self._episode
            if episode is None or episode["id"] != request.episode_id:
                response.recorded = False
                running = f"; running: {episode['id']!r}" if episode else "; none is running"
                response.message = f"no running episode {request.episode_id!r}{running}"
                return response
            self._episode = None
        duration = time.monotonic() - episode["start"]
        try:
            self._log.end(episode["id"], episode["instruction"], episode["seed"],
                          request.success, request.reward, request.notes,
                          episode["start_wall"], time.time(), duration)
        except OSError as exc:
            response.recorded = False
            response.message = f"episode log {self._log.path}: {exc}"
            return response
        self._state.set_instruction("", reset_queue=True)  # the episode is over: hold
        response.recorded = True
        response.duration = duration
        response.message = f"recorded in {self._log.path}"
        return response

    @staticmethod
    def _on_goal(goal):
        return GoalResponse.ACCEPT if goal.instruction else GoalResponse.REJECT

    def _execute_task(self, goal_handle):
        st = self._state
        request = goal_handle.request
        timeout = request.timeout.sec + request.timeout.nanosec * 1e-9
        st.set_instruction(request.instruction, reset_queue=True)
        start = time.monotonic()
        chunks0 = st.sequence
        result = ExecuteTask.Result()
        while True:
            elapsed = time.monotonic() - start
            if goal_handle.is_cancel_requested:
                st.set_instruction("", reset_queue=True)
                goal_handle.canceled()
                result.message = "cancelled: holding the last commanded pose"
                break
            if st.instruction != request.instruction:
                goal_handle.abort()
                result.message = f"instruction replaced by {st.instruction!r}"
                break
            if timeout > 0 and elapsed >= timeout:
                st.set_instruction("", reset_queue=True)
                goal_handle.abort()
                result.message = f"timed out after {timeout:.1f} s: holding"
                break
            if not self._ok():
                goal_handle.abort()
                result.message = "shutting down"
                break
            goal_handle.publish_feedback(ExecuteTask.Feedback(
                subtask=st.subtask, elapsed=to_duration(elapsed), latency=st.last_latency(),
                queue_depth=st.queue_depth()))
            time.sleep(FEEDBACK_PERIOD)
        result.success = False
        result.chunks = st.sequence - chunks0
        return result
