"""
What the node publishes per accepted chunk: the ActionChunk, its RViz views and the subtask.

The ActionChunk is stamped with the observation's (camera) stamp and carries the model's
``inference_latency`` and the node's ``pipeline_latency`` (observation stamp -> publication);
their difference is the node's own overhead. Then the markers and a Path per arm
(visualization.py), and a Subtask when the policy's subtask changed (when the contract names a
subtask topic). The topics are the contract's (``outputs:`` and ``subtask``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from clap_msgs.msg import ActionChunk, Subtask
from clap_train.data.contract import OutputSpec
from clap_train.interface import ActionLayout, Prediction
from nav_msgs.msg import Path
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from .conversions import stamp_seconds, to_duration
from .visualization import chunk_markers, chunk_paths


class ChunkPublisher:
    """
    Builds and publishes the messages of one chunk.

    ``create_publisher(msg class, topic)`` makes the publishers; ``layout``: the chunk's arms
    (one Path each); ``outputs``: the contract's output topics; ``subtask_topic``: None = no
    Subtask messages; ``now()``: the node's clock (s).
    """

    def __init__(self, create_publisher: Callable, layout: ActionLayout, outputs: OutputSpec,
                 subtask_topic: str | None, frame_id: str, dt: float, action_names,
                 gripper_range: tuple[float, float], now: Callable[[], float]):
        self._layout = layout
        self._paths = {arm: create_publisher(Path, outputs.path_topic(arm))
                       for arm in layout.arms}
        self._chunk = create_publisher(ActionChunk, outputs.action_chunk)
        self._markers = create_publisher(MarkerArray, outputs.markers)
        self._subtask = (create_publisher(Subtask, subtask_topic)
                         if subtask_topic is not None else None)
        self._frame_id = frame_id
        self._dt = dt
        self._action_names = list(action_names)
        self._gripper_range = gripper_range
        self._now = now

    def message(self, actions: np.ndarray, prediction: Prediction, obs_stamp,
                sequence: int) -> ActionChunk:
        """Build the ActionChunk of ``prediction`` (its pipeline latency is set on publish)."""
        header = Header(frame_id=self._frame_id, stamp=obs_stamp)  # the camera's own stamp
        return ActionChunk(header=header, step_period=to_duration(self._dt),
                           horizon=actions.shape[0], action_dim=actions.shape[1],
                           dimension_names=list(self._action_names),
                           data=actions.astype(np.float32).ravel().tolist(),
                           source=str(prediction.mode),
                           inference_latency=to_duration(prediction.latency),
                           sequence=sequence)

    def publish(self, msg: ActionChunk, actions: np.ndarray,
                subtask: tuple[str, str, int] | None) -> None:
        """Publish the chunk, markers and paths; ``subtask``: (instruction, subtask, index)."""
        header = msg.header
        msg.pipeline_latency = to_duration(self._now() - stamp_seconds(header.stamp))
        self._chunk.publish(msg)
        self._markers.publish(chunk_markers(actions, header, *self._gripper_range,
                                            layout=self._layout))
        for arm, path in chunk_paths(actions, header, self._layout).items():
            self._paths[arm].publish(path)
        if subtask is not None and self._subtask is not None:
            instruction, text, index = subtask
            self._subtask.publish(Subtask(header=header, instruction=instruction, subtask=text,
                                          index=index))
