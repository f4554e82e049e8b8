"""The training loader over the unified LeRobot v3.0 format (robot recordings and human videos).

``ClapDataset(root)`` gives, per frame t of an episode, a dict:

* ``images``: {"head", "left_wrist", "right_wrist"} float32 [3, S, S] in [0, 1] (zeros for a camera
  the dataset lacks), ``image_mask`` bool [3] (which cameras exist);
* ``future_head``: the head frame at t + future_offset (clamped to the episode's last frame), for
  the video model;
* ``action``: float32 [chunk_len, 14], actions t .. t+chunk_len-1 in the model's action space
  (``action_space``, an :class:`~clap_train.data.samples.action_space.ActionSpace`; default: absolute
  poses normalised with the dataset's q01/q99 from meta/stats.json), padded past the episode end
  by repeating the last action, ``action_pad`` bool [chunk_len] (True = padding); ``state``
  float32 [14] normalised; Euler angles are put on the branch where the state at t lies in
  [-pi, pi) (the same shift for the whole chunk, so it stays continuous), which is what the live
  node sees (``raw(i)`` gives state and chunk in robot units);
* human-video datasets (no action feature): action and state zeros, action_pad all True;
* ``is_robot``, ``instruction``, ``subtask``, ``episode_index``, ``frame_index``, and
  ``dataset_index`` (which of a stage's datasets the sample is from: samples/mixing.py).

Frames come from a :class:`~clap_train.data.samples.frame_cache.FrameCache` (every frame decoded once at
the training size and memory-mapped; built on the first image read, rebuilt when the dataset
changes). With ``frame_cache=False`` each frame is decoded on demand: the converter writes H.264
with a keyframe every 8 frames, and :class:`~clap_train.data.video.VideoFrameReader` seeks to the
keyframe before the wanted frame and decodes at most 7 more (an LRU of ``max_open_videos`` open
readers per worker process). Both paths resize with the live node's ``resize_rgb``.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from clap_train.data.images import resize_rgb
from clap_train.data.layout import DEFAULT_LAYOUT, ActionLayout
from clap_train.data.rotations import canonical_branch
from clap_train.data.samples.action_space import ActionSpace
from clap_train.data.samples.frame_cache import FrameCache
from clap_train.data.samples.normalize import Normalizer
from clap_train.data.video import VideoFrameReader

CAMERAS = ("head", "left_wrist", "right_wrist")
STATE_KEY, ACTION_KEY = "observation.state", "action"


class DatasetError(ValueError):
    """A dataset folder that cannot be read; the message names the file."""


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc


def _index_table(path: pathlib.Path, name: str) -> list[str]:
    if not path.is_file():
        return []
    t = pq.read_table(path)
    col = name if name in t.column_names else "__index_level_0__"
    order = np.asarray(t.column(f"{name}_index"))
    values = t.column(col).to_pylist()
    out = [""] * len(values)
    for i, v in zip(order, values):
        out[int(i)] = v
    return out


class ClapDataset(Dataset):
    """Samples of one LeRobot v3.0 dataset written by ``clap convert`` / ``clap convert-videos``."""

    def __init__(
        self,
        root: str | os.PathLike,
        chunk_len: int = 32,
        future_offset: int = 32,
        image_size: int = 224,
        max_open_videos: int = 24,
        load_images: bool = True,
        frame_cache: bool = True,
        progress: bool = True,
        dataset_index: int = 0,
    ):
        if chunk_len < 1 or future_offset < 0 or image_size < 8:
            raise ValueError(
                f"bad loader settings: chunk_len={chunk_len}, future_offset={future_offset}, image_size={image_size}"
            )
        self.root = pathlib.Path(root)
        self.chunk_len, self.future_offset, self.image_size = chunk_len, future_offset, image_size
        self.max_open_videos = max_open_videos
        # False: samples carry no "images"/"future_head" (no video is decoded), for stages that
        # read only actions (the Act-VAE).
        self.load_images = load_images
        self.use_frame_cache, self.progress = frame_cache, progress
        self.dataset_index = int(dataset_index)
        self._cache: FrameCache | None = None
        self.info = _read_json(self.root / "meta" / "info.json")
        if self.info.get("codebase_version") != "v3.0":
            raise DatasetError(
                f"{self.root / 'meta' / 'info.json'}: codebase_version "
                f"{self.info.get('codebase_version')!r}, need 'v3.0'"
            )
        self.fps = self.info["fps"]
        feats = self.info["features"]
        self.is_robot = ACTION_KEY in feats
        if self.is_robot and STATE_KEY not in feats:
            raise DatasetError(f"{self.root / 'meta' / 'info.json'}: has '{ACTION_KEY}' but no '{STATE_KEY}' feature")
        self.camera_keys = {cam: f"observation.images.{cam}" for cam in CAMERAS if f"observation.images.{cam}" in feats}
        self.action_names = feats[ACTION_KEY]["names"] if self.is_robot else None
        self.tasks = _index_table(self.root / "meta" / "tasks.parquet", "task")
        self.subtasks = _index_table(self.root / "meta" / "subtasks.parquet", "subtask")
        ep_files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not ep_files:
            raise DatasetError(
                f"{self.root / 'meta' / 'episodes'}: no episode metadata (is this a LeRobot v3.0 dataset?)"
            )
        self.episodes = sorted(
            (row for f in ep_files for row in pq.read_table(f).to_pylist()), key=lambda r: r["episode_index"]
        )
        if [int(r["episode_index"]) for r in self.episodes] != list(range(len(self.episodes))):
            raise DatasetError(f"{self.root / 'meta' / 'episodes'}: episode indices are not 0..N-1")
        self._euler = []
        contract_path = self.root / "meta" / "contract.yaml"
        self.action_space: ActionSpace | None = None
        # of the state and action vectors; a human-video dataset takes its robot datasets' (sources.py)
        self.layout: ActionLayout | None = None
        if self.is_robot:
            self.normalizer = Normalizer.from_stats_file(self.root / "meta" / "stats.json")
            if contract_path.is_file():
                from clap_train.data.contract import contract_from_yaml_text

                self.layout = contract_from_yaml_text(contract_path.read_text(), str(contract_path)).action.layout
            else:  # e.g. written by LeRobot itself: the action's dimension names say the layout
                try:
                    self.layout = ActionLayout.from_names(self.action_names)
                except ValueError as exc:
                    raise DatasetError(f"{self.root / 'meta' / 'info.json'}: {ACTION_KEY}: {exc}") from exc
            self._euler = self.layout.euler_indices
            self.action_space = ActionSpace("absolute", self.normalizer, self._euler)
        else:
            self.normalizer = None
        columns = ["episode_index", "frame_index", "task_index"]
        if "subtask_index" in feats:  # ours always; datasets written by LeRobot may lack it
            columns.append("subtask_index")
        if self.is_robot:
            columns += [STATE_KEY, ACTION_KEY]
        tables = []
        paths = dict.fromkeys(  # several episodes may share one data file (LeRobot's own writer)
            self.root
            / self.info["data_path"].format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
            for ep in self.episodes
        )
        for path in paths:
            try:
                tables.append(pq.read_table(path, columns=columns))
            except Exception as exc:
                raise DatasetError(f"{path}: cannot read frames: {exc}") from exc
        cols = {c: [] for c in columns}
        for t in tables:
            for c in columns:
                if c in (STATE_KEY, ACTION_KEY):
                    cols[c].append(np.asarray(t.column(c).combine_chunks().flatten()).reshape(t.num_rows, -1))
                else:
                    cols[c].append(np.asarray(t.column(c)))
        self._ep = np.concatenate(cols["episode_index"]).astype(np.int64)
        self._frame = np.concatenate(cols["frame_index"]).astype(np.int64)
        self._task = np.concatenate(cols["task_index"]).astype(np.int64)
        self._subtask = (
            np.concatenate(cols["subtask_index"]).astype(np.int64)
            if "subtask_index" in cols
            else np.zeros(len(self._ep), np.int64)
        )
        if self.is_robot:
            self._state = np.concatenate(cols[STATE_KEY]).astype(np.float64)
            self._action = np.concatenate(cols[ACTION_KEY]).astype(np.float64)
        self._start = {int(e["episode_index"]): int(e["dataset_from_index"]) for e in self.episodes}
        self._length = {int(e["episode_index"]): int(e["length"]) for e in self.episodes}
        self._readers: collections.OrderedDict[str, VideoFrameReader] = collections.OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._ep)

    def frames(self, key: str) -> np.ndarray:
        """Every frame's stored ``observation.state`` or ``action`` [N, D] (unwrapped along each episode)."""
        if not self.is_robot:
            raise DatasetError(f"{self.root} has no {key} (a human-video dataset)")
        return {STATE_KEY: self._state, ACTION_KEY: self._action}[key]

    def use_stats(self, stats: dict) -> None:
        """Normalise with ``stats`` (meta/stats.json format) instead of the dataset's own: a shared normaliser."""
        self.normalizer = Normalizer.from_stats(stats)
        self.action_space = ActionSpace("absolute", self.normalizer, self._euler)

    def __getstate__(self) -> dict:
        # open video decoders and memory maps are not pickled (DataLoader workers with spawn): reopen lazily
        state = self.__dict__.copy()
        state["_readers"] = collections.OrderedDict()
        state["_cache"] = None
        return state

    def frame_cache(self, threads: int | None = None) -> FrameCache:
        """The dataset's frame cache at ``image_size`` (built on first call when missing or stale).

        ``threads``: the build's decoding threads (default: one per usable CPU).
        """
        if self._cache is None:
            cams = [c for c in CAMERAS if c in self.camera_keys]
            self._cache = FrameCache.open(self.root, self.image_size, cams, self._videos_of, len(self),
                                          progress=self.progress, threads=threads)
        return self._cache

    def _videos_of(self, cam: str) -> list[tuple[pathlib.Path, list[tuple[int, int, int]]]]:
        """(video file, [(first dataset row, first frame in the file, frame count)]) of one camera."""
        key = self.camera_keys[cam]
        files: dict[pathlib.Path, list[tuple[int, int, int]]] = {}
        for row in self.episodes:
            ep = int(row["episode_index"])
            files.setdefault(self._video_path(key, ep), []).append(
                (self._start[ep], self._first_frame(key, ep), self._length[ep]))
        return list(files.items())

    # -- videos ---------------------------------------------------------------------------
    def _video_path(self, key: str, ep: int) -> pathlib.Path:
        row = self.episodes[ep]
        return self.root / self.info["video_path"].format(
            video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"]
        )

    def _first_frame(self, key: str, ep: int) -> int:
        """Where episode ``ep`` starts in its video file (several episodes may share one)."""
        return int(round(self.episodes[ep].get(f"videos/{key}/from_timestamp", 0.0) * self.fps))

    def _frame_image(self, cam: str, ep: int, frame: int) -> torch.Tensor:
        if self.use_frame_cache:
            rgb = self.frame_cache().frame(cam, self._start[ep] + frame)
        else:
            rgb = resize_rgb(self._decode(self.camera_keys[cam], ep, frame), self.image_size, self.image_size)
        return torch.as_tensor(np.array(rgb)).permute(2, 0, 1).float().div_(255.0)

    def _decode(self, key: str, ep: int, frame: int) -> np.ndarray:
        if os.getpid() != self._pid:  # a DataLoader worker: never share decoders across processes
            self._readers = collections.OrderedDict()
            self._pid = os.getpid()
        path = str(self._video_path(key, ep))
        reader = self._readers.pop(path, None) or VideoFrameReader(path)
        self._readers[path] = reader
        while len(self._readers) > self.max_open_videos:
            self._readers.popitem(last=False)[1].close()
        return reader.get(self._first_frame(key, ep) + frame)

    # -- samples --------------------------------------------------------------------------
    def subtasks_around(self, i: int, radius: int) -> tuple[str, ...]:
        """The subtask text of frames ``i - radius .. i + radius`` of frame ``i``'s episode (clipped to its ends)."""
        ep = int(self._ep[int(i)])
        rows = np.clip(np.arange(int(i) - radius, int(i) + radius + 1), self._start[ep],
                       self._start[ep] + self._length[ep] - 1)
        return tuple(self.subtasks[k] if self.subtasks else "" for k in self._subtask[rows])

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame ``i``'s state [D], action chunk [H, D] (robot units, state's Euler branch) and padding."""
        if not self.is_robot:
            raise DatasetError(f"{self.root} has no actions (a human-video dataset)")
        ep, t = int(self._ep[i]), int(self._frame[i])
        n, start, H = self._length[ep], self._start[ep], self.chunk_len
        steps = np.minimum(np.arange(t, t + H), n - 1)
        pad = np.arange(t, t + H) > n - 1
        state, chunk = canonical_branch(self._state[i], self._action[start + steps], self._euler)
        return state, chunk, pad

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames of {self.root}")
        ep, t = int(self._ep[i]), int(self._frame[i])
        n = self._length[ep]
        S = self.image_size
        images, mask = {}, []
        for cam in CAMERAS:
            key = self.camera_keys.get(cam)
            if self.load_images:
                images[cam] = self._frame_image(cam, ep, t) if key else torch.zeros(3, S, S)
            mask.append(key is not None)
        head_key = self.camera_keys.get("head")
        future = None
        if self.load_images:
            future = (
                self._frame_image("head", ep, min(t + self.future_offset, n - 1)) if head_key
                else torch.zeros(3, S, S)
            )
        H = self.chunk_len
        if self.is_robot:
            state, chunk, pad = self.raw(i)
            action = self.action_space.encode(chunk, state)
            state = self.action_space.encode_state(state)
        else:
            dim = (self.layout or DEFAULT_LAYOUT).dim
            action = np.zeros((H, dim), np.float32)
            state = np.zeros(dim, np.float32)
            pad = np.ones(H, dtype=bool)
        sample = {
            "images": images,
            "image_mask": torch.tensor(mask, dtype=torch.bool),
            "future_head": future,
            "action": torch.from_numpy(action),
            "action_pad": torch.from_numpy(pad),
            "state": torch.from_numpy(state),
            "is_robot": self.is_robot,
            "instruction": self.tasks[self._task[i]] if self.tasks else "",
            "subtask": self.subtasks[self._subtask[i]] if self.subtasks else "",
            "episode_index": ep,
            "frame_index": t,
            "dataset_index": self.dataset_index,
        }
        if not self.load_images:
            del sample["images"], sample["future_head"]
        return sample


def collate_samples(samples: Sequence[dict]) -> dict:
    """Stack tensors (and the images dict), keep strings as lists, ints/bools as tensors."""
    out: dict = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if key == "images":
            out[key] = {cam: torch.stack([v[cam] for v in vals]) for cam in vals[0]}
        elif isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], bool):
            out[key] = torch.tensor(vals, dtype=torch.bool)
        elif isinstance(vals[0], int):
            out[key] = torch.tensor(vals, dtype=torch.long)
        else:
            out[key] = list(vals)
    return out
