"""Mirror augmentation: the reflection of poses, images and text, and a mirrored dataset that trains."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from clap_train.config import load_config
from clap_train.data.layout import DEFAULT_LAYOUT, ActionLayout
from clap_train.data.recording.synthetic import write_dataset
from clap_train.data.samples.mirror import MirrorMap, Mirrored, swap_sides
from clap_train.data.samples.sources import DatasetEntry, Sources, open_mixed
from clap_train.train import ntp, rf
from clap_train.train.rf import Indexed

M = np.diag([-1.0, 1.0, 1.0])  # the reflection about the world plane x = 0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("mirror") / "robot", 3, seed=4, episode_len=40, image_size=32)


def test_swap_sides_swaps_whole_words_and_keeps_case():
    assert swap_sides("lower the left gripper; Right arm holds") == "lower the right gripper; Left arm holds"
    assert swap_sides("leftover brightness") == "leftover brightness"
    assert swap_sides(swap_sides("the left and the right")) == "the left and the right"


def test_mirror_map_reflects_each_pose_onto_the_other_arm():
    rng = np.random.default_rng(0)
    vec = rng.uniform(-1.5, 1.5, size=(5, DEFAULT_LAYOUT.dim))
    out = MirrorMap(DEFAULT_LAYOUT)(vec)
    left, right = DEFAULT_LAYOUT.arm("left"), DEFAULT_LAYOUT.arm("right")
    for src, dst in ((left, right), (right, left)):
        np.testing.assert_allclose(out[:, dst.position], vec[:, src.position] @ M)
        assert np.array_equal(out[:, dst.gripper], vec[:, src.gripper])
        # the mirrored Euler angles are the rotation M R M (a proper rotation: the reflected frame)
        r = Rotation.from_euler("xyz", vec[:, src.euler]).as_matrix()
        np.testing.assert_allclose(Rotation.from_euler("xyz", out[:, dst.euler]).as_matrix(), M @ r @ M, atol=1e-12)
    np.testing.assert_allclose(MirrorMap(DEFAULT_LAYOUT)(out), vec)


def test_mirror_needs_a_left_and_a_right_arm():
    with pytest.raises(ValueError, match=r"arms named \('left', 'right'\).*\['solo'\]"):
        MirrorMap(ActionLayout(("solo",)))


def test_mirrored_sample_is_the_reflected_scene(dataset):
    cfg = load_config(ntp.NTPTrainConfig, None, [])
    data, space = open_mixed(Sources(robot=(DatasetEntry(str(dataset)),)), cfg, 8, 32, 4, None, progress=False,
                             mirror=True)
    plain, _ = open_mixed(Sources(robot=(DatasetEntry(str(dataset)),)), cfg, 8, 32, 4, None, progress=False)
    n = len(plain)
    assert len(data) == 2 * n
    for i in (0, 17, n - 1):
        a, b = data[i], data[n + i]
        assert torch.equal(a["action"], plain[i]["action"])  # the first half is the dataset itself
        assert torch.equal(b["images"]["head"], a["images"]["head"].flip(-1))
        assert torch.equal(b["images"]["left_wrist"], a["images"]["right_wrist"].flip(-1))
        assert torch.equal(b["images"]["right_wrist"], a["images"]["left_wrist"].flip(-1))
        assert torch.equal(b["future_head"], a["future_head"].flip(-1))
        assert b["instruction"] == swap_sides(a["instruction"]) and b["subtask"] == swap_sides(a["subtask"])
        state, chunk, _ = data.base.raw(n + i)
        np.testing.assert_allclose(space.decode(b["action"].numpy(), None), chunk, atol=1e-5)
        mirrored = MirrorMap(DEFAULT_LAYOUT)(data.base.raw(i)[1])
        turns = (chunk - mirrored)[:, DEFAULT_LAYOUT.euler_indices] / (2 * np.pi)  # the branch may move by 2 pi
        np.testing.assert_allclose(chunk[:, [0, 7]], mirrored[:, [0, 7]])
        np.testing.assert_allclose(turns, np.round(turns), atol=1e-9)
    sides = {s for i in range(n) for s in [data[i]["subtask"]] if "left" in s or "right" in s}
    assert sides, "the synthetic subtasks name an arm: the swap is tested"


def test_a_missing_wrist_moves_with_its_image(dataset):
    base = open_mixed(Sources(robot=(DatasetEntry(str(dataset)),)), load_config(ntp.NTPTrainConfig, None, []),
                      8, 32, 4, None, progress=False)[0].base
    one_wrist = _Masked(base, torch.tensor([True, True, False]))
    assert Mirrored(one_wrist)[len(base)]["image_mask"].tolist() == [True, False, True]


class _Masked:
    """A dataset whose samples say the right wrist camera is missing."""

    def __init__(self, base, mask):
        self.base, self.mask = base, mask
        self.action_space, self.layout = base.action_space, base.layout

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return {**self.base[i], "image_mask": self.mask}

    def raw(self, i):
        return self.base.raw(i)


def test_rf_config_mirror_reaches_the_jittered_subtasks(dataset):
    cfg = load_config(rf.RFTrainConfig, None, [f"mirror={json.dumps(True)}"])
    assert cfg.mirror
    data, _ = open_mixed(Sources(robot=(DatasetEntry(str(dataset)),)), cfg, 8, 32, 4, None, progress=False,
                         mirror=cfg.mirror)
    n = len(data) // 2
    window = Indexed(data, subtask_radius=3)
    assert window[n + 5]["subtask_window"] == tuple(swap_sides(t) for t in window[5]["subtask_window"])
    assert window[n + 5]["sample_index"] == n + 5  # its own key in the KM reference cache
