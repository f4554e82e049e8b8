"""CameraReader over real DDS: each topic reaches its callback; stop() returns promptly."""

import time

import pytest
import rclpy
from clap_policy_ros.camera_reader import CameraReader
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros


def test_reader_delivers_each_topic_and_stops_on_its_guard():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("reader_under_test", context=context)
    sender = rclpy.create_node("reader_sender", context=context)
    got = {"a": [], "b": []}
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    reader = CameraReader(node, [(Image, "/cam_a", got["a"].append),
                                 (Image, "/cam_b", got["b"].append)], qos)
    try:
        pubs = {k: sender.create_publisher(Image, f"/cam_{k}", qos) for k in got}
        deadline = time.monotonic() + 10
        while any(p.get_subscription_count() == 0 for p in pubs.values()):
            assert time.monotonic() < deadline, "the reader's subscriptions were not discovered"
            time.sleep(0.05)
        for i in range(5):
            for k, pub in pubs.items():
                pub.publish(Image(height=1, width=i + 1, encoding=f"rgb8{k}"))
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while min(len(v) for v in got.values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        for k, msgs in got.items():
            assert [m.width for m in msgs] == [1, 2, 3, 4, 5]
            assert all(m.encoding == f"rgb8{k}" for m in msgs)
    finally:
        t0 = time.monotonic()
        reader.stop()  # no message pending: the guard condition must wake the wait
        stopped = time.monotonic() - t0
        sender.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert stopped < 1.0 and not reader._thread.is_alive()
