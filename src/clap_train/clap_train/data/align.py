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
* Commands (``action``) use the latest command at or before t; ``max_age_s: null`` holds the last
  command forever. Before an arm's first command (or when its command is stale) the arm's action
  is its current state: the robot holds its pose.
* The instruction is the latest one at or before t (the first one before it is published); the
  subtask is the latest at or before t, or "" before the first.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clap_train.data.bagread import BagContents, BagError, Series
from clap_train.data.contract import Contract
from clap_train.data.rotations import wrap_to_pi


@dataclasses.dataclass
class AlignedEpisode:
    """An episode on the reference time grid (images still to be decoded, by message index)."""

    frame_times: np.ndarray  # int64 [T] ns
    image_index: dict[str, np.ndarray]  # camera -> message index [T]
    state: np.ndarray  # float64 [T, D], Euler unwrapped within the episode
    action: np.ndarray  # float64 [T, D], unwrapped and on the same 2*pi branch as the state
    instruction: list[str]  # [T]
    subtask: list[str]  # [T]
    dropped_stale: int  # grid frames left out because a camera/state stream was stale
    held_actions: int  # frames whose action (some arm) fell back to holding the state


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
    picks = []
    for series, max_age in frame_streams:
        idx, ok = latest_at_or_before(series.stamps, grid, _age(max_age))
        keep &= ok
        picks.append(idx)
    dropped = int((~keep).sum())
    if not keep.any():
        raise BagError(bag.path, "no frame has a fresh message on every camera and state topic", files=bag.files)
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
            (bag.action_pose[a], act_arm.pose.max_age_s, a_pose, 6),
            (bag.action_gripper[a], act_arm.gripper.max_age_s, a_grip, 1),
        ):
            idx, ok = latest_at_or_before(series.stamps, times, _age(max_age))
            vals = np.asarray(series.values).reshape(len(series.stamps), width)
            target[ok] = vals[idx[ok]]
            held |= ~ok
        # Commands and state were unwrapped separately: put the commands on the state's branch.
        diff = np.mean(a_pose[:, 3:6] - s_pose[:, 3:6], axis=0)
        a_pose[:, 3:6] -= 2 * np.pi * np.round(diff / (2 * np.pi))
        action_parts.append(np.concatenate([a_pose, a_grip], axis=1))
    state = np.concatenate(state_parts, axis=1)
    action = np.concatenate(action_parts, axis=1)
    # Held actions copied from an unwrapped state are fine; commands re-unwrapped along frames
    # keep the chunk continuous where a command crossed +-pi between two frames.
    eul = contract.action.euler_indices
    action[:, eul] = np.unwrap(action[:, eul], axis=0)

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
    )


def canonical_branch(state: np.ndarray, action: np.ndarray, euler_indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Shift each frame's Euler angles by the multiple of 2*pi that wraps its *state* to [-pi, pi).

    The same shift is applied to the actions of that frame, so a chunk stays continuous and starts
    near the wrapped state the live node sees. Used for statistics and by the loader.
    """
    offset = wrap_to_pi(state[..., euler_indices]) - state[..., euler_indices]
    s, a = state.copy(), action.copy()
    s[..., euler_indices] += offset
    a[..., euler_indices] += offset
    return s, a
