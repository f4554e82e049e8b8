"""Unit tests of the policy node's parts that need no DDS: parameters, commands, shared state."""

import dataclasses
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
from clap_msgs.msg import PolicyStatus
from clap_train.data.contract import load_contract
from clap_train.interface import DEFAULT_LAYOUT, ActionLayout, Policy, Prediction
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Float64, Header

from clap_policy_ros.cameras import stale_cameras
from clap_policy_ros.chunk_executor import ExecutorConfig
from clap_policy_ros.commands import CommandPublisher, command_messages
from clap_policy_ros.parameters import (PARAMETERS, NodeParams, live_change_problem,
                                        load_node_contract)
from clap_policy_ros.robot_state import RobotState
from clap_policy_ros.run_state import RunState
from clap_policy_ros.status import policy_state
from clap_policy_ros.synchronizer import FreshestSetSynchronizer


def defaults(**overrides):
    values = {name: default for name, (default, _, _) in PARAMETERS.items()}
    values.update(overrides)
    return values


def test_node_params_cover_every_parameter_and_build_the_parts():
    assert [f.name for f in dataclasses.fields(NodeParams)] == list(PARAMETERS)
    assert NodeParams.read(defaults().__getitem__) == NodeParams()  # the declared defaults are the fields'
    p = NodeParams.read(defaults(control_rate_hz=20, replan_every=4).__getitem__)
    assert p.dt == pytest.approx(0.05) and isinstance(p.control_rate_hz, float)
    assert p.workspace_max == (1.0, 1.0, 2.0, 1.0, 1.0, 2.0)
    limits = p.safety_limits()
    assert limits.dt == pytest.approx(0.05) and limits.workspace["right"].high == (1.0, 1.0, 2.0)
    # 3 values per arm, in the layout's order
    boxes = NodeParams.read(defaults(workspace_min=[0, 0, 0, -1, -1, -1], workspace_max=[1, 1, 1, 0, 0, 0])
                            .__getitem__).safety_limits(ActionLayout(("right", "left"))).workspace
    assert boxes["right"].high == (1.0, 1.0, 1.0) and boxes["left"].low == (-1.0, -1.0, -1.0)
    with pytest.raises(ValueError, match=r"3 values per arm \(left, right\): 6, got 3 and 6"):
        dataclasses.replace(p, workspace_min=(0.0, 0.0, 0.0)).safety_limits()
    config = p.executor_config(chunk_len=16, action_dim=14)
    assert (config.mode, config.chunk_len, config.replan_every) == ("temporal_ensemble", 16, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.mode = "ntp"


def test_node_contract_needs_outputs_and_a_max_age_per_camera(tmp_path):
    contract = load_contract()
    assert load_node_contract("").outputs == contract.outputs
    bad = tmp_path / "no_outputs.yaml"
    bad.write_text(dataclasses.replace(contract, outputs=None).to_yaml())
    with pytest.raises(ValueError, match="no outputs: section"):
        load_node_contract(str(bad))
    ageless = dataclasses.replace(contract.cameras[1], max_age_s=None)
    bad.write_text(dataclasses.replace(
        contract, cameras=[contract.cameras[0], ageless, *contract.cameras[2:]]).to_yaml())
    with pytest.raises(ValueError, match=r"\['left_wrist'\] have no max_age_s"):
        load_node_contract(str(bad))


def test_live_changes_are_checked():
    param = types.SimpleNamespace
    assert live_change_problem([param(name="mode", value="ntp")]) is None
    assert live_change_problem([param(name="mode", value="fast")]) == "mode='fast' is not allowed"
    assert "sync_slop" in live_change_problem([param(name="seed", value=3),
                                               param(name="sync_slop", value=-0.1)])


def test_command_messages_per_arm():
    command = np.array([0.1, 0.2, 0.3, 0.0, 0.0, np.pi / 2, 0.04,
                        -0.1, -0.2, 0.5, 0.0, 0.0, 0.0, 0.07])
    msgs = command_messages(Header(frame_id="base_link"), command)
    left_pose, left_gripper = msgs["left"]
    p, q = left_pose.pose.position, left_pose.pose.orientation
    assert (p.x, p.y, p.z) == (0.1, 0.2, 0.3) and left_pose.header.frame_id == "base_link"
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)],
                               atol=1e-12)
    assert left_gripper.data == 0.04 and msgs["right"][1].data == 0.07
    assert msgs["right"][0].pose.position.z == 0.5
    swapped = command_messages(Header(), command, ActionLayout(("right", "left")))
    assert swapped["right"][1].data == 0.04 and swapped["left"][0].pose.position.z == 0.5


def test_the_parts_take_the_contracts_layout():
    layout = load_contract().action.layout
    assert layout == DEFAULT_LAYOUT
    config = NodeParams.read(defaults().__getitem__).executor_config(16, layout.dim, layout)
    assert list(config.angle_dims) == [3, 4, 5, 10, 11, 12] == list(ExecutorConfig().angle_dims)
    one_arm = ActionLayout(("arm",))
    config = NodeParams.read(defaults().__getitem__).executor_config(16, 7, one_arm)
    assert config.angle_dims == (3, 4, 5)


def test_robot_state_is_the_layouts_vector():
    def pose(x):
        msg = PoseStamped()
        msg.pose.position.x, msg.pose.orientation.w = x, 1.0
        return msg

    state = RobotState(layout=ActionLayout(("right", "left")))
    state.set_pose("left", pose(0.1))
    state.set_gripper("left", Float64(data=0.2))
    assert state.vector() is None  # the right arm not heard from yet
    state.set_pose("right", pose(0.3))
    state.set_gripper("right", Float64(data=0.4))
    np.testing.assert_allclose(state.vector(),
                               [0.3, 0, 0, 0, 0, 0, 0.4, 0.1, 0, 0, 0, 0, 0, 0.2])
    assert RobotState().layout == DEFAULT_LAYOUT and RobotState(enabled=False).vector() is None


def test_the_node_and_the_fake_policy_load_neither_torch_nor_transformers():
    code = ("import sys, clap_policy_ros.node, fake_policy; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=pathlib.Path(__file__).parent)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_fake_policy_is_a_policy_of_the_interface():
    from fake_policy import FakePolicy

    fake = FakePolicy({"sleep": 0.0})
    assert isinstance(fake, Policy)
    assert ActionLayout.from_names(fake.action_names) == DEFAULT_LAYOUT
    pred = fake.predict({"head": np.zeros((4, 4, 3), np.uint8)}, "go", seed=1)
    assert type(pred) is Prediction and pred.actions.shape == (16, 14)


def test_command_publisher_sends_pose_then_gripper_per_arm():
    sent = []

    class Pub:
        def __init__(self, topic):
            self.topic = topic

        def publish(self, msg):
            sent.append((self.topic, msg))

    arms = [types.SimpleNamespace(name=a, pose=types.SimpleNamespace(topic=f"/{a}/pose"),
                                  gripper=types.SimpleNamespace(topic=f"/{a}/gripper"))
            for a in ("left", "right")]
    clock = types.SimpleNamespace(now=lambda: types.SimpleNamespace(
        to_msg=lambda: Header().stamp))
    CommandPublisher(lambda cls, topic: Pub(topic), arms, "base_link", clock).publish(
        np.zeros(14))
    assert [t for t, _ in sent] == ["/left/pose", "/left/gripper", "/right/pose", "/right/gripper"]


def test_run_state_instruction_and_subtask():
    st = RunState(instruction="a")
    assert st.note_subtask("reach") == ("a", "reach", 0)
    assert st.note_subtask("reach") is None
    assert st.note_subtask("grasp") == ("a", "grasp", 1)
    assert st.set_instruction("b", reset_queue=False) == "a"
    assert (st.subtask, st.subtask_index) == ("", 0)  # the old subtask belonged to "a"
    assert st.advance() == 1 and st.advance() == 2
    assert st.queue_depth() == 0 and st.last_latency() == 0.0


def test_offer_tells_when_a_newer_complete_set_exists():
    sync = FreshestSetSynchronizer(("a", "b"), slop=0.01, max_age=1.0)
    assert not sync.offer("a", 0.0, 1, now=0.0)
    assert sync.offer("b", 0.001, 2, now=0.0)  # completes the first set
    assert not sync.offer("a", 0.05, 3, now=0.06)  # no "b" within slop: same freshest set
    assert sync.offer("b", 0.051, 4, now=0.06)
    assert not sync.offer("b", 0.051, 5, now=0.06)  # a duplicate stamp completes nothing new


def test_stale_cameras_are_named_with_known_problems():
    topics = {"head": "/head", "wrist": "/wrist"}
    max_age = {"head": 0.1, "wrist": 0.3}
    assert stale_cameras({"head": 0.05, "wrist": 0.25}, max_age, topics, {}) == ""
    text = stale_cameras({"head": -1.0, "wrist": 0.35}, max_age, topics, {"/head": "wrong type"})
    assert text == "/head (none; wrong type), /wrist (350 ms)"


def test_policy_state():
    assert policy_state("predict failed: x", True, "a", "") == PolicyStatus.STATE_ERROR
    assert policy_state("", False, "a", "") == PolicyStatus.STATE_IDLE
    assert policy_state("", True, "", "") == PolicyStatus.STATE_IDLE
    assert policy_state("chunk rejected", True, "a", "x") == PolicyStatus.STATE_HOLDING
    assert policy_state("", True, "a", "") == PolicyStatus.STATE_RUNNING


def test_load_policy_names_a_bad_model_dir_before_importing_and_then_a_bad_class(tmp_path):
    from clap_policy_ros.inference_worker import load_policy

    log = types.SimpleNamespace(info=lambda _: None)
    missing = tmp_path / "missing"
    # the path is checked first: a module that does not exist is never imported
    with pytest.raises(FileNotFoundError, match=f"model_dir {missing} is not a directory"):
        load_policy("no_such_module:Policy", str(missing), "cpu", log)
    with pytest.raises(ValueError, match="model_dir is empty"):
        load_policy("no_such_module:Policy", "", "cpu", log)
    with pytest.raises(RuntimeError, match="policy_class 'no_such_module:Policy' cannot be imported"):
        load_policy("no_such_module:Policy", str(tmp_path), "cpu", log)
