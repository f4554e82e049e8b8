"""LeRobot 0.4.4 and our datasets, both ways: its reader loads ours, our loader loads its.

LeRobot runs in a separate venv, as a subprocess.

The venv is built (or reused) by scripts/lerobot_check/setup_venv.sh: LeRobot cannot be installed
beside this project's torch. If it cannot be built, this test FAILS (it never skips silently).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from clap_train.data.contract import load_contract
from clap_train.data.recording.convert import convert_bags
from clap_train.data.samples.dataset import ClapDataset
from clap_train.data.recording.synthetic_bag import CameraSetup, write_bag
from clap_train.data.video import decode_all


def test_lerobot_reads_our_dataset(tmp_path, lerobot):
    cams = {
        "head": CameraSetup("rgb8", 48, 64),
        "left_wrist": CameraSetup("bgr8", 24, 32),
        "right_wrist": CameraSetup("mono8", 24, 32),
    }
    write_bag(tmp_path / "bags/a", duration_s=1.0, cameras=cams, yaw_cross=True)
    write_bag(tmp_path / "bags/b", duration_s=0.7, cameras=cams, storage="mcap")
    out = tmp_path / "ds"
    _, info = convert_bags([tmp_path / "bags"], load_contract(), out, progress=False)
    n0 = pq.read_metadata(out / "data/chunk-000/file-000.parquet").num_rows
    idx = [0, n0 - 2, n0 + 3]
    seen = lerobot.read(out, idx)
    assert seen["len"] == info["total_frames"] and seen["num_episodes"] == 2 and seen["fps"] == 30
    assert {"observation.state", "action", "subtask_index", "observation.images.head"} <= set(seen["features"])
    for i in idx:
        item = seen["items"][str(i)]
        ep, t = (0, i) if i < n0 else (1, i - n0)
        data = pq.read_table(out / f"data/chunk-000/file-{ep:03d}.parquet")
        n = data.num_rows
        actions = np.asarray(data.column("action").combine_chunks().flatten()).reshape(n, 14)
        state = np.asarray(data.column("observation.state").combine_chunks().flatten()).reshape(n, 14)
        np.testing.assert_allclose(item["observation.state"], state[t], atol=1e-6)
        chunk = np.asarray(item["action"])
        assert chunk.shape == (32, 14)
        valid = ~np.asarray(item["action_is_pad"])
        assert valid.sum() == min(32, n - t)
        np.testing.assert_allclose(chunk[valid], actions[t : t + valid.sum()], atol=1e-6)
        assert item["task"] == "put the cube in the bowl"
        assert item["subtask"] in ("reach the cube", "grasp the cube")
        for key, shape in (("observation.images.head", (3, 48, 64)), ("observation.images.right_wrist", (3, 24, 32))):
            assert item[key]["shape"] == list(shape)
            ours = decode_all(out / f"videos/{key}/chunk-000/file-{ep:03d}.mp4")[t].transpose(2, 0, 1).astype(float)
            assert np.abs(np.asarray(item[key]["pixels"], dtype=float) - ours).mean() < 2.0


def test_our_loader_reads_a_dataset_written_by_lerobot(tmp_path, lerobot):
    # LeRobot's writer: AV1 video, both episodes in one mp4 and one data file, no subtasks
    out = tmp_path / "written"
    run = lerobot.run("write_with_lerobot.py", out, cwd=lerobot.CHECK)
    assert run.returncode == 0, f"LeRobot could not write a dataset:\n{run.stderr[-4000:]}"
    ds = ClapDataset(out, chunk_len=32, future_offset=4, image_size=32)
    assert len(ds) == 32 and ds.is_robot and ds.image_size == 32
    for i, (ep, t) in {0: (0, 0), 19: (0, 19), 25: (1, 5), 31: (1, 11)}.items():
        s = ds[i]
        assert (s["episode_index"], s["frame_index"], s["instruction"]) == (ep, t, f"task {ep}")
        n = 20 if ep == 0 else 12
        assert s["action_pad"].sum().item() == 32 - (n - t)
        action = ds.normalizer.unnormalize("action", s["action"].numpy().astype(np.float64))
        np.testing.assert_allclose(action[: n - t, 0], 0.1 * np.arange(t, n) + ep + 0.05, atol=1e-5)
        red = s["images"]["head"][0].mean().item() * 255  # the frame's red level is 40 + 5 t
        assert abs(red - (40 + 5 * t)) < 4
        fut = s["future_head"][0].mean().item() * 255
        assert abs(fut - (40 + 5 * min(t + 4, n - 1))) < 4
        assert s["image_mask"].tolist() == [True, False, False]


def test_lerobot_reads_our_human_video_dataset(tmp_path, lerobot):
    from clap_train.data.recording.convert_videos import convert_videos
    from clap_train.data.recording.synthetic_bag import image_pattern
    from clap_train.data.video import Mp4Writer

    src = tmp_path / "videos"
    src.mkdir()
    with Mp4Writer(src / "a.mp4", 30, 32, 32) as w:
        for i in range(10):
            w.write(image_pattern(0, i, 32, 32))
    (src / "instructions.json").write_text(json.dumps({"a.mp4": "fold the towel"}))
    _, info = convert_videos(src, tmp_path / "human", progress=False)
    seen = lerobot.read(tmp_path / "human", [0, 9])
    assert seen["len"] == info["total_frames"] == 10 and "action" not in seen["features"]
    item = seen["items"]["9"]
    assert item["task"] == "fold the towel" and item["frame_index"] == 9
    pixels = np.asarray(item["observation.images.head"]["pixels"], dtype=float).transpose(1, 2, 0)
    assert np.abs(pixels - image_pattern(0, 9, 32, 32)).mean() < 4
