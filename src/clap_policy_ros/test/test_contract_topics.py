"""The node subscribes and publishes what its topic contract says, and a remapping moves a topic.

A second contract file (other camera topics, one CompressedImage camera, other output topics)
is given to the node through ``contract_file``; one camera and one output are also remapped on
the command line. The ROS graph must show exactly those topics with those types.
"""

import dataclasses

import pytest
from clap_train.data.contract import OutputSpec
from ros_harness import (CONTRACT, make_checker, start_policy_node, stop_process,
                         write_contract, write_fake_model)

pytestmark = pytest.mark.ros

COMPRESSED = "sensor_msgs/msg/CompressedImage"


def test_node_takes_its_topics_from_the_contract_file_and_remapping(tmp_path):
    cameras = [dataclasses.replace(c, topic=f"/other/{c.name}") for c in CONTRACT.cameras]
    cameras[1] = dataclasses.replace(cameras[1], type=COMPRESSED)
    outputs = OutputSpec(action_chunk="/other/chunk", status="/other/status",
                         markers="/other/markers", path="/other/{arm}/path")
    contract = write_contract(tmp_path / "other.yaml", cameras=cameras, outputs=outputs)
    proc = start_policy_node(
        tmp_path, ros_args=["-r", "/other/head:=/moved/head", "-r", "/other/status:=/moved/status"],
        model_dir=str(write_fake_model(tmp_path / "model")), policy_class="fake_policy:FakePolicy",
        contract_file=str(contract), autostart=True)
    checker = make_checker()
    try:
        checker.wait_for(lambda: checker.state() == "active", timeout=120, what="node active")

        def readers(topic):
            return {(i.node_name, i.topic_type) for i in checker.get_subscriptions_info_by_topic(topic)}

        def writers(topic):
            return {(i.node_name, i.topic_type) for i in checker.get_publishers_info_by_topic(topic)}

        image = "sensor_msgs/msg/Image"
        expected = {
            ("readers", "/moved/head"): {("clap_policy_cameras", image)},
            ("readers", "/other/left_wrist"): {("clap_policy_cameras", COMPRESSED)},
            ("readers", "/other/right_wrist"): {("clap_policy_cameras", image)},
            ("writers", "/moved/status"): {("clap_policy", "clap_msgs/msg/PolicyStatus")},
            ("writers", "/other/chunk"): {("clap_policy", "clap_msgs/msg/ActionChunk")},
            ("writers", "/other/markers"): {("clap_policy", "visualization_msgs/msg/MarkerArray")},
            **{("writers", f"/other/{arm.name}/path"): {("clap_policy", "nav_msgs/msg/Path")}
               for arm in CONTRACT.action.arms}}

        def graph():
            return {(kind, topic): {"readers": readers, "writers": writers}[kind](topic)
                    for kind, topic in expected}

        # DDS discovery can report an endpoint before the name of its node, which the graph
        # learns from the participant's ros_discovery_info message: until then the node is
        # "_NODE_NAME_UNKNOWN_" (seen once in 7 runs under load). Wait for the whole graph.
        try:
            checker.wait_for(lambda: graph() == expected, what="the node's entities in the graph")
        except AssertionError:
            pass
        assert graph() == expected
        assert not readers("/other/head")
        for default in CONTRACT.cameras:
            assert not readers(default.topic)
        for arm in CONTRACT.action.arms:
            assert ("clap_policy", "geometry_msgs/msg/PoseStamped") in writers(arm.pose.topic)
        default_outputs = CONTRACT.node_outputs()
        for topic in (default_outputs.status, default_outputs.action_chunk, default_outputs.markers):
            assert not {w for w in writers(topic) if w[0] == "clap_policy"}
    finally:
        checker.close()
        stop_process(proc)
