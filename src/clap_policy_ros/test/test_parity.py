"""Bag-live parity: a bag replayed through the node gives the chunks that ClapPolicy.predict gives.

ClapPolicy.predict runs on the frames the converter extracts from the same bag.

Real pieces only: a tiny random-weight ClapPolicy (make_tiny_policy), `clap convert` on the bag,
`clap replay` of the bag over DDS (with /clock, node on sim time), the policy node in its own
process. For every ActionChunk the node publishes (open-loop executor, so no RTC prefix), the
converter frame whose three camera messages carry the chunk's observation stamp is looked up
through the converter's own alignment (read_bag + align_episode) and image decoding
(iter_images, the pixels it encodes), and predict on them must give the same values.
State is off in this test: the node feeds the newest state message, the converter the one at the
frame time, which differ by design.
"""

import subprocess
import time

import numpy as np
import pytest
from clap_msgs.msg import ActionChunk
from clap_train.data.recording.align import align_episode
from clap_train.data.recording.bagread import iter_images, read_bag
from clap_train.data.contract import load_contract
from clap_train.data.recording.synthetic_bag import CameraSetup, write_bag
from clap_train.policy import ClapPolicy
from clap_train.testing import make_tiny_policy
from ros_harness import OUTPUTS, make_checker, start_policy_node, stop_process, write_contract

pytestmark = pytest.mark.ros


def test_bag_replayed_through_node_matches_predict_on_converted_frames(tmp_path):
    contract = load_contract()
    cams = {c.name: CameraSetup(height=48, width=64) for c in contract.cameras}
    bag = write_bag(tmp_path / "episode_0", duration_s=3.0, cameras=cams, state_hz=30.0)
    model = make_tiny_policy(tmp_path / "policy", seed=3, image_size=64)
    conv = subprocess.run(["clap", "convert", str(bag), "--out", str(tmp_path / "dataset"),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert conv.returncode == 0, conv.stderr

    chunks = []
    checker = make_checker([(OUTPUTS.action_chunk, ActionChunk, chunks.append)])
    slow = write_contract(tmp_path / "contract.yaml", max_age_s=0.2)  # replayed at half speed
    proc = start_policy_node(tmp_path, model_dir=str(model), executor="open_loop",
                             replan_every=6, use_state=False, use_sim_time=True, autostart=True,
                             seed=11, contract_file=str(slow))
    try:
        checker.wait_for(lambda: checker.state() == "active", timeout=120, what="node active")
        topics = [c.topic for c in contract.cameras] + [contract.instruction.topic]
        replay = subprocess.run(
            ["clap", "replay", str(bag), "--rate", "0.5", "--start-delay", "0.5",
             "--wait-for-subscribers", "30", "--topics", *topics, "--no-progress"],
            capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stderr
        time.sleep(1.0)
    finally:
        checker.close()
        stop_process(proc)
    assert len(chunks) >= 3, (tmp_path / "node.log").read_text()[-2000:]

    # the converter's frames: its alignment picks one message per camera per frame
    contents = read_bag(bag, contract)
    aligned = align_episode(contents, contract)
    stamps = {name: contents.images[name].stamps for name in cams}
    frames = {name: dict(iter_images(bag, contract, name, aligned.image_index[name]))
              for name in cams}
    policy = ClapPolicy.load(model, warmup=False)
    matched = 0
    for chunk in chunks:
        obs_ns = chunk.header.stamp.sec * 10**9 + chunk.header.stamp.nanosec
        ks = [k for k in range(len(aligned.frame_times))
              if all(stamps[n][aligned.image_index[n][k]] == obs_ns for n in cams)]
        if not ks:
            continue  # a set the converter's grid did not pick (e.g. after the last frame)
        k = ks[0]
        images = {n: frames[n][int(aligned.image_index[n][k])] for n in cams}
        expected = policy.predict(images, aligned.instruction[k], None, mode="rf",
                                  seed=11 + chunk.sequence).actions
        got = np.asarray(chunk.data, np.float32).reshape(chunk.horizon, chunk.action_dim)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        matched += 1
    assert matched >= 3, f"only {matched} of {len(chunks)} chunks matched converter frames"
