"""The policy node over real DDS: lifecycle, values, safety cases, services and the action.

One policy_node process (with the FakePolicy test double, so a NaN chunk can be provoked) is
shared by the tests of this module, which run in file order; a second short-lived process
checks that a bad model_dir fails configure with an error naming it.
"""

import json
import time

import numpy as np
import pytest
from action_msgs.msg import GoalStatus
from clap_msgs.action import ExecuteTask
from clap_msgs.msg import PolicyStatus
from clap_msgs.srv import EndEpisode, SetInstruction, StartEpisode
from fake_policy import FakePolicy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from ros_harness import (CAMERAS, CONTRACT, LEFT_TARGET, OUTPUTS, make_checker,
                         start_policy_node, stop_process, write_fake_model)

pytestmark = pytest.mark.ros

LEFT = LEFT_TARGET


def position(msg):
    p = msg.pose.position
    return np.array([p.x, p.y, p.z])


def stamp_of(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def duration(d):
    return d.sec + d.nanosec * 1e-9


def poses_published_after(env, wall_time):
    """Left targets the node stamped (its wall clock) after ``wall_time``: not delivery time."""
    return [position(m) for _, m in env.messages(LEFT) if stamp_of(m) > wall_time]


def held_poses(env, wall_time, count):
    """Wait for ``count`` left targets stamped after ``wall_time``; return their positions."""
    return np.stack([position(m) for m in env.stamped_after(LEFT, wall_time, count)])


def wait_status(env, predicate, since, what):
    """Wait for a PolicyStatus received after ``since`` (monotonic) that satisfies predicate."""
    return env.wait_for(lambda: next((m for _, m in reversed(env.messages(OUTPUTS.status, since))
                                      if predicate(m)), None), what=what)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node")
    model = write_fake_model(tmp / "model")
    proc = start_policy_node(tmp, model_dir=str(model),
                             policy_class="fake_policy:FakePolicy", executor="open_loop",
                             replan_every=8, seed=0,
                             workspace_max=[0.9, 0.8, 0.45, 0.9, 0.0, 1.6])
    checker = make_checker()
    checker.set_instruction = checker.create_client(SetInstruction, "/clap_policy/set_instruction")
    checker.start_episode = checker.create_client(StartEpisode, "/clap_policy/start_episode")
    checker.end_episode = checker.create_client(EndEpisode, "/clap_policy/end_episode")
    checker.set_params = checker.create_client(SetParameters, "/clap_policy/set_parameters")
    checker.action = ActionClient(checker, ExecuteTask, "/clap_policy/execute_task")
    checker.tmp = tmp
    checker.proc = proc
    # the process answers once Python and rclpy are up: 1.5-3.8 s measured, a single 10 s
    # get_state call in the first test was the only wait for it
    checker.wait_for(checker.state, timeout=120, what="the node's lifecycle services")
    yield checker
    checker.close()
    stop_process(proc)


def instruct(env, text, reset=True):
    return env.call(env.set_instruction, SetInstruction.Request(instruction=text,
                                                                reset_queue=reset))


def test_configure_activate_and_chunk_values(env):
    assert env.state() == "unconfigured"
    assert env.transition("configure")
    assert env.state() == "inactive"
    assert env.transition("activate")
    assert env.state() == "active"
    env.publishing = True
    t0 = time.monotonic()
    response = instruct(env, "pick the cube")
    assert response.success and response.previous_instruction == ""
    _, chunk = env.wait_for(lambda: (env.messages(OUTPUTS.action_chunk, t0) or [None])[-1],
                            what="an ActionChunk")
    data = np.asarray(chunk.data, dtype=np.float32).reshape(chunk.horizon, chunk.action_dim)
    # the chunk is FakePolicy's output for the head image (value 100) and seed 0 + sequence
    np.testing.assert_allclose(data, FakePolicy.expected(100.0, chunk.sequence), atol=1e-6)
    assert chunk.dimension_names[0] == "left_x" and chunk.source == "rf"
    # observation -> publish covers the model's time and the node's own share
    pipeline, model = (d.sec + d.nanosec * 1e-9
                       for d in (chunk.pipeline_latency, chunk.inference_latency))
    assert model >= 0.02 and pipeline > model, (pipeline, model)
    assert abs(chunk.step_period.nanosec - 1e9 / 30) < 1e3
    env.wait_for(lambda: any(m.subtask == "subtask of pick the cube"
                             for _, m in env.messages(CONTRACT.subtask.topic, t0)), what="Subtask")
    # targets at the control rate, clamped to the configured left workspace (z <= 0.45)
    poses = env.stamped_after(LEFT, stamp_of(chunk), 30)
    # The node's own stamps give its control period; arrival times at the checker would add the
    # checker's delivery jitter (callbacks run in bursts when the test process is busy), and the
    # median keeps one late tick on a busy machine from deciding it.
    period = np.median(np.diff([stamp_of(m) for m in poses]))
    assert 0.020 <= period <= 0.050, period
    assert all(position(m)[2] <= 0.45 + 1e-9 for m in poses)
    assert any(abs(position(m)[0] - 0.3) < 0.02 for m in poses)
    status = wait_status(env, lambda m: m.policy_state == PolicyStatus.STATE_RUNNING, t0,
                         "a status reporting RUNNING")
    assert status.lifecycle_state == "active"
    assert status.instruction == "pick the cube" and len(status.cameras) == 3


def test_parameters_read_only_where_unsafe(env):
    def set_param(name, value):
        v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value) \
            if isinstance(value, float) else ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value=value)
        req = SetParameters.Request(parameters=[Parameter(name=name, value=v)])
        return env.call(env.set_params, req).results[0]

    refused = set_param("max_linear_speed", 5.0)
    assert not refused.successful and "read-only" in refused.reason
    assert set_param("mode", "ntp").successful
    assert not set_param("mode", "fast").successful
    assert set_param("mode", "rf").successful


def test_nan_chunk_is_rejected_and_pose_held(env):
    t0 = time.monotonic()
    instruct(env, "make nan")
    wall1 = time.time()  # from here on every chunk the model makes has a NaN
    status = wait_status(env, lambda m: "non-finite" in m.last_error, t0,
                         "status reporting the rejected chunk")
    assert status.policy_state == PolicyStatus.STATE_HOLDING
    poses = held_poses(env, wall1, 15)
    assert np.ptp(poses, axis=0).max() == 0.0  # one pose, held
    # no chunk observed after the instruction went out (a chunk's stamp is its camera stamp)
    assert not [m for _, m in env.messages(OUTPUTS.action_chunk) if stamp_of(m) > wall1]


def test_bad_image_is_skipped_with_log_naming_topic(env):
    instruct(env, "pick the cube")
    env.bad_topic = CAMERAS["head"]
    log_file = env.tmp / "node.log"
    env.wait_for(lambda: f"{CAMERAS['head']}: image skipped" in log_file.read_text(),
                 what="a log line naming the bad topic")
    time.sleep(1.0)
    log = log_file.read_text()
    assert "yuv422" in log
    # throttled: ~1 s of bad frames at 30 Hz gives one or two lines, not 30
    assert log.count("image skipped") <= 2
    # the skipped camera is not used: the head goes stale and the node holds
    wait_status(env, lambda m: m.policy_state == PolicyStatus.STATE_HOLDING
                and f"stale camera: {CAMERAS['head']}" in m.last_error, time.monotonic(),
                "a status holding on the stale head camera")
    env.bad_topic = None
    t1 = time.monotonic()
    env.wait_for(lambda: env.messages(OUTPUTS.action_chunk, t1), what="chunks after recovery")


def test_publisher_of_the_wrong_type_is_named(env):
    import rclpy
    from sensor_msgs.msg import CompressedImage

    context = rclpy.Context()  # a participant of its own: DDS allows one type per topic each
    rclpy.init(context=context)
    node = rclpy.create_node("wrong_camera", context=context)
    try:
        node.create_publisher(CompressedImage, CAMERAS["head"], 10)
        log_file = env.tmp / "node.log"
        expected = (f"{CAMERAS['head']}: publisher /wrong_camera sends "
                    "sensor_msgs/msg/CompressedImage, this node subscribes with "
                    "sensor_msgs/msg/Image")
        env.wait_for(lambda: expected in log_file.read_text(), timeout=15,
                     what="a log line naming the topic and both message types")
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_stale_camera_holds_within_200ms(env):
    instruct(env, "pick the cube")
    t0 = time.monotonic()
    _, chunk = env.wait_for(lambda: (env.messages(OUTPUTS.action_chunk, t0) or [None])[-1],
                            what="chunks flowing")
    moving = held_poses(env, stamp_of(chunk), 8)
    assert np.ptp(moving, axis=0).max() > 0  # the arm was moving
    # the stamp of the last camera set sent: time.time() here would be up to one camera period
    # (or a stall of the camera thread) early, as a set may be on its way when publishing stops
    t_stop, m_stop = env.stop_cameras(), time.monotonic()
    held = held_poses(env, t_stop + 0.2, 15)  # every target from 200 ms after the last camera
    assert np.ptp(held, axis=0).max() == 0.0  # one pose, held
    wait_status(env, lambda m: m.policy_state == PolicyStatus.STATE_HOLDING
                and "stale camera" in m.last_error and not any(c.fresh for c in m.cameras),
                m_stop, "a status holding on stale cameras")
    env.publishing = True
    t1 = time.monotonic()
    env.wait_for(lambda: env.messages(OUTPUTS.action_chunk, t1), what="chunks after recovery")


def test_episode_services_and_log(env):
    start = env.call(env.start_episode, StartEpisode.Request(instruction="stack", seed=7))
    assert start.success and start.episode_id
    again = env.call(env.start_episode, StartEpisode.Request(instruction="other", seed=1))
    assert not again.success and start.episode_id in again.message
    wrong = env.call(env.end_episode, EndEpisode.Request(episode_id="nope"))
    assert not wrong.recorded and "'nope'" in wrong.message
    time.sleep(0.2)
    end = env.call(env.end_episode, EndEpisode.Request(
        episode_id=start.episode_id, success=True, reward=2.5, notes="clean"))
    assert end.recorded and end.duration >= 0.2
    records = [json.loads(x) for x in (env.tmp / "episodes.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "end"]
    expected = {"episode_id": start.episode_id, "instruction": "stack", "seed": 7,
                "success": True, "reward": 2.5, "notes": "clean"}
    assert {k: records[1][k] for k in expected} == expected
    assert records[1]["end_time"] - records[1]["start_time"] >= 0.2
    assert instruct(env, "pick the cube").previous_instruction == ""  # ended -> hold


def wait_future(env, future, timeout=10.0):
    env.wait_for(future.done, timeout, what="action future")
    return future.result()


def test_execute_task_feedback_and_cancel_holds(env):
    assert env.action.wait_for_server(timeout_sec=10)
    rejected = wait_future(env, env.action.send_goal_async(ExecuteTask.Goal(instruction="")))
    assert not rejected.accepted
    feedback = []
    handle = wait_future(env, env.action.send_goal_async(
        ExecuteTask.Goal(instruction="wipe the table"), feedback_callback=feedback.append))
    assert handle.accepted
    env.wait_for(lambda: any(f.feedback.subtask == "subtask of wipe the table"
                             for f in feedback), what="feedback with the goal's subtask")
    assert len(feedback) >= 2 and feedback[-1].feedback.latency > 0
    wait_future(env, handle.cancel_goal_async())
    result = wait_future(env, handle.get_result_async())
    assert result.status == GoalStatus.STATUS_CANCELED
    assert "holding" in result.result.message and result.result.chunks >= 1
    t0, m0 = time.time(), time.monotonic()
    assert np.ptp(held_poses(env, t0, 15), axis=0).max() == 0.0
    wait_status(env, lambda m: m.instruction == "", m0, "a status with no instruction")


def test_deactivate_stops_inference_then_holds_last(env):
    instruct(env, "pick the cube")
    t0 = time.monotonic()
    env.wait_for(lambda: env.messages(OUTPUTS.action_chunk, t0), what="chunks")
    time.sleep(0.3)
    assert env.transition("deactivate")
    wall_done = time.time()
    time.sleep(0.6)  # what the node sent after the transition would have arrived by now
    poses = env.messages(LEFT)
    assert not poses_published_after(env, wall_done)  # the hold was the last one
    # no chunk published after the transition returned, by the node's clock (stamp + pipeline
    # latency = publication), not by arrival here, which a stalled test process delays
    assert not [m for _, m in env.messages(OUTPUTS.action_chunk)
                if stamp_of(m) + duration(m.pipeline_latency) > wall_done]
    last, before = position(poses[-1][1]), position(poses[-2][1])
    np.testing.assert_array_equal(last, before)  # the hold repeats the last command
    assert env.state() == "inactive"
    assert env.transition("cleanup")
    assert env.state() == "unconfigured"
    assert env.transition("configure") and env.transition("activate")
    t1 = time.monotonic()
    env.wait_for(lambda: env.messages(OUTPUTS.action_chunk, t1), what="chunks after re-activate")


def test_sigint_publishes_hold_last_and_exits_cleanly(env):
    instruct(env, "pick the cube")
    t0 = time.monotonic()
    env.wait_for(lambda: env.messages(OUTPUTS.action_chunk, t0), what="chunks")
    time.sleep(0.3)
    env.proc.send_signal(2)
    assert env.proc.wait(timeout=20) == 0
    time.sleep(0.3)
    poses = env.messages(LEFT)
    np.testing.assert_array_equal(position(poses[-1][1]), position(poses[-2][1]))


def test_configure_fails_naming_a_missing_model_dir(tmp_path):
    proc = start_policy_node(tmp_path, model_dir=str(tmp_path / "missing"), autostart=True)
    try:
        # the node's start-up is in this wait: up to 29.8 s under load (bench/RESULTS.md, issue 25),
        # so it gets the 120 s the other start-up waits get
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and str(tmp_path / "missing") not in (
                tmp_path / "node.log").read_text():
            time.sleep(0.1)
        assert f"model_dir {tmp_path / 'missing'} is not a directory" in (
            tmp_path / "node.log").read_text()
    finally:
        stop_process(proc)
