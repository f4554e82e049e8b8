"""The action space the models learn in: robot-unit chunks <-> normalised model chunks.

Two representations of a chunk ``a[0..H-1]`` observed at state ``s`` (both 14-D robot vectors):

* ``absolute``: the poses themselves (Euler angles on the state's branch).
* ``relative`` (the authors' release, OpenCLAP): per arm, the position as a delta to the state,
  ``p_k - p_s``; the rotation as the relative rotation ``R_k R_s^T`` written as Euler xyz; the
  gripper as it is. The state stays absolute. A chunk then says how the arm moves from where
  it is, which transfers across object positions and survives drift: a policy that is a few
  millimetres off the demonstration asks for the same motion from there.

Each model-space dimension is then normalised with its q01/q99 over the training chunks
(:class:`~clap_train.data.samples.normalize.Normalizer`). ``ActionSpace.fit`` computes those statistics;
the Act-VAE stage fits the space and exports it (``action_space.json``), every later stage and
the deployed policy read it from there, so one file says how the models see actions.

``lowpass_chunks`` is the authors' smoothing of the Act-VAE's training chunks (OpenCLAP): a
zero-phase low-pass FIR on the pose dimensions. It shapes what the Act-VAE learns to encode, not
the space: decoding is the same with or without it, and a decoded chunk is judged against the raw
demonstrated one (eval/rate_distortion.py, ``decoded_errors``).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

from clap_train.data.layout import DEFAULT_LAYOUT, EULER, ArmSlices
from clap_train.data.samples.normalize import Normalizer
from clap_train.data.stats import vector_stats
from clap_train.data.rotations import nearest_branch, unwrap_euler

REPRESENTATIONS = ("absolute", "relative")
FILENAME = "action_space.json"


def arm_blocks(euler_indices: Sequence[int]) -> list[tuple[int, int, int]]:
    """(position start, Euler start, gripper index) of each arm whose roll/pitch/yaw are at ``euler_indices``.

    Each run of three Euler indices is one arm of the layout (clap_train.data.layout).
    """
    idx = sorted(int(i) for i in euler_indices)
    if len(idx) % 3 or any(idx[k + 1] != idx[k] + 1 or idx[k + 2] != idx[k] + 2 for k in range(0, len(idx), 3)):
        raise ValueError(f"Euler indices {idx} are not runs of roll, pitch, yaw")
    blocks = []
    for k in range(0, len(idx), 3):
        start = idx[k] - EULER.start
        if start < 0:
            raise ValueError(f"Euler run at {idx[k]} has no xyz position before it")
        blocks.append(ArmSlices(f"arm{k // 3}", start).block)
    return blocks


def pose_indices(euler_indices: Sequence[int]) -> list[int]:
    """Position and Euler dimensions of every arm (everything but the grippers)."""
    return [i for p, e, _g in arm_blocks(euler_indices) for i in (*range(p, p + 3), *range(e, e + 3))]


def lowpass_episode(episode: np.ndarray, chunk_len: int, euler_indices: Sequence[int], cutoff_hz: float = 8.0,
                    rate_hz: float = 30.0, taps: int = 19) -> np.ndarray:
    """An episode [n, D] padded with H copies of its first action and 2H of its last, pose dims low-passed.

    Chunk t of ``lowpass_chunks`` is rows ``H + t .. 2H + t - 1`` of the result; Euler angles are
    unwrapped along time.
    """
    a = np.asarray(episode, dtype=np.float64)
    H = int(chunk_len)
    if taps - 1 > H:
        raise ValueError(f"a {taps}-tap filter reaches past a {H}-step chunk's neighbours")
    euler = [int(i) for i in euler_indices]
    pose = pose_indices(euler)
    padded = np.concatenate([np.repeat(a[:1], H, 0), a, np.repeat(a[-1:], 2 * H, 0)])
    padded[:, euler] = np.unwrap(padded[:, euler], axis=0)
    from scipy.signal import filtfilt, firwin  # here: importing scipy.signal costs ~1 s in every process

    padded[:, pose] = filtfilt(firwin(taps, cutoff_hz, fs=rate_hz, window="hamming"), [1.0], padded[:, pose], axis=0)
    return padded


def lowpass_chunks(episode: np.ndarray, chunk_len: int, euler_indices: Sequence[int], **fir) -> np.ndarray:
    """Every chunk ``a[t : t + H]`` of an episode [n, D], its pose dims low-passed as the authors do -> [n, H, D].

    OpenCLAP: a zero-phase FIR (19 taps, Hamming window, 8 Hz cut-off at 30 Hz: ``fir``'s
    defaults, ``lowpass_episode``; applied forward and backward, scipy's ``filtfilt``) smooths the
    window ``a[t - H : t + 2H]`` (indices clipped to the episode, like the chunk's own past its
    end) and keeps its middle third, so the chunk sees no edge effect. Grippers are not filtered;
    each chunk comes back continuous on the Euler branch of its raw first row. A filtered sample
    depends on the ``taps - 1`` samples either side of it (fewer than H), so one pass over the
    padded episode equals the per-window filter (a test checks it).
    """
    a = np.asarray(episode, dtype=np.float64)
    n, H = len(a), int(chunk_len)
    euler = [int(i) for i in euler_indices]
    out = lowpass_episode(a, H, euler, **fir)[H + np.arange(n)[:, None] + np.arange(H)[None, :]]
    first = out[:, 0, euler]
    out[..., euler] += (nearest_branch(first, a[:, euler]) - first)[:, None, :]
    return out


class ActionSpace:
    """``encode`` robot chunks into normalised model chunks and ``decode`` them back.

    ``normalizer`` holds the model-space statistics under ``action`` and the state's under
    ``observation.state``.
    """

    def __init__(self, representation: Literal["absolute", "relative"], normalizer: Normalizer,
                 euler_indices: Sequence[int]):
        if representation not in REPRESENTATIONS:
            raise ValueError(f"action representation {representation!r} is not one of {list(REPRESENTATIONS)}")
        self.representation = representation
        self.normalizer = normalizer
        self.euler_indices = [int(i) for i in euler_indices]
        self.blocks = arm_blocks(self.euler_indices)

    # -- robot units <-> model units (unnormalised) ---------------------------------------------
    def to_model(self, chunk: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Robot chunk(s) [..., H, D] at state(s) [..., D] -> model-space chunk(s), not normalised."""
        a = np.array(chunk, dtype=np.float64, copy=True)
        if self.representation == "absolute":
            return a
        s = np.asarray(state, dtype=np.float64)
        for p, e, _g in self.blocks:
            a[..., p:p + 3] -= s[..., None, p:p + 3]
            ra = Rotation.from_euler("xyz", a[..., e:e + 3].reshape(-1, 3))
            s_rot = np.broadcast_to(s[..., None, e:e + 3], a[..., e:e + 3].shape)
            rs = Rotation.from_euler("xyz", s_rot.reshape(-1, 3))
            a[..., e:e + 3] = (ra * rs.inv()).as_euler("xyz").reshape(a[..., e:e + 3].shape)
        return a

    def to_robot(self, model: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Model-space chunk [H, D] at ``state`` [D] -> robot chunk; Euler angles continuous along time."""
        a = np.array(model, dtype=np.float64, copy=True)
        if self.representation == "absolute":
            return a
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        for p, e, _g in self.blocks:
            a[:, p:p + 3] += s[p:p + 3]
            r = Rotation.from_euler("xyz", a[:, e:e + 3]) * Rotation.from_euler("xyz", s[e:e + 3])
            euler = unwrap_euler(r.as_euler("xyz"), axis=0)
            # the branch of row 0 nearest to the state's own angles, for the whole chunk
            a[:, e:e + 3] = euler + (nearest_branch(euler[0], s[e:e + 3]) - euler[0])
        return a

    # -- normalised ------------------------------------------------------------------------------
    def encode(self, chunk: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Robot chunk [H, D] at ``state`` -> normalised model chunk (float32)."""
        return self.normalizer.normalize("action", self.to_model(chunk, state)).astype(np.float32)

    def decode(self, model: np.ndarray, state: np.ndarray | None) -> np.ndarray:
        """Normalised model chunk [H, D] -> robot chunk (float64). ``relative`` needs the state."""
        if self.representation == "relative" and state is None:
            raise ValueError("this policy predicts actions relative to the robot state: give the state "
                             "(the node's use_state parameter)")
        return self.to_robot(self.normalizer.unnormalize("action", np.asarray(model, dtype=np.float64)), state)

    def encode_state(self, state: np.ndarray) -> np.ndarray:
        return self.normalizer.normalize("observation.state", np.asarray(state, dtype=np.float64)).astype(np.float32)

    # -- statistics and files ----------------------------------------------------------------------
    @classmethod
    def fit(cls, representation: str, states: np.ndarray, chunks: np.ndarray, pads: np.ndarray,
            euler_indices: Sequence[int]) -> ActionSpace:
        """Statistics of the model-space chunks ``[N, H, D]`` (rows with ``pads`` True left out)."""
        tmp = cls(representation, Normalizer({}, {}), euler_indices)
        model = tmp.to_model(chunks, states)
        rows = model[~np.asarray(pads, dtype=bool)]
        if rows.size == 0:
            raise ValueError("no unpadded action rows to fit the action space on")
        stats = {"action": vector_stats(rows), "observation.state": vector_stats(states)}
        return cls(representation, Normalizer.from_stats(stats), euler_indices)

    def to_dict(self) -> dict:
        return {"representation": self.representation, "euler_indices": self.euler_indices,
                "stats": self.normalizer.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> ActionSpace:
        return cls(data["representation"], Normalizer.from_dict(data["stats"]), data["euler_indices"])

    def save(self, directory: str | pathlib.Path) -> pathlib.Path:
        from clap_train.io import atomic_write_text

        path = pathlib.Path(directory) / FILENAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, directory: str | pathlib.Path, euler_indices: Sequence[int] | None = None) -> ActionSpace:
        """``action_space.json`` of a directory; older exports (only ``stats.json``) are absolute."""
        directory = pathlib.Path(directory)
        path = directory / FILENAME
        try:
            if path.is_file():
                return cls.from_dict(json.loads(path.read_text()))
            stats = directory / "stats.json"
            if stats.is_file():
                return cls("absolute", Normalizer.from_stats_file(stats),
                           euler_indices if euler_indices is not None else DEFAULT_LAYOUT.euler_indices)
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a valid action space: {exc}") from exc
        raise FileNotFoundError(f"{directory} has no {FILENAME} (nor stats.json)")


def load_action_space(directory: str | pathlib.Path) -> ActionSpace | None:
    """The action space an Act-VAE export or a policy directory names; None when it names none."""
    try:
        return ActionSpace.load(directory)
    except FileNotFoundError:
        return None


def fit_action_space(dataset, representation: str, max_samples: int = 20_000) -> ActionSpace:
    """Fit ``representation``'s statistics on a dataset with ``raw(i)`` and ``action_space`` (its Euler layout).

    At most ``max_samples`` frames, evenly spaced, are used.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot fit an action space on an empty dataset")
    idx = np.unique(np.linspace(0, n - 1, min(n, max_samples)).round().astype(int))
    states, chunks, pads = zip(*(dataset.raw(int(i)) for i in idx))
    return ActionSpace.fit(representation, np.stack(states), np.stack(chunks), np.stack(pads),
                           dataset.action_space.euler_indices)
