"""Mirror augmentation: robot samples and their left-right mirror images, as one dataset.

Where the workcell is symmetric about the world plane x = 0 (the ALOHA sim's table, arms, cameras
and lights are; ``bench/mirror_check.py`` measures it), the mirror image of a demonstration is a
demonstration of the other arm. :class:`Mirrored` gives, after the base dataset's N samples, the
mirror image of each (index ``N + i`` mirrors sample ``i``):

* the head image (and ``future_head``) flipped left-right;
* the wrist images swapped between the arms, each flipped (and ``image_mask`` swapped with them);
* each arm's state and action chunk given to the other arm, reflected: the reflection
  M = diag(-1, 1, 1) maps a position p to Mp and a rotation R to M R M, which for Euler xyz angles
  (roll, pitch, yaw) is (roll, -pitch, -yaw), in either convention; the gripper is unchanged;
* the words "left" and "right" swapped in the instruction and the subtask.

The chunk is mirrored in robot units (``raw``) and encoded with the dataset's action space, so the
normaliser need not be symmetric. A mirrored sample has its own index, so everything keyed by the
index (the mix's draw, the KM reference cache) treats it as a sample of its own, and a resumed run
sees the same samples.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clap_train.data.layout import ActionLayout
from clap_train.data.rotations import canonical_branch

ARMS = ("left", "right")
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclasses.dataclass
class MirrorKeys:
    """The config key of the CLAP-NTP and CLAP-RF configs (they inherit it)."""

    # add the left-right mirror image of every robot sample (a workcell symmetric about x = 0: data/samples/mirror.py)
    mirror: bool = False


def swap_sides(text: str) -> str:
    """``text`` with the words left and right swapped (case kept: "Left" -> "Right")."""
    def other(m: re.Match) -> str:
        word = m.group(0)
        new = "right" if word.lower() == "left" else "left"
        return new.capitalize() if word[0].isupper() else new

    return _SIDE.sub(other, text)


class MirrorMap:
    """The reflection of state and action vectors of a two-arm ``layout`` (arms named left and right)."""

    def __init__(self, layout: ActionLayout):
        if sorted(layout.arms) != sorted(ARMS):
            raise ValueError(f"mirror augmentation needs two arms named {ARMS}; this layout's arms are "
                             f"{list(layout.arms)}")
        left, right = layout.arm("left"), layout.arm("right")
        self.order = np.arange(layout.dim)  # vector[order]: each arm's values moved to the other arm
        self.order[left.span], self.order[right.span] = np.arange(layout.dim)[right.span], \
            np.arange(layout.dim)[left.span]
        self.sign = np.ones(layout.dim)
        self.sign[layout.indices("x", "pitch", "yaw")] = -1.0
        self.euler = layout.euler_indices

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """Mirror [..., D] state or action vectors (robot units)."""
        return np.asarray(vectors, dtype=np.float64)[..., self.order] * self.sign

    def raw(self, state: np.ndarray, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A frame's mirrored state and chunk, back on the branch that wraps the state to [-pi, pi)."""
        return canonical_branch(self(state), self(chunk), self.euler)


def mirror_images(images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Head flipped; the wrists swapped and flipped ([..., H, W] tensors: the last axis is the image's x)."""
    out = dict(images)
    out["head"] = images["head"].flip(-1)
    out["left_wrist"], out["right_wrist"] = images["right_wrist"].flip(-1), images["left_wrist"].flip(-1)
    return out


class Mirrored(Dataset):
    """A robot dataset (``ClapDataset`` or ``DatasetMix``) followed by the mirror image of each sample."""

    def __init__(self, base: Any):
        from clap_train.data.samples.dataset import CAMERAS

        self.base, self.map = base, MirrorMap(base.layout)
        self._mask_order = [CAMERAS.index(c) for c in ("head", "right_wrist", "left_wrist")]

    def __len__(self) -> int:
        return 2 * len(self.base)

    def _source(self, i: int) -> tuple[int, bool]:
        i, n = int(i), len(self.base)
        if not 0 <= i < 2 * n:
            raise IndexError(f"index {i} out of range for {2 * n} samples (mirrored)")
        return (i, False) if i < n else (i - n, True)

    def __getitem__(self, i: int) -> dict:
        j, flip = self._source(i)
        sample = self.base[j]
        if not flip:
            return sample
        sample = dict(sample)
        state, chunk, _pad = self.base.raw(j)
        state, chunk = self.map.raw(state, chunk)
        space = self.base.action_space
        sample["action"] = torch.from_numpy(space.encode(chunk, state))
        sample["state"] = torch.from_numpy(space.encode_state(state))
        if "images" in sample:
            sample["images"] = mirror_images(sample["images"])
        if sample.get("future_head") is not None:
            sample["future_head"] = sample["future_head"].flip(-1)
        sample["image_mask"] = sample["image_mask"][self._mask_order]
        sample["instruction"] = swap_sides(sample["instruction"])
        sample["subtask"] = swap_sides(sample["subtask"])
        return sample

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        j, flip = self._source(i)
        state, chunk, pad = self.base.raw(j)
        return (*self.map.raw(state, chunk), pad) if flip else (state, chunk, pad)

    def subtasks_around(self, i: int, radius: int) -> tuple[str, ...]:
        j, flip = self._source(i)
        texts = self.base.subtasks_around(j, radius)
        return tuple(swap_sides(t) for t in texts) if flip else texts

    @property
    def action_space(self):
        return self.base.action_space

    @action_space.setter
    def action_space(self, space) -> None:
        self.base.action_space = space
