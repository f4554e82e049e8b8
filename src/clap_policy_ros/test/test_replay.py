"""`clap replay` over real DDS: original topics, bytes, timing and /clock; errors name the bag."""

import subprocess

import numpy as np
import pytest
from clap_train.data.recording.synthetic_bag import T0, CameraSetup, image_pattern, write_bag
from geometry_msgs.msg import PoseStamped
from ros_harness import make_checker
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

pytestmark = pytest.mark.ros
HEAD = "/astribot/camera/head/image_raw"
POSE = "/astribot/left_arm/ee_pose"


def test_replay_publishes_recording_with_its_timing(tmp_path):
    cams = {n: CameraSetup(height=24, width=32) for n in ("head", "left_wrist", "right_wrist")}
    bag = write_bag(tmp_path / "bag", duration_s=1.0, cameras=cams, state_hz=50.0)
    got = {HEAD: [], POSE: [], "/clock": [], "/clap/instruction": []}

    def record(topic):  # (when the replayer published it, s; the message)
        return lambda m, info: got[topic].append((info["source_timestamp"] * 1e-9, m))

    checker = make_checker([
        (topic, cls, record(topic))
        for topic, cls in [(HEAD, Image), (POSE, PoseStamped), ("/clock", Clock),
                           ("/clap/instruction", String)]])
    try:
        proc = subprocess.run(
            ["clap", "replay", str(bag), "--rate", "1.0", "--start-delay", "0.5",
             "--wait-for-subscribers", "30",
             "--topics", HEAD, POSE, "/clap/instruction", "--no-progress"],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "replayed 81 messages" in proc.stdout  # 30 images + 50 poses + 1 instruction
        checker.wait_for(lambda: len(got[HEAD]) == 30 and len(got[POSE]) == 50, timeout=5,
                         what=f"all replayed messages ({len(got[HEAD])}, {len(got[POSE])})")
        assert got["/clap/instruction"][0][1].data == "put the cube in the bowl"
        for i, (_, msg) in enumerate(got[HEAD]):  # bit-identical images, in order
            np.testing.assert_array_equal(
                np.frombuffer(bytes(msg.data), np.uint8).reshape(24, 32, 3),
                image_pattern(0, i, 24, 32))
        first = got[HEAD][0][1].header.stamp
        assert first.sec * 10**9 + first.nanosec == T0
        # 29 frames at 30 Hz = 0.967 s, on the replayer's publication times (DDS source
        # timestamps), not on arrival here: a stalled test process receives in bursts
        span = got[HEAD][-1][0] - got[HEAD][0][0]
        assert 0.8 < span < 1.3, span
        clock = [m.clock.sec * 10**9 + m.clock.nanosec for _, m in got["/clock"]]
        assert clock == sorted(clock) and T0 <= clock[0] and clock[-1] - T0 > 0.9e9
    finally:
        checker.close()


def test_replay_errors_name_the_bag_and_topic(tmp_path):
    missing = subprocess.run(["clap", "replay", str(tmp_path / "nope"), "--start-delay", "0"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and f"bag {tmp_path / 'nope'} does not exist" in missing.stderr
    bag = write_bag(tmp_path / "bag", duration_s=0.1)
    wrong = subprocess.run(["clap", "replay", str(bag), "--topics", "/not/there",
                            "--start-delay", "0"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "/not/there" in wrong.stderr
