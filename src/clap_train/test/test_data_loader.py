"""The training loader (ClapDataset, MixedDataset) and `clap convert-videos` for human videos."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from clap_train.cli import main as clap_main
from clap_train.data.contract import load_contract
from clap_train.data.recording.convert import convert_bags
from clap_train.data.samples.dataset import ClapDataset, DatasetError, collate_samples
from clap_train.data.samples.mixing import MixedDataset
from clap_train.data.images import resize_rgb
from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.recording.synthetic_bag import CameraSetup, image_pattern, write_bag
from clap_train.data.video import Mp4Writer, decode_all

CAMS = {n: CameraSetup("rgb8", 32, 32) for n in ("head", "left_wrist", "right_wrist")}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    write_bag(tmp / "bags/e0", duration_s=1.2, cameras=CAMS, yaw_cross=True)
    write_bag(tmp / "bags/e1", duration_s=0.8, cameras=CAMS, storage="mcap")
    convert_bags([tmp / "bags"], load_contract(), tmp / "robot", progress=False)
    vids = tmp / "videos"
    vids.mkdir()
    for k, n in enumerate((20, 12)):  # 15 fps sources, resampled to 30 fps
        with Mp4Writer(vids / f"h{k}.mp4", 15, 32, 32) as w:
            for i in range(n):
                w.write(image_pattern(k, i, 32, 32))
    (vids / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    (vids / "instructions.csv").write_text(
        "file,instruction\nh0.mp4,wipe the table\nh1.mp4,open the drawer\nbroken.mp4,nothing\n"
    )
    return tmp


def test_robot_samples_match_the_stored_frames(datasets):
    ds = ClapDataset(datasets / "robot", chunk_len=32, future_offset=8, image_size=16)
    data = pq.read_table(datasets / "robot/data/chunk-000/file-000.parquet")
    n0 = data.num_rows
    assert len(ds) == n0 + pq.read_table(datasets / "robot/data/chunk-000/file-001.parquet").num_rows
    action = np.asarray(data.column("action").combine_chunks().flatten()).reshape(n0, 14)
    state = np.asarray(data.column("observation.state").combine_chunks().flatten()).reshape(n0, 14)
    s = ds[5]
    assert s["images"]["head"].shape == (3, 16, 16) and s["image_mask"].tolist() == [True, True, True]
    assert s["action"].shape == (32, 14) and s["action"].dtype == torch.float32
    assert s["is_robot"] and s["instruction"] == "put the cube in the bowl" and s["frame_index"] == 5
    # de-normalising gives back the stored chunk (positions and gripper; yaw up to the 2*pi branch)
    back = ds.normalizer.unnormalize("action", s["action"].numpy().astype(np.float64))
    k = min(32, n0 - 5)
    np.testing.assert_allclose(back[:k, [0, 6, 7, 13]], action[5 : 5 + k, [0, 6, 7, 13]], atol=1e-4)
    yaw_diff = (back[:k, 5] - action[5 : 5 + k, 5]) / (2 * np.pi)
    np.testing.assert_allclose(yaw_diff, np.round(yaw_diff), atol=1e-4)
    assert abs(np.diff(back[:, 5])).max() < 0.1  # the chunk stays continuous across +-pi
    wrapped_state = ds.normalizer.unnormalize("observation.state", s["state"].numpy().astype(np.float64))
    assert -np.pi <= wrapped_state[5] < np.pi and np.isclose(np.cos(wrapped_state[5]), np.cos(state[5, 5]), atol=1e-4)
    # padding at the episode end repeats the last action
    last = ds[n0 - 3]
    assert last["action_pad"].tolist() == [False] * 3 + [True] * 29
    assert torch.equal(last["action"][3], last["action"][2]) and torch.equal(last["action"][31], last["action"][2])
    assert ds[n0]["episode_index"] == 1 and ds[n0]["frame_index"] == 0


def test_actions_only_samples_skip_video_and_keep_the_same_values(datasets):
    full = ClapDataset(datasets / "robot", image_size=16)
    lean = ClapDataset(datasets / "robot", image_size=16, load_images=False)
    lean._frame_image = None  # any video decoding would now fail loudly
    for i in (0, 7, len(lean) - 1):
        a, b = full[i], lean[i]
        assert "images" not in b and "future_head" not in b
        assert torch.equal(a["action"], b["action"]) and torch.equal(a["action_pad"], b["action_pad"])
        assert torch.equal(a["state"], b["state"]) and a["image_mask"].tolist() == b["image_mask"].tolist()


def test_the_layout_comes_from_the_contract_or_else_from_the_action_names(datasets, tmp_path):
    import shutil

    assert ClapDataset(datasets / "robot", load_images=False).layout == DEFAULT_LAYOUT
    copy = tmp_path / "robot"
    shutil.copytree(datasets / "robot", copy, ignore=shutil.ignore_patterns("cache", "videos"))
    (copy / "meta/contract.yaml").unlink()  # as in a dataset written by LeRobot itself
    ds = ClapDataset(copy, load_images=False)
    assert ds.layout == DEFAULT_LAYOUT and ds.action_space.euler_indices == [3, 4, 5, 10, 11, 12]
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"]["action"]["names"] = [f"joint_{i}" for i in range(14)]
    (copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="info.json.*action.*not one arm's"):
        ClapDataset(copy, load_images=False)


def test_images_and_future_head_are_the_right_frames(datasets):
    ds = ClapDataset(datasets / "robot", future_offset=8, image_size=32)
    head = decode_all(datasets / "robot/videos/observation.images.head/chunk-000/file-000.mp4")
    n0 = len(head)
    for t in (0, 13, n0 - 2, 7, 30):  # random order: seeks backwards and forwards
        s = ds[t]
        got = (s["images"]["head"].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(got - head[t]).max() <= 1
        fut = (s["future_head"].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(fut - head[min(t + 8, n0 - 1)]).max() <= 1
    batch = collate_samples([ds[0], ds[1], ds[2]])
    assert batch["images"]["left_wrist"].shape == (3, 3, 32, 32) and batch["action"].shape == (3, 32, 14)
    assert batch["is_robot"].dtype == torch.bool and isinstance(batch["subtask"], list)
    # picklable after use (DataLoader workers started with spawn), and gives the same samples
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[13]["images"]["head"], ds[13]["images"]["head"])


def test_convert_videos_and_mixed_sampling(datasets, capsys):
    rc = clap_main(["convert-videos", str(datasets / "videos"), "--out", str(datasets / "human"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.mp4" in err  # the broken video is named, the others converted
    info = json.loads((datasets / "human/meta/info.json").read_text())
    assert "action" not in info["features"] and "observation.state" not in info["features"]
    assert (
        info["total_episodes"] == 2 and info["total_frames"] == 39 + 23
    )  # 15 fps -> 30 fps, up to the last source frame
    frames = decode_all(datasets / "human/videos/observation.images.head/chunk-000/file-000.mp4")
    assert np.abs(frames[3].astype(float) - image_pattern(0, 1, 32, 32)).mean() < 4  # latest at or before
    human = ClapDataset(datasets / "human", image_size=16)
    h = human[0]
    assert (
        not h["is_robot"] and h["instruction"] == "wipe the table" and h["image_mask"].tolist() == [True, False, False]
    )
    assert h["action_pad"].all() and not h["action"].any() and not h["images"]["left_wrist"].any()
    robot = ClapDataset(datasets / "robot", image_size=16)
    mixed = MixedDataset(robot, human, human_fraction=0.5, seed=3)
    flags = [mixed[i]["is_robot"] for i in range(40)]
    assert 8 < sum(flags) < 32
    assert [mixed[i]["frame_index"] for i in range(5)] == [mixed[i]["frame_index"] for i in range(5)]
    with pytest.raises(ValueError, match="human_fraction"):
        MixedDataset(robot, human, human_fraction=1.0)


def test_frame_cache_gives_the_pixels_of_decoding_and_is_rebuilt_when_the_dataset_changes(datasets):
    cached = ClapDataset(datasets / "robot", future_offset=8, image_size=16, progress=False)
    decoded = ClapDataset(datasets / "robot", future_offset=8, image_size=16, frame_cache=False)
    for i in (0, 5, 13, len(cached) - 1, 3):
        a, b = cached[i], decoded[i]
        for cam in ("head", "left_wrist", "right_wrist"):
            assert torch.equal(a["images"][cam], b["images"][cam]), (i, cam)
        assert torch.equal(a["future_head"], b["future_head"])
    # the decode path resizes with the live node's function: the cache holds exactly its output
    head = decode_all(datasets / "robot/videos/observation.images.head/chunk-000/file-000.mp4")
    assert np.array_equal(cached.frame_cache().frame("head", 7), resize_rgb(head[7], 16, 16))
    meta = datasets / "robot/cache/frames-16px.json"
    built = json.loads(meta.read_text())
    assert built["shape"] == [len(cached), 3, 16, 16, 3]
    # a second dataset object reuses the cache; a changed video file makes it rebuild
    stamp = meta.stat().st_mtime_ns
    ClapDataset(datasets / "robot", image_size=16, progress=False).frame_cache()
    assert meta.stat().st_mtime_ns == stamp
    video = datasets / "robot/videos/observation.images.head/chunk-000/file-000.mp4"
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    rebuilt = ClapDataset(datasets / "robot", image_size=16, progress=False).frame_cache(threads=1)
    assert json.loads(meta.read_text())["fingerprint"] != built["fingerprint"]
    # built by one decoding thread, file after file: the same pixels
    assert np.array_equal(rebuilt.frame("head", 7), resize_rgb(head[7], 16, 16))


def test_frame_cache_names_a_video_that_lacks_frames(datasets, tmp_path):
    import shutil

    copy = tmp_path / "robot"
    shutil.copytree(datasets / "robot", copy, ignore=shutil.ignore_patterns("cache"))
    video = copy / "videos/observation.images.left_wrist/chunk-000/file-000.mp4"
    frames = decode_all(video)
    with Mp4Writer(video, 30, frames.shape[2], frames.shape[1]) as w:
        for f in frames[:5]:
            w.write(f)
    ds = ClapDataset(copy, image_size=16, progress=False)
    with pytest.raises(ValueError, match="left_wrist.*file-000.mp4.*not in the video"):
        ds[0]
    assert not (copy / "cache/frames-16px.json").exists()  # nothing that looks complete was left
