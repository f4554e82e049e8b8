"""Unit tests of the safety filter and the episode log."""

import dataclasses
import json
import math

import numpy as np
import pytest
from clap_train.interface import ActionLayout

from clap_policy_ros.episode_log import EpisodeLog
from clap_policy_ros.safety import Box, SafetyFilter, SafetyLimits


def limits(**kw):
    box = Box((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0))
    return SafetyLimits(workspace={"left": box, "right": box},
                        max_linear_speed=0.3, max_angular_speed=1.5, gripper_min=0.0,
                        gripper_max=0.08, dt=0.1, **kw)


def test_nan_and_inf_chunks_are_rejected():
    ok = np.zeros((4, 14))
    assert SafetyFilter.chunk_problem(ok, (4, 14)) is None
    bad = ok.copy()
    bad[2, 5] = np.nan
    assert "row 2, column 5" in SafetyFilter.chunk_problem(bad, (4, 14))
    bad[2, 5] = np.inf
    assert "non-finite" in SafetyFilter.chunk_problem(bad, (4, 14))
    assert "shape" in SafetyFilter.chunk_problem(ok[:3], (4, 14))


def test_workspace_and_gripper_clamp():
    f = SafetyFilter(limits())
    target = np.zeros(14)
    target[0:3] = [2.0, -2.0, 0.5]
    target[6] = 1.0
    target[13] = -1.0
    out, acted = f.filter(target, previous=None)
    assert out[0:3].tolist() == [0.5, -0.5, 0.5]
    assert out[6] == 0.08 and out[13] == 0.0
    assert {"left_workspace", "left_gripper_range", "right_gripper_range"} <= set(acted)


def test_speed_limits_per_arm():
    f = SafetyFilter(limits())
    prev = np.zeros(14)
    prev[2] = prev[9] = 0.5
    target = prev.copy()
    target[0] = 0.4  # 0.4 m in one 0.1 s tick; limit 0.03 m
    target[12] = 1.0  # right yaw 1 rad; limit 0.15 rad
    out, acted = f.filter(target, prev)
    assert np.linalg.norm(out[0:3] - prev[0:3]) == pytest.approx(0.03)
    assert out[12] == pytest.approx(0.15)
    assert set(acted) == {"left_linear_speed", "right_angular_speed"}


def test_angular_limit_takes_the_short_way_across_pi():
    f = SafetyFilter(limits())
    prev = np.zeros(14)
    prev[2] = prev[9] = 0.5
    prev[5] = math.pi - 0.05
    target = prev.copy()
    target[5] = -math.pi + 0.05  # 0.1 rad away across the wrap: allowed as is
    out, acted = f.filter(target, prev)
    assert acted == [] and out[5] == pytest.approx(-math.pi + 0.05)


def test_limits_validation():
    with pytest.raises(ValueError, match="left workspace"):
        SafetyLimits(workspace={"left": Box((0, 0, 0), (0, 1, 1))})
    with pytest.raises(ValueError, match="gripper range"):
        SafetyLimits(gripper_min=1.0, gripper_max=0.0)
    with pytest.raises(ValueError, match=r"no workspace limits for arm\(s\) \['middle'\]"):
        SafetyFilter(limits(), ActionLayout(("left", "middle")))


def test_the_filter_follows_its_layout():
    # the right arm first: its values are the vector's first seven
    lim = limits()
    lim = dataclasses.replace(lim, workspace={**lim.workspace, "left": Box((0.4, 0.4, 0.4), (0.5, 0.5, 1.0))})
    f = SafetyFilter(lim, ActionLayout(("right", "left")))
    target = np.zeros(14)
    target[[6, 13]] = [1.0, 0.05]
    out, acted = f.filter(target, previous=None)
    assert out[0:3].tolist() == [0.0, 0.0, 0.0] and out[7:10].tolist() == [0.4, 0.4, 0.4]
    assert out[6] == 0.08 and out[13] == 0.05
    assert acted == ["right_gripper_range", "left_workspace"]


def test_episode_log_appends_fsynced_records(tmp_path):
    log = EpisodeLog(tmp_path / "sub" / "episodes.jsonl")
    log.start("ep1", "pick", 3, wall_time=10.0)
    log.end("ep1", "pick", 3, True, 1.5, "ok", 10.0, 12.0, 2.0)
    lines = (tmp_path / "sub" / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["start", "end"]
    assert log.read()[1]["reward"] == 1.5 and log.read()[1]["success"] is True
    with open(log.path, "a") as f:
        f.write('{"torn": ')
    with pytest.raises(ValueError, match="episodes.jsonl:3"):
        log.read()
