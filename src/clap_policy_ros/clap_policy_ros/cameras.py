"""
The policy's cameras: one image's way from DDS to the synchronizer, and which cameras are stale.

The camera messages are the node's hot path. They are subscribed on a companion node of their
own (``<name>_cameras``, beside the policy node in the ROS graph) and read by ``CameraReader``'s
thread as they arrive, without an executor's walk over the policy node's entities or a hop to
its thread pool. Each image is converted once (encoding -> HxWx3 uint8, clap_train.data.images,
the bag converter's code) and offered to the synchronizer; when that completes a newer camera
set, ``on_new_set`` wakes the inference worker. Topics, message types and each camera's
``max_age_s`` come from the topic contract (remap a topic to move it).
"""

from __future__ import annotations

import time
from typing import Callable

import rclpy
from clap_train.data.images import ImageEncodingError, message_to_rgb
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from .camera_reader import CameraReader
from .conversions import stamp_seconds
from .synchronizer import FreshestSetSynchronizer


def message_class(type_name: str):
    """Return the message class of a contract camera type (Image or CompressedImage)."""
    return CompressedImage if type_name.endswith("/CompressedImage") else Image


def stale_cameras(ages: dict[str, float], max_age: dict[str, float], topics: dict[str, str],
                  problems: dict[str, str]) -> str:
    """Name the cameras older than their ``max_age`` (age -1: none yet) and why; "" if none."""
    bad = [f"{topics[k]} ({'none' if a < 0 else f'{a * 1000:.0f} ms'}"
           + (f"; {problems[topics[k]]})" if topics[k] in problems else ")")
           for k, a in ages.items() if a < 0 or a > max_age[k]]
    return ", ".join(bad)


class CameraIntake:
    """
    Subscribe the contract's ``cameras`` (name, topic and message type of each, in order).

    ``on_bad_image(topic, error)``: an image that cannot be converted (it is skipped);
    ``on_new_set()``: the synchronizer has a newer complete set.
    """

    def __init__(self, parent, cameras, sync: FreshestSetSynchronizer,
                 now: Callable[[], float], on_new_set: Callable[[], None],
                 on_bad_image: Callable[[str, Exception], None]):
        self.topics = {c.name: c.topic for c in cameras}
        self._sync = sync
        self._now = now
        self._on_new_set = on_new_set
        self._on_bad_image = on_bad_image
        self._node = rclpy.create_node(
            f"{parent.get_name()}_cameras", namespace=parent.get_namespace(),
            context=parent.context, start_parameter_services=False, enable_rosout=False,
            parameter_overrides=[Parameter("start_type_description_service", value=False)])
        self._reader = CameraReader(
            self._node,
            [(message_class(c.type), c.topic,
              lambda m, n=c.name, t=c.topic: self._on_image(n, t, m)) for c in cameras],
            qos_profile_sensor_data,
            on_error=lambda exc: parent.get_logger().error(f"camera intake stopped: {exc}"))

    def _on_image(self, name: str, topic: str, msg) -> None:
        try:
            rgb = message_to_rgb(msg)
        except (ImageEncodingError, ValueError) as exc:
            self._on_bad_image(topic, exc)
            return
        if self._sync.offer(name, stamp_seconds(msg.header.stamp), (rgb, msg.header.stamp),
                            now=self._now(), received=time.monotonic()):
            self._on_new_set()

    def stale(self, now: float, problems: dict[str, str]) -> str:
        """Name the stale cameras (with the input ``problems`` known for their topics)."""
        return stale_cameras(self._sync.ages(now), self._sync.max_age, self.topics, problems)

    def stop(self) -> None:
        """Stop the reader thread and destroy the companion node."""
        self._reader.stop()
        self._node.destroy_node()
