"""Unit tests of the control tick (pure numpy): plan -> safe command, or a hold."""

import numpy as np
import pytest

from clap_policy_ros.chunk_executor import ChunkExecutor, ExecutorConfig
from clap_policy_ros.control_loop import ControlLoop
from clap_policy_ros.run_state import RunState
from clap_policy_ros.safety import Box, SafetyFilter, SafetyLimits

CHUNK_LEN = 4


def make_loop(instruction="pick"):
    state = RunState(instruction=instruction)
    state.executor = ChunkExecutor(ExecutorConfig(mode="open_loop", chunk_len=CHUNK_LEN,
                                                  action_dim=14, replan_every=2))
    limits = SafetyLimits(workspace={"left": Box(high=(0.5, 1.0, 2.0)), "right": Box()},
                          max_linear_speed=0.3, dt=0.1)
    return state, ControlLoop(state, SafetyFilter(limits))


def row(x, gripper=0.5):
    out = np.zeros(14)
    out[0] = out[7] = x
    out[2] = out[9] = 0.5
    out[6] = out[13] = gripper
    return out


def chunk(*xs):
    return np.stack([row(x) for x in xs])


def never():
    raise AssertionError("the measured state is only needed before the first command")


def test_plan_rows_are_sent_in_tick_order():
    state, loop = make_loop()
    state.executor.add_chunk(chunk(0.0, 0.01, 0.02, 0.03), start_step=5)
    sent = [loop.tick(step, "", lambda: None) for step in (5, 6, 7)]
    np.testing.assert_allclose([c[0] for c in sent], [0.0, 0.01, 0.02])
    np.testing.assert_array_equal(loop.last_cmd, sent[-1])
    assert state.holding_reason == ""


def test_commands_go_through_the_safety_filter():
    state, loop = make_loop()
    state.executor.add_chunk(chunk(0.0, 0.2, 0.9, 0.9), start_step=0)
    assert loop.tick(0, "", lambda: None)[0] == 0.0
    # 0.2 m in one 0.1 s tick is over 0.3 m/s: limited to 0.03 m
    assert loop.tick(1, "", never)[0] == pytest.approx(0.03)
    # 0.9 is outside the left box (x <= 0.5) and still speed-limited from 0.03
    assert loop.tick(2, "", never)[0] == pytest.approx(0.06)


def test_first_tick_without_plan_holds_the_measured_state():
    state, loop = make_loop()
    measured = row(0.1, gripper=0.2)
    np.testing.assert_array_equal(loop.tick(1, "", lambda: measured), measured)  # no plan yet
    np.testing.assert_array_equal(loop.last_cmd, measured)
    state.executor.add_chunk(chunk(0.11, 0.12, 0.13, 0.14), start_step=2)
    # the first planned command is speed-limited against the measured state it starts from
    assert loop.tick(2, "", never)[0] == pytest.approx(0.11)


def test_nothing_to_send_before_any_command_or_state():
    state, loop = make_loop(instruction="")
    assert loop.tick(1, "", lambda: None) is None
    assert loop.last_cmd is None
    assert state.holding_reason == "no instruction"


def test_no_instruction_holds_the_last_command():
    state, loop = make_loop()
    state.executor.add_chunk(chunk(0.0, 0.01, 0.02, 0.03), start_step=0)
    first = loop.tick(0, "", lambda: None)
    state.set_instruction("", reset_queue=False)  # hold: the plan is dropped too
    np.testing.assert_array_equal(loop.tick(1, "", never), first)
    assert state.holding_reason == "no instruction"
    assert state.executor.current is None


def test_stale_camera_drops_the_plan_and_holds():
    state, loop = make_loop()
    state.executor.add_chunk(chunk(0.0, 0.01, 0.02, 0.03), start_step=0)
    first = loop.tick(0, "", lambda: None)
    held = loop.tick(1, "/cam/head (150 ms)", never)
    np.testing.assert_array_equal(held, first)
    assert state.holding_reason == "stale camera: /cam/head (150 ms)"
    assert state.executor.current is None  # a fresh camera does not resume the old plan
    np.testing.assert_array_equal(loop.tick(2, "", never), first)


def test_end_of_plan_holds_without_touching_the_reason():
    state, loop = make_loop()
    state.executor.add_chunk(chunk(0.0, 0.01, 0.02, 0.03), start_step=0)
    last = [loop.tick(step, "", lambda: None) for step in range(CHUNK_LEN)][-1]
    np.testing.assert_array_equal(loop.tick(CHUNK_LEN, "", never), last)  # beyond the chunk
    assert state.holding_reason == ""


def test_a_new_episode_starts_from_the_measured_state_not_the_last_command():
    state, loop = make_loop()
    state.executor.add_chunk(chunk(0.0, 0.03, 0.06, 0.09), start_step=0)
    for step in range(4):
        loop.tick(step, "", lambda: None)
    assert loop.last_cmd[0] == pytest.approx(0.09)  # where the last episode left its command
    # the robot is reset to x = 0.4 between episodes; the new plan starts there
    state.executor.clear()
    state.from_measured = True
    state.executor.add_chunk(chunk(0.4, 0.41, 0.42, 0.43), start_step=10)
    first = loop.tick(10, "", lambda: row(0.4))
    # without the restart the speed limit (0.03 m a tick) would give 0.12, pulling the arm back
    assert first[0] == pytest.approx(0.4)
    assert loop.tick(11, "", never)[0] == pytest.approx(0.41)  # measured is read once
    assert state.from_measured is False


def test_a_new_episode_without_a_measured_state_keeps_the_last_command_as_reference():
    state, loop = make_loop()
    state.executor.add_chunk(chunk(0.0, 0.03, 0.03, 0.03), start_step=0)
    loop.tick(0, "", lambda: None)
    loop.tick(1, "", lambda: None)
    state.from_measured = True
    state.executor.add_chunk(chunk(0.4, 0.41, 0.42, 0.43), start_step=5)
    # nothing measured: still speed-limited from the last command (0.03 + 0.03)
    assert loop.tick(5, "", lambda: None)[0] == pytest.approx(0.06)
