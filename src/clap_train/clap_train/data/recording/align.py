"""Aligning a recording's topics to the contract's reference rate (30 Hz).

For each frame time t the value of a topic is its latest message stamped at or before t (never a
future message), and only if that message is at most ``max_age_s`` old. Written by hand because it
is ``np.searchsorted`` plus the contract's rules, which no library knows:

* Frame times are ``t_k = t_0 + k / rate``. ``t_0`` is the first instant at which every camera and
  every state stream has a message (so the episode starts with a complete observation: anything
  recorded before that is dropped); the last frame is at or before the end of the earliest-ending
  camera/state stream.
* A frame is emitted only when every camera and every state stream has a fresh message (age <=
  max_age). Frames where one of them is stale (a dropped camera) are left out and counted.
  Stale frames inside the recording are a *gap*: the complete frames on either side are kept
  as separate *parts* (``AlignedEpisode.parts``), never spliced into one continuous time line;
  the converter turns them into episodes according to the contract's ``gaps`` policy. Stale
  frames at the very start or end only trim the recording.
* Commands (``action``) use the latest command at or before t; ``max_age_s: null`` holds the last
  command forever. Before an arm's first command (or when its command is stale) the arm's action
  is its current state: the robot holds its pose.
* The instruction is the latest one at or before t (the first one before it is published); the
  subtask is the latest at or before t, or "" before the first.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clap_train.data.recording.bagread import BagContents, BagError, Series
from clap_train.data.contract import Contract
from clap_train.data.layout import EULER
from clap_train.data.rotations import nearest_branch, unwrap_euler


@dataclasses.dataclass
class Gap:
    """Grid frames inside a recording where some camera/state stream had no fresh message."""

    start_ns: int  # time of the last complete frame before the gap
    end_ns: int  # time of the first complete frame after it
    frames: int  # grid frames left out
    topics: list[str]  # the streams that were stale, in contract order
    silence_s: list[float]  # per topic: its longest time without a message across the gap
    max_age_s: list[float]  # per topic: its max_age_s

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def describe(self, origin_ns: int) -> str:
        """The gap in words, with times in seconds after ``origin_ns``.

        E.g. ``no message on /cam for 0.533 s (max_age_s 0.1), between 1.267 s and 1.733 s after
        the first frame (13 frames at the reference rate)``.
        """
        what = "; ".join(
            f"no message on {t} for {s:.3f} s (max_age_s {a:g})"
            for t, s, a in zip(self.topics, self.silence_s, self.max_age_s)
        )
        return (
            f"{what}, between {(self.start_ns - origin_ns) / 1e9:.3f} s and {(self.end_ns - origin_ns) / 1e9:.3f} s "
            f"after the first frame ({self.frames} frames at the reference rate)"
        )


@dataclasses.dataclass
class AlignedEpisode:
    """An episode on the reference time grid (images still to be decoded, by message index).

    The arrays hold every complete frame of the recording; ``parts`` are the index ranges of its
    runs of consecutive grid frames and ``gaps[k]`` lies between ``parts[k]`` and ``parts[k + 1]``.
    A recording without a gap has one part. :meth:`part` gives one part as an episode of its own.
    """

    frame_times: np.ndarray  # int64 [T] ns
    image_index: dict[str, np.ndarray]  # camera -> message index [T]
    state: np.ndarray  # float64 [T, D], Euler unwrapped within the episode
    action: np.ndarray  # float64 [T, D], unwrapped and on the same 2*pi branch as the state
    instruction: list[str]  # [T]
    subtask: list[str]  # [T]
    dropped_stale: int  # grid frames left out because a camera/state stream was stale
    held_actions: int  # frames whose action (some arm) fell back to holding the state
    held: np.ndarray | None = None  # bool [T]: this frame's action holds the state (some arm)
    parts: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # [start, stop) per part
    gaps: list[Gap] = dataclasses.field(default_factory=list)  # len(parts) - 1
    origin_ns: int = 0  # the recording's first grid frame (gap descriptions give times after it)

    def part(self, k: int) -> AlignedEpisode:
        """Part ``k`` alone (no gap inside it): the same fields, sliced."""
        a, b = self.parts[k]
        held = self.held[a:b] if self.held is not None else None
        return AlignedEpisode(
            frame_times=self.frame_times[a:b],
            image_index={c: v[a:b] for c, v in self.image_index.items()},
            state=self.state[a:b],
            action=self.action[a:b],
            instruction=self.instruction[a:b],
            subtask=self.subtask[a:b],
            dropped_stale=self.dropped_stale,
            held_actions=int(held.sum()) if held is not None else self.held_actions,
            held=held,
            parts=[(0, b - a)],
            gaps=[],
            origin_ns=self.origin_ns,
        )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


def _gap(grid, a: int, b: int, frame_streams, fresh: list[np.ndarray], picks: list[np.ndarray]) -> Gap:
    """The gap of stale grid frames [a, b) (complete frames at a - 1 and b)."""
    topics, silence, ages = [], [], []
    for (series, max_age), ok, idx in zip(frame_streams, fresh, picks):
        if ok[a:b].all():
            continue
        last = idx[a:b][~ok[a:b]]  # the message each stale frame would have used
        nxt = np.minimum(last + 1, len(series.stamps) - 1)
        topics.append(series.topic)
        silence.append(float((series.stamps[nxt] - series.stamps[last]).max()) / 1e9)
        ages.append(max_age)
    return Gap(int(grid[a - 1]), int(grid[b]), b - a, topics, silence, ages)


def latest_at_or_before(stamps: np.ndarray, times: np.ndarray, max_age_ns: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Index of the latest stamp <= each time, and whether it exists and is fresh enough."""
    idx = np.searchsorted(stamps, times, side="right") - 1
    ok = idx >= 0
    if max_age_ns is not None:
        age = times - stamps[np.clip(idx, 0, None)]
        ok &= age <= max_age_ns
    return idx, ok


def _age(spec_max_age: float | None) -> int | None:
    return None if spec_max_age is None else int(round(spec_max_age * 1e9))


def align_episode(bag: BagContents, contract: Contract) -> AlignedEpisode:
    """Put one recording's messages on the reference grid; raises BagError if no frame is complete."""
    period = contract.period_ns
    frame_streams: list[tuple[Series, float | None]] = []
    for cam in contract.cameras:
        frame_streams.append((bag.images[cam.name], cam.max_age_s))
    for arm, pose, grip in zip(contract.state.arms, bag.state_pose, bag.state_gripper):
        frame_streams.append((pose, arm.pose.max_age_s))
        frame_streams.append((grip, arm.gripper.max_age_s))
    start = max(int(s.stamps[0]) for s, _ in frame_streams)
    end = min(int(s.stamps[-1]) for s, _ in frame_streams)
    if end < start:
        raise BagError(
            bag.path,
            "the camera and state streams never overlap in time (no complete observation)",
            files=bag.files,
        )
    grid = start + period * np.arange((end - start) // period + 1, dtype=np.int64)
    keep = np.ones(len(grid), dtype=bool)
    picks, fresh = [], []
    for series, max_age in frame_streams:
        idx, ok = latest_at_or_before(series.stamps, grid, _age(max_age))
        keep &= ok
        picks.append(idx)
        fresh.append(ok)
    dropped = int((~keep).sum())
    if not keep.any():
        raise BagError(bag.path, "no frame has a fresh message on every camera and state topic", files=bag.files)
    runs = _runs(keep)  # runs of complete grid frames: the parts; what lies between them: the gaps
    gaps = [
        _gap(grid, stop, next_start, frame_streams, fresh, picks)
        for (_, stop), (next_start, _) in zip(runs, runs[1:])
    ]
    parts, n = [], 0
    for a, b in runs:
        parts.append((n, n + b - a))
        n += b - a
    times = grid[keep]
    picks = [p[keep] for p in picks]
    ncam = len(contract.cameras)
    image_index = {cam.name: picks[i] for i, cam in enumerate(contract.cameras)}

    state_parts, action_parts = [], []
    held = np.zeros(len(times), dtype=bool)
    for a, arm in enumerate(contract.state.arms):
        pose_idx, grip_idx = picks[ncam + 2 * a], picks[ncam + 2 * a + 1]
        s_pose = bag.state_pose[a].values[pose_idx]
        s_grip = bag.state_gripper[a].values[grip_idx][:, None]
        state_parts.append(np.concatenate([s_pose, s_grip], axis=1))
        act_arm = contract.action.arms[a]
        a_pose = s_pose.copy()
        a_grip = s_grip.copy()
        for series, max_age, target, width in (
            (bag.action_pose[a], act_arm.pose.max_age_s, a_pose, EULER.stop),  # xyz + Euler
            (bag.action_gripper[a], act_arm.gripper.max_age_s, a_grip, 1),
        ):
            idx, ok = latest_at_or_before(series.stamps, times, _age(max_age))
            vals = np.asarray(series.values).reshape(len(series.stamps), width)
            target[ok] = vals[idx[ok]]
            held |= ~ok
        # Commands and state were unwrapped separately: put the commands on the state's branch.
        mean_offset = np.mean(a_pose[:, EULER] - s_pose[:, EULER], axis=0)
        a_pose[:, EULER] += nearest_branch(mean_offset, 0.0) - mean_offset
        action_parts.append(np.concatenate([a_pose, a_grip], axis=1))
    state = np.concatenate(state_parts, axis=1)
    action = np.concatenate(action_parts, axis=1)
    # Held actions copied from an unwrapped state are fine; commands re-unwrapped along frames
    # keep the chunk continuous where a command crossed +-pi between two frames.
    eul = contract.action.euler_indices
    action[:, eul] = unwrap_euler(action[:, eul], axis=0)

    instr_idx, _ = latest_at_or_before(bag.instruction.stamps, times, None)
    instr_vals = bag.instruction.values
    instruction = [instr_vals[max(i, 0)] for i in instr_idx]
    if bag.subtask is not None and len(bag.subtask.stamps):
        sub_idx, sub_ok = latest_at_or_before(bag.subtask.stamps, times, _age(contract.subtask.max_age_s))
        subtask = [bag.subtask.values[i] if ok else "" for i, ok in zip(sub_idx, sub_ok)]
    else:
        subtask = [""] * len(times)
    return AlignedEpisode(
        frame_times=times,
        image_index=image_index,
        state=state,
        action=action,
        instruction=instruction,
        subtask=subtask,
        dropped_stale=dropped,
        held_actions=int(held.sum()),
        held=held,
        parts=parts,
        gaps=gaps,
        origin_ns=int(grid[0]),
    )
