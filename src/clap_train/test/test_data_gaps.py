"""`clap convert` at a camera/sensor drop-out (gap), and cameras of either image type.

A gap longer than a topic's max_age_s is never spliced over: the contract's gaps.policy splits the
bag into parts (default), keeps only the longest part (drop) or fails the bag (fail). Checked on
synthetic bags whose pose x is its stamp time and whose images encode their message number, so
every frame shows which messages it used and when.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from clap_train.cli import main as clap_main
from clap_train.data.contract import load_contract
from clap_train.data.recording.convert import convert_bags, episode_id
from clap_train.data.recording.gaps import part_id
from clap_train.data.recording.lerobot_format import stored_episodes
from clap_train.data.recording.synthetic_bag import T0, CameraSetup, image_pattern, write_bag
from clap_train.data.video import decode_all

RATE = 30.0
PERIOD_NS = round(1e9 / RATE)
HEAD = "/astribot/camera/head/image_raw"
SMALL = {n: CameraSetup("rgb8", 24, 32) for n in ("head", "left_wrist", "right_wrist")}
DURATION = 3.5
DROPOUT = (HEAD, 1.21, 1.71)  # head messages 37..51 (1.233-1.700 s) are missing: a 0.533 s silence


def _contract(policy="split", min_part_frames=None, tmp_path=None):
    c = load_contract()
    c.gaps.policy = policy
    if min_part_frames is not None:
        c.gaps.min_part_frames = min_part_frames
    if tmp_path is not None:  # for the CLI
        path = tmp_path / f"contract_{policy}.yaml"
        path.write_text(c.to_yaml())
        return c, path
    return c


def _expected_runs(duration_s, dropout, max_age_s=0.1, cam_hz=30.0, state_hz=100.0):
    """The runs of grid frames with a fresh head image (every other stream is always fresh)."""
    _, lo, hi = dropout
    head = np.array([int(i / cam_hz * 1e9) for i in range(int(duration_s * cam_hz)) if not lo <= i / cam_hz < hi])
    start = int(0.004 * 1e9)  # the grippers' first receive time (stamp + 4 ms latency)
    end = min(int(head[-1]), int((int(duration_s * state_hz) - 1) / state_hz * 1e9))
    grid = start + PERIOD_NS * np.arange((end - start) // PERIOD_NS + 1)
    idx = np.searchsorted(head, grid, side="right") - 1
    fresh = grid - head[idx] <= int(max_age_s * 1e9)
    edges = np.diff(np.concatenate([[0], fresh.astype(int), [0]]))
    runs = list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))
    return [grid[a:b] for a, b in runs], int((~fresh).sum())


def _table(ep):
    t = pq.read_table(ep.dir / "frames.parquet")
    n = t.num_rows
    state = np.asarray(t.column("observation.state").combine_chunks().flatten()).reshape(n, 14)
    action = np.asarray(t.column("action").combine_chunks().flatten()).reshape(n, 14)
    return t.column("timestamp").to_numpy(), state, action


def _check_no_splice(ep, head_stamps_s, pose_age=0.0101):
    """Every frame's time (start + timestamp) matches the messages it holds: no time is skipped.

    ``pose_age``: the oldest pose a frame may hold (100 Hz poses: 10 ms; up to max_age before a pose gap).
    """
    ts, state, action = _table(ep)
    n = len(ts)
    np.testing.assert_allclose(ts, np.arange(n) / RATE, atol=1e-6)
    t = (ep.meta["start_time_ns"] - T0) / 1e9 + np.arange(n) * PERIOD_NS / 1e9
    for col in (0, 7):  # pose x = its stamp: the latest 100 Hz pose at or before the frame
        age = t - state[:, col]
        assert np.all(age >= -1e-6) and np.all(age < pose_age), (ep.id, age.min(), age.max())
    cmd_age = t - (action[:, 0] - 0.01)  # commands: x = stamp + 10 ms lead, at 30 Hz
    assert np.all(cmd_age >= -1e-6) and np.all(cmd_age < 1 / RATE + 1e-6)
    # consecutive frames 33 ms apart move 33 ms worth: no jump where time was cut out
    assert np.abs(np.diff(state[:, 0])).max() < 1 / RATE + 0.0101
    frames = decode_all(ep.dir / "observation.images.head.mp4")
    assert len(frames) == n
    for k in range(0, n, 3):
        want = int(np.searchsorted(head_stamps_s, t[k] + 1e-9, side="right") - 1)
        assert t[k] - head_stamps_s[want] <= 0.1 + 1e-6  # fresh
        msg = int(round(head_stamps_s[want] * RATE))  # the pattern number is the message's slot
        err = np.abs(frames[k].astype(float) - image_pattern(0, msg, 24, 32)).mean()
        assert err < 4.0, (ep.id, k, msg, err)


def _head_stamps(duration_s=DURATION, dropout=DROPOUT):
    _, lo, hi = dropout
    return np.array([i / RATE for i in range(int(duration_s * RATE)) if not lo <= i / RATE < hi])


@pytest.fixture(scope="module")
def gap_bag(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gaps")
    bag = write_bag(tmp / "bags" / "rec_gap", duration_s=DURATION, cameras=SMALL, dropouts=(DROPOUT,))
    return tmp, bag


def test_camera_gap_splits_the_bag_into_parts_without_splicing_time(gap_bag, capsys):
    tmp, bag = gap_bag
    out = tmp / "split"
    outcomes, info = convert_bags([bag], _contract(), out, progress=False)
    eid = episode_id(bag)
    assert outcomes[0].status == "converted"
    assert outcomes[0].episodes == [part_id(eid, 0), part_id(eid, 1)] == [f"{eid}-part000", f"{eid}-part001"]
    runs, stale = _expected_runs(DURATION, DROPOUT)
    assert len(runs) == 2 and [len(r) for r in runs] == [39, 52]
    assert info["total_episodes"] == 2 and info["total_frames"] == sum(map(len, runs)) == outcomes[0].frames
    eps = stored_episodes(out)
    assert [e.id for e in eps] == outcomes[0].episodes
    for ep, run, part in zip(eps, runs, (0, 1)):
        assert ep.meta["length"] == len(run) and ep.meta["part"] == part
        assert ep.meta["start_time_ns"] == T0 + int(run[0])  # each part starts at its own first frame
        assert ep.meta["bag_episodes"] == outcomes[0].episodes and ep.meta["dropped_stale_frames"] == stale
        _check_no_splice(ep, _head_stamps())
    # part 1 starts where the head camera is back, not one period after part 0's last frame
    last0 = eps[0].meta["start_time_ns"] + (len(runs[0]) - 1) * PERIOD_NS
    assert (eps[1].meta["start_time_ns"] - last0) / 1e9 > 0.4
    # the dataset: two episodes, each timestamped from 0, LeRobot's episode table
    rows = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["length"] for r in rows] == [39, 52] and [r["clap/episode_id"] for r in rows] == outcomes[0].episodes
    assert rows[1]["dataset_from_index"] == 39
    report = json.loads((out / "meta/conversion.json").read_text())
    (split,) = report["splits"]
    assert split["bag"] == str(bag) and split["policy"] == "split" and split["min_part_frames"] == 32
    (gap,) = split["gaps"]
    assert gap["topics"] == [HEAD] and gap["max_age_s"] == [0.1]
    assert gap["silence_s"] == [pytest.approx(52 / 30 - 36 / 30, abs=1e-6)]
    assert gap["frames"] == stale
    origin = split["start_time_ns"] - T0
    assert gap["start_s"] == pytest.approx((runs[0][-1] - origin) / 1e9, abs=1e-6)
    assert gap["end_s"] == pytest.approx((runs[1][0] - origin) / 1e9, abs=1e-6)
    assert HEAD in gap["reason"] and "0.533 s" in gap["reason"]
    parts = split["parts"]
    assert [(p["part"], p["episode_id"], p["status"], p["frames"]) for p in parts] == [
        (0, f"{eid}-part000", "converted", 39),
        (1, f"{eid}-part001", "converted", 52),
    ]
    for p, run in zip(parts, runs):
        assert p["start_time_ns"] - T0 == run[0] and p["end_time_ns"] - T0 == run[-1]
        assert p["end_s"] - p["start_s"] == pytest.approx((len(run) - 1) * PERIOD_NS / 1e9, abs=1e-6)
        assert "gap 0" in p["reason"]
    assert parts[0]["end_s"] == gap["start_s"] and parts[1]["start_s"] == gap["end_s"]
    assert report["failed"] == [] and report["episodes"][0]["episodes"] == outcomes[0].episodes
    err = capsys.readouterr().err
    assert "GAP" in err and str(bag) in err and f"{eid}-part000, {eid}-part001" in err and HEAD in err


def test_split_bag_resumes_and_repairs_a_missing_part(gap_bag):
    tmp, bag = gap_bag
    out = tmp / "resume"
    c = _contract()
    first, _ = convert_bags([bag], c, out, progress=False)
    eps = stored_episodes(out)
    mtimes = [(e.dir / "frames.parquet").stat().st_mtime_ns for e in eps]
    again, info = convert_bags([bag], c, out, progress=False)
    assert again[0].status == "skipped" and again[0].episodes == first[0].episodes and again[0].frames == 91
    assert [(e.dir / "frames.parquet").stat().st_mtime_ns for e in stored_episodes(out)] == mtimes
    assert info["total_episodes"] == 2
    report = json.loads((out / "meta/conversion.json").read_text())
    assert [p["episode_id"] for p in report["splits"][0]["parts"]] == first[0].episodes  # still listed
    # killed after publishing one part only: the bag is converted again, whole
    shutil.rmtree(eps[1].dir)
    repaired, info = convert_bags([bag], c, out, progress=False)
    assert repaired[0].status == "converted" and [e.id for e in stored_episodes(out)] == first[0].episodes
    assert info["total_episodes"] == 2 and info["total_frames"] == 91
    # an older conversion's unsplit episode of the same bag is replaced, not kept beside the parts
    shutil.copytree(eps[0].dir, out / ".clap/episodes" / episode_id(bag))
    again, info = convert_bags([bag], c, out, progress=False)
    assert again[0].status == "converted" and [e.id for e in stored_episodes(out)] == first[0].episodes
    assert info["total_episodes"] == 2
    assert not [p for p in (out / ".clap/episodes").iterdir() if p.name.startswith(".")]


def test_gap_policy_drop_keeps_the_longest_part_and_policy_changes_clean_up(gap_bag):
    tmp, bag = gap_bag
    out = tmp / "policies"
    eid = episode_id(bag)
    convert_bags([bag], _contract("split"), out, progress=False)
    assert len(stored_episodes(out)) == 2
    outcomes, info = convert_bags([bag], _contract("drop"), out, progress=False)
    assert outcomes[0].status == "converted" and outcomes[0].episodes == [f"{eid}-part001"]
    (ep,) = stored_episodes(out)  # the split's part000 is gone
    assert ep.id == f"{eid}-part001" and ep.meta["length"] == 52 and info["total_frames"] == 52
    _check_no_splice(ep, _head_stamps())
    runs, _ = _expected_runs(DURATION, DROPOUT)
    assert ep.meta["start_time_ns"] == T0 + int(runs[1][0])  # after the gap: time not renumbered
    parts = json.loads((out / "meta/conversion.json").read_text())["splits"][0]["parts"]
    assert parts[0]["status"] == "dropped" and parts[0]["episode_id"] is None and parts[0]["frames"] == 39
    assert "longest" in parts[0]["reason"] and parts[1]["status"] == "converted"


def test_gap_policy_fail_reports_the_bag_by_file_and_topic(gap_bag, capsys):
    tmp, bag = gap_bag
    good = write_bag(tmp / "bags_fail" / "clean", duration_s=1.5, cameras=SMALL)
    out = tmp / "fail"
    convert_bags([bag], _contract("split"), out, progress=False)  # parts from an earlier conversion
    _, contract_file = _contract("fail", tmp_path=tmp)
    args = ["convert", str(bag), str(good), "--contract", str(contract_file), "--out", str(out), "--no-progress"]
    rc = clap_main(args)
    assert rc == 1  # some failed, the rest are in the dataset
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "FAILED" in x)
    assert str(bag) in line and ".db3" in line and f"topic {HEAD}" in line and "gaps.policy is fail" in line
    assert "0.533 s" in line and "1.267 s" in line
    report = json.loads((out / "meta/conversion.json").read_text())
    assert [f["bag"] for f in report["failed"]] == [str(bag)] and report["splits"] == []
    # nothing of the failed bag stays in the dataset (its parts from the split conversion are removed)
    assert [e.meta["source"] for e in stored_episodes(out)] == [str(good.resolve())]
    assert json.loads((out / "meta/info.json").read_text())["total_episodes"] == 1


def test_short_parts_are_left_out_with_a_log_line(tmp_path, capsys):
    dropout = (HEAD, 0.41, 0.91)  # part 0 is 0.4 s long: fewer frames than one action chunk
    bag = write_bag(tmp_path / "short_head", duration_s=DURATION, cameras=SMALL, dropouts=(dropout,))
    outcomes, info = convert_bags([bag], _contract(), tmp_path / "ds", progress=False)
    eid = episode_id(bag)
    runs, _ = _expected_runs(DURATION, dropout)
    assert len(runs[0]) < 32 <= len(runs[1])
    assert outcomes[0].episodes == [f"{eid}-part001"] and info["total_frames"] == len(runs[1])
    parts = json.loads((tmp_path / "ds/meta/conversion.json").read_text())["splits"][0]["parts"]
    assert parts[0]["status"] == "dropped" and parts[0]["frames"] == len(runs[0])
    assert "min_part_frames 32" in parts[0]["reason"]
    err = capsys.readouterr().err
    assert f"GAP bag {bag}: part 0" in err and "left out" in err and "min_part_frames 32" in err
    # a smaller minimum keeps it
    outcomes, _ = convert_bags([bag], _contract(min_part_frames=5), tmp_path / "ds5", progress=False)
    assert outcomes[0].episodes == [f"{eid}-part000", f"{eid}-part001"]
    # no part long enough: the bag fails, naming the topic
    tiny = write_bag(tmp_path / "tiny", duration_s=1.5, cameras=SMALL, dropouts=((HEAD, 0.51, 1.01),))
    outcomes, info = convert_bags([tiny], _contract(), tmp_path / "none", progress=False)
    assert outcomes[0].status == "failed" and info is None
    assert "tiny" in outcomes[0].error and HEAD in outcomes[0].error and "no part of at least" in outcomes[0].error


def test_a_state_topic_drop_out_splits_too(tmp_path):
    pose = "/astribot/left_arm/ee_pose"
    bag = write_bag(tmp_path / "pose_gap", duration_s=DURATION, cameras=SMALL, dropouts=((pose, 1.6, 2.0),))
    outcomes, _ = convert_bags([bag], _contract(), tmp_path / "ds", progress=False)
    assert len(outcomes[0].episodes) == 2
    split = json.loads((tmp_path / "ds/meta/conversion.json").read_text())["splits"][0]
    assert split["gaps"][0]["topics"] == [pose] and split["gaps"][0]["silence_s"] == [pytest.approx(0.41, abs=1e-6)]
    for ep in stored_episodes(tmp_path / "ds"):
        _check_no_splice(ep, np.arange(int(DURATION * RATE)) / RATE, pose_age=0.1 + 1e-6)


def test_lerobot_reads_a_split_bag_and_no_action_chunk_crosses_the_gap(gap_bag, lerobot):
    tmp, bag = gap_bag
    out = tmp / "lerobot"
    convert_bags([bag], _contract(), out, progress=False)
    idx = [38, 39]  # the last frame before the gap, the first after it
    seen = lerobot.read(out, idx)
    assert seen["num_episodes"] == 2 and seen["len"] == 91
    last, first = seen["items"]["38"], seen["items"]["39"]
    assert (last["episode_index"], last["frame_index"]) == (0, 38)
    assert (first["episode_index"], first["frame_index"], first["timestamp"]) == (1, 0, 0.0)
    # the chunk at the end of part 0 is padded, not continued with part 1's actions
    assert (~np.asarray(last["action_is_pad"])).sum() == 1
    eps = stored_episodes(out)
    _, _, action1 = _table(eps[1])
    np.testing.assert_allclose(np.asarray(first["action"])[:32], action1[:32], atol=1e-6)


# --- cameras of either image type ------------------------------------------------------------


@pytest.mark.parametrize("contract_type", ["sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"])
def test_either_image_type_on_any_camera_whatever_the_contract_says(tmp_path, contract_type):
    c = load_contract()
    for cam in c.cameras:
        cam.type = contract_type
    cams = {
        "head": CameraSetup("jpeg", 24, 32),  # CompressedImage
        "left_wrist": CameraSetup("bgr8", 24, 32),  # Image
        "right_wrist": CameraSetup("png", 24, 32),  # CompressedImage
    }
    bag = write_bag(tmp_path / "mixed", storage="mcap", duration_s=1.0, cameras=cams)
    outcomes, info = convert_bags([bag], c, tmp_path / "ds", progress=False)
    assert outcomes[0].status == "converted", outcomes[0].error
    assert info["total_episodes"] == 1
    ep = stored_episodes(tmp_path / "ds")[0]
    for ci, name in enumerate(("head", "left_wrist", "right_wrist")):
        frames = decode_all(ep.dir / f"observation.images.{name}.mp4")
        assert len(frames) == ep.meta["length"]
        err = np.abs(frames[5].astype(float) - image_pattern(ci, 5, 24, 32)).mean()
        assert err < 5.0, (name, err)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_camera_switching_image_type_mid_recording(tmp_path, storage):
    """A reconfigured driver: Image, then CompressedImage on the same topic (two connections)."""
    cams = {**SMALL, "left_wrist": CameraSetup("rgb8", 24, 32, switch=(0.5, "jpeg"))}
    bag = write_bag(tmp_path / "switch", storage=storage, duration_s=1.0, cameras=cams)
    outcomes, _ = convert_bags([bag], load_contract(), tmp_path / "ds", progress=False)
    assert outcomes[0].status == "converted", outcomes[0].error
    ep = stored_episodes(tmp_path / "ds")[0]
    assert ep.meta["split"] is None and ep.id == episode_id(bag)  # no gap: one episode, the bag's id
    frames = decode_all(ep.dir / "observation.images.left_wrist.mp4")
    t = (ep.meta["start_time_ns"] - T0) / 1e9 + np.arange(len(frames)) * PERIOD_NS / 1e9
    for k in (2, 10, 20, 28):  # before and after the switch at 0.5 s
        msg = int(np.floor(t[k] * RATE + 1e-6))
        err = np.abs(frames[k].astype(float) - image_pattern(1, msg, 24, 32)).mean()
        assert err < 5.0, (k, msg, err)


def test_a_non_image_type_on_a_camera_topic_is_named(tmp_path):
    c = load_contract()
    writer_contract = load_contract()
    writer_contract.cameras[0].topic = "/elsewhere/head"  # the head topic then carries the instruction
    writer_contract.instruction.topic = HEAD
    bag = write_bag(tmp_path / "wrong", duration_s=0.5, cameras=SMALL, contract=writer_contract)
    outcomes, _ = convert_bags([bag], c, tmp_path / "ds", progress=False)
    err = outcomes[0].error
    assert outcomes[0].status == "failed" and "wrong" in err and f"topic {HEAD}" in err
    assert "std_msgs/msg/String" in err and "sensor_msgs/msg/CompressedImage" in err
