"""`clap convert` on real rosbag2 files written with rosbags.

Both storages, several encodings and resolutions, a yaw crossing +-pi, and bad bags (corrupt,
empty, missing topic, stamps going backwards, unknown encoding).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from clap_train.cli import main as clap_main
from clap_train.data.rotations import canonical_branch
from clap_train.data.contract import load_contract
from clap_train.data.recording.convert import convert_bags, episode_id
from clap_train.data.recording.lerobot_format import stored_episodes
from clap_train.data.recording.synthetic_bag import T0, CameraSetup, image_pattern, write_bag
from clap_train.data.video import decode_all

RATE = 30.0
CAMS_A = {  # sqlite3 bag: raw encodings, two resolutions, a 15 Hz camera, a late camera
    "head": CameraSetup("rgb8", 48, 64, 30.0, 0.0),
    "left_wrist": CameraSetup("bgr8", 24, 32, 15.0, 0.0),
    "right_wrist": CameraSetup("mono8", 24, 32, 30.0, 0.05),
}
CAMS_B = {  # mcap bag: the same sizes (one dataset, one layout), other encodings
    "head": CameraSetup("bgra8", 48, 64, 30.0, 0.0),
    "left_wrist": CameraSetup("rgba8", 24, 32, 30.0, 0.0),
    "right_wrist": CameraSetup("rgb8", 24, 32, 30.0, 0.0),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conv")
    c = load_contract()
    bags = tmp / "bags"
    bags.mkdir()
    write_bag(bags / "ep_a", storage="sqlite3", duration_s=1.5, cameras=CAMS_A, yaw_cross=True)
    write_bag(bags / "ep_b", storage="mcap", duration_s=1.0, cameras=CAMS_B)
    write_bag(
        bags / "ep_c_missing",
        storage="mcap",
        duration_s=0.5,
        cameras=CAMS_B,
        omit_topics=("/astribot/right_arm/ee_pose",),
    )
    write_bag(bags / "ep_d_empty", storage="sqlite3", cameras=CAMS_B, empty=True)
    write_bag(
        bags / "ep_e_backwards",
        storage="sqlite3",
        duration_s=0.5,
        cameras=CAMS_B,
        backwards_topic="/astribot/left_arm/ee_pose",
    )
    bad = write_bag(bags / "ep_f_corrupt", storage="mcap", duration_s=0.5, cameras=CAMS_B)
    mcap = next(bad.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])  # truncated recording
    odd = {**CAMS_B, "head": CameraSetup("yuv422", 48, 64)}
    write_bag(bags / "ep_g_encoding", storage="sqlite3", duration_s=0.5, cameras=odd)
    out = tmp / "ds"
    outcomes, info = convert_bags([bags], c, out, progress=False)
    return {
        "tmp": tmp,
        "bags": bags,
        "out": out,
        "outcomes": {pathlib.Path(o.bag).name: o for o in outcomes},
        "info": info,
        "contract": c,
    }


def _episode_rows(out):
    return pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()


def test_good_bags_convert_and_bad_ones_fail_naming_bag_file_and_topic(converted):
    o = converted["outcomes"]
    assert o["ep_a"].status == "converted" and o["ep_b"].status == "converted"
    errors = {k: v.error or "" for k, v in o.items()}
    assert o["ep_c_missing"].status == "failed"
    assert "ep_c_missing" in errors["ep_c_missing"] and "/astribot/right_arm/ee_pose" in errors["ep_c_missing"]
    assert "missing" in errors["ep_c_missing"]
    assert "ep_d_empty" in errors["ep_d_empty"] and "no messages" in errors["ep_d_empty"]
    assert "/astribot/" in errors["ep_d_empty"] and ".db3" in errors["ep_d_empty"]
    assert "backwards" in errors["ep_e_backwards"] and "/astribot/left_arm/ee_pose" in errors["ep_e_backwards"]
    assert "ep_f_corrupt" in errors["ep_f_corrupt"] and ".mcap" in errors["ep_f_corrupt"]
    assert "'yuv422'" in errors["ep_g_encoding"] and "/astribot/camera/head/image_raw" in errors["ep_g_encoding"]
    # nothing of a failed episode is left: only the two good ones are stored, no temporary folders
    out = converted["out"]
    assert [e.meta["source"] for e in stored_episodes(out)] == [
        str((converted["bags"] / n).resolve()) for n in ("ep_a", "ep_b")
    ]
    assert not [p for p in (out / ".clap/episodes").iterdir() if p.name.startswith(".")]
    report = json.loads((out / "meta/conversion.json").read_text())
    assert len(report["failed"]) == 5


def _expected_frames(cams, duration_s, state_hz=100.0):
    """Frames from the first instant every camera/state stream has a message to the earliest last one."""
    ns = lambda s: int(s * 1e9)  # noqa: E731  (the bag writer's stamps)
    starts = [ns(c.offset_s) for c in cams.values()] + [0, ns(0.004)]  # grippers: receive time = stamp + 4 ms
    ends = [ns(c.offset_s + (int(duration_s * c.hz) - 1) / c.hz) for c in cams.values()]
    ends.append(ns((int(duration_s * state_hz) - 1) / state_hz))
    start, end = max(starts), min(ends)
    return (end - start) // round(1e9 / RATE) + 1, start


def test_layout_frame_counts_and_info(converted):
    out, info = converted["out"], converted["info"]
    n_a, _ = _expected_frames(CAMS_A, 1.5)
    n_b, _ = _expected_frames(CAMS_B, 1.0)
    assert info["codebase_version"] == "v3.0" and info["fps"] == 30
    assert info["total_episodes"] == 2 and info["total_frames"] == n_a + n_b
    rows = _episode_rows(out)
    assert [r["length"] for r in rows] == [n_a, n_b]
    assert rows[1]["dataset_from_index"] == n_a and rows[1]["dataset_to_index"] == n_a + n_b
    assert info["features"]["observation.images.head"]["shape"] == [48, 64, 3]
    assert info["features"]["observation.images.left_wrist"]["shape"] == [24, 32, 3]
    assert info["features"]["action"]["names"][5] == "left_yaw"
    for ep, row in enumerate(rows):
        data = pq.read_table(out / f"data/chunk-000/file-{ep:03d}.parquet")
        assert data.num_rows == row["length"]
        assert data.column("index").to_pylist()[0] == row["dataset_from_index"]
        np.testing.assert_allclose(data.column("timestamp").to_numpy(), np.arange(row["length"]) / RATE, atol=1e-6)
        for key in ("observation.images.head", "observation.images.left_wrist", "observation.images.right_wrist"):
            assert (out / f"videos/{key}/chunk-000/file-{ep:03d}.mp4").is_file()
    assert (out / "meta/contract.yaml").read_text() == converted["contract"].to_yaml()
    subtasks = pq.read_table(out / "meta/subtasks.parquet").column("subtask").to_pylist()
    assert subtasks == ["reach the cube", "grasp the cube"]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    sub = np.asarray(data.column("subtask_index"))
    t = 0.05 + np.arange(len(sub)) / RATE  # episode A starts at 0.05 s (its late camera)
    assert np.all(sub[t < 0.99] == 0) and np.all(sub[t > 1.01] == 1)


def test_alignment_never_uses_a_future_message(converted):
    out = converted["out"]
    ep = stored_episodes(out)[0]
    start = (ep.meta["start_time_ns"] - T0) / 1e9
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    state = np.asarray(data.column("observation.state").combine_chunks().flatten()).reshape(data.num_rows, 14)
    t = start + np.arange(data.num_rows) / RATE
    # x of a pose = its stamp (s); the gripper = its receive time (stamp + 4 ms latency)
    for col in (0, 7):
        age = t - state[:, col]
        assert np.all(age >= -1e-6) and np.all(age <= 0.1 + 1e-6) and np.all(age < 0.0101)
    for col in (6, 13):
        age = t - state[:, col]
        assert np.all(age >= -1e-6) and np.all(age < 0.0101 + 0.004)
    action = np.asarray(data.column("action").combine_chunks().flatten()).reshape(data.num_rows, 14)
    cmd_stamp = action[:, 0] - 0.01  # commands: x = stamp + 10 ms lead
    assert np.all(cmd_stamp <= t + 1e-6) and np.all(t - cmd_stamp < 1 / 30 + 1e-6)
    assert start == pytest.approx(0.05, abs=1e-6)  # the late right camera sets the first frame


def test_yaw_crossing_pi_is_unwrapped_within_the_episode(converted):
    data = pq.read_table(converted["out"] / "data/chunk-000/file-000.parquet")
    n = data.num_rows
    state = np.asarray(data.column("observation.state").combine_chunks().flatten()).reshape(n, 14)
    action = np.asarray(data.column("action").combine_chunks().flatten()).reshape(n, 14)
    for v in (state[:, 5], action[:, 5]):
        assert v.max() > np.pi + 0.2 and v.min() < np.pi  # crossed +pi and kept going
        assert np.abs(np.diff(v)).max() < 0.05  # no 2*pi jump
    np.testing.assert_allclose(state[:, 5], 3.0 + 0.5 * (0.05 + np.arange(n) / RATE), atol=0.01)


def test_stats_are_exact_quantiles_of_the_canonical_values(converted):
    out = converted["out"]
    stats = json.loads((out / "meta/stats.json").read_text())
    s_all, a_all = [], []
    for ep in range(2):
        d = pq.read_table(out / f"data/chunk-000/file-{ep:03d}.parquet")
        s = np.asarray(d.column("observation.state").combine_chunks().flatten()).reshape(d.num_rows, 14)
        a = np.asarray(d.column("action").combine_chunks().flatten()).reshape(d.num_rows, 14)
        s, a = canonical_branch(s.astype(np.float64), a.astype(np.float64), [3, 4, 5, 10, 11, 12])
        s_all.append(s)
        a_all.append(a)
    s_all, a_all = np.concatenate(s_all), np.concatenate(a_all)
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(a_all, 0.01, axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["q99"], np.quantile(s_all, 0.99, axis=0), atol=1e-6)
    assert stats["action"]["count"] == [len(a_all)]
    assert np.all(np.asarray(stats["observation.state"]["max"])[[5]] < np.pi)  # wrapped branch
    head = stats["observation.images.head"]
    assert np.asarray(head["mean"]).shape == (3, 1, 1) and 0 < np.asarray(head["mean"]).min() < 1


@pytest.mark.parametrize("ep,cams", [(0, CAMS_A), (1, CAMS_B)])
def test_videos_decode_to_the_latest_image_at_or_before_each_frame(converted, ep, cams):
    out = converted["out"]
    meta = stored_episodes(out)[ep].meta
    start = meta["start_time_ns"] - T0
    for ci, (name, setup) in enumerate(cams.items()):
        frames = decode_all(out / f"videos/observation.images.{name}/chunk-000/file-{ep:03d}.mp4")
        assert frames.shape[1:] == (setup.height, setup.width, 3)
        t = start + np.arange(len(frames)) * round(1e9 / RATE)
        n_msgs = int((1.5 if ep == 0 else 1.0) * setup.hz)
        stamps = np.array([int((setup.offset_s + i / setup.hz) * 1e9) for i in range(n_msgs)])
        for k in range(0, len(frames), 2):
            want = int(np.searchsorted(stamps, t[k], side="right") - 1)
            grey = setup.encoding == "mono8"
            exp = image_pattern(ci, want, setup.height, setup.width, grey).astype(float)
            err = np.abs(frames[k].astype(float) - exp).mean()
            assert err < 4.0, (name, k, err)
            if want + 1 < len(stamps):  # the next (future) message would match worse
                nxt = image_pattern(ci, want + 1, setup.height, setup.width, grey).astype(float)
                assert np.abs(frames[k].astype(float) - nxt).mean() > err


def test_rerun_skips_finished_episodes_and_cli_reports_failures(converted, capsys):
    bags, out = converted["bags"], converted["out"]
    before = (out / ".clap/episodes" / episode_id(bags / "ep_a") / "frames.parquet").stat().st_mtime_ns
    rc = clap_main(
        [
            "convert",
            str(bags / "ep_a"),
            str(bags / "ep_b"),
            str(bags / "ep_c_missing"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 1  # some failed, the rest are in the dataset
    assert "2 skipped" in cap.out and "ep_c_missing" in cap.err and "/astribot/right_arm/ee_pose" in cap.err
    assert (out / ".clap/episodes" / episode_id(bags / "ep_a") / "frames.parquet").stat().st_mtime_ns == before
    rc = clap_main(["convert", str(bags / "ep_d_empty"), "--out", str(converted["tmp"] / "none"), "--no-progress"])
    assert rc == 2 and not (converted["tmp"] / "none" / "meta").exists()


def test_compressed_images_and_subtask_type_without_definition(tmp_path):
    c = load_contract()
    c.cameras[0].type = "sensor_msgs/msg/CompressedImage"
    c.cameras[2].type = "sensor_msgs/msg/CompressedImage"
    contract_file = tmp_path / "compressed.yaml"
    contract_file.write_text(c.to_yaml())
    cams = {
        "head": CameraSetup("jpeg", 48, 64),
        "left_wrist": CameraSetup("bgr8", 24, 32),
        "right_wrist": CameraSetup("png", 24, 32),
    }
    write_bag(tmp_path / "bag", storage="mcap", duration_s=0.5, contract=c, cameras=cams, with_msgdefs=False)
    rc = clap_main(
        [
            "convert",
            str(tmp_path / "bag"),
            "--contract",
            str(contract_file),
            "--out",
            str(tmp_path / "ds"),
            "--no-progress",
        ]
    )
    assert rc == 0
    png = decode_all(tmp_path / "ds/videos/observation.images.right_wrist/chunk-000/file-000.mp4")
    jpg = decode_all(tmp_path / "ds/videos/observation.images.head/chunk-000/file-000.mp4")
    assert np.abs(png[0].astype(float) - image_pattern(2, 0, 24, 32)).mean() < 4
    assert np.abs(jpg[0].astype(float) - image_pattern(0, 0, 48, 64)).mean() < 5
    # the default contract says Image: CompressedImage is accepted all the same (as the node does)
    rc = clap_main(["convert", str(tmp_path / "bag"), "--out", str(tmp_path / "ds2"), "--no-progress"])
    assert rc == 0
    jpg2 = decode_all(tmp_path / "ds2/videos/observation.images.head/chunk-000/file-000.mp4")
    assert np.abs(jpg2[0].astype(float) - image_pattern(0, 0, 48, 64)).mean() < 5


def test_kill_9_mid_episode_leaves_no_half_episode(tmp_path):
    bag = write_bag(
        tmp_path / "long",
        storage="sqlite3",
        duration_s=3.0,
        cameras={n: CameraSetup("rgb8", 120, 160) for n in ("head", "left_wrist", "right_wrist")},
    )
    out = tmp_path / "ds"
    # a slow encoder preset keeps the converter busy long enough to be killed mid-episode
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clap_train.cli",
            "convert",
            str(bag),
            "--out",
            str(out),
            "--no-progress",
            "--preset",
            "veryslow",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            store = out / ".clap/episodes"
            tmp_dirs = [p for p in store.iterdir() if p.name.startswith(".")] if store.is_dir() else []
            if tmp_dirs and any(f.stat().st_size > 0 for f in tmp_dirs[0].glob("*.mp4")):
                break  # videos are being written
            time.sleep(0.02)
        assert proc.poll() is None, "converter finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stored_episodes(out) == [] and not (out / "meta").exists() and not (out / "data").exists()
    outcomes, info = convert_bags([bag], load_contract(), out, progress=False)
    assert outcomes[0].status == "converted" and info["total_episodes"] == 1
    assert not [p for p in (out / ".clap/episodes").iterdir() if p.name.startswith(".")]


def test_parallel_episodes_give_the_same_dataset(converted):
    bags, tmp = converted["bags"], converted["tmp"]
    outcomes, info = convert_bags(
        [bags / "ep_a", bags / "ep_b"], converted["contract"], tmp / "par", workers=2, progress=False
    )
    assert [o.status for o in outcomes] == ["converted", "converted"]
    assert info["total_frames"] == converted["info"]["total_frames"]
    for ep in range(2):
        a = pq.read_table(converted["out"] / f"data/chunk-000/file-{ep:03d}.parquet")
        b = pq.read_table(tmp / f"par/data/chunk-000/file-{ep:03d}.parquet")
        assert a.equals(b)


def test_image_size_mismatch_is_named_and_contract_size_resizes(tmp_path):
    small = {n: CameraSetup("rgb8", 24, 32) for n in ("head", "left_wrist", "right_wrist")}
    big = {**small, "head": CameraSetup("rgb8", 48, 64)}
    write_bag(tmp_path / "bags/a_small", duration_s=0.4, cameras=small)
    write_bag(tmp_path / "bags/b_big", duration_s=0.4, cameras=big)
    outcomes, info = convert_bags([tmp_path / "bags"], load_contract(), tmp_path / "ds", progress=False)
    assert [o.status for o in outcomes] == ["converted", "failed"]
    assert "48x64" in outcomes[1].error and "/astribot/camera/head/image_raw" in outcomes[1].error
    assert info["total_episodes"] == 1
    c = load_contract()
    for cam in c.cameras:
        cam.size = (32, 32)
    _, info = convert_bags([tmp_path / "bags"], c, tmp_path / "ds_resized", progress=False)
    assert info["total_episodes"] == 2 and info["features"]["observation.images.head"]["shape"] == [32, 32, 3]
    frames = decode_all(tmp_path / "ds_resized/videos/observation.images.head/chunk-000/file-001.mp4")
    assert frames.shape[1:] == (32, 32, 3)
