"""Where a recording drops out: the contract's gap policy turns one aligned bag into episodes.

A camera or state topic without a message within its ``max_age_s`` inside a recording is a gap
(align.py finds them); time is never spliced over one. ``plan_parts`` applies ``gaps.policy``:
``split`` keeps each side long enough as an episode of its own (``part_id``: ``<bag id>-partNNN``,
numbered in time order), ``drop`` keeps only the longest side, ``fail`` fails the bag. Its split
record (gaps and parts, kept or dropped, with times and reasons) goes into each episode.json and
meta/conversion.json's ``splits``; ``split_log`` says the same in log lines.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np

from clap_train.data.recording.align import AlignedEpisode
from clap_train.data.recording.bagread import BagError
from clap_train.data.contract import Contract


def part_id(eid: str, part: int) -> str:
    """The id of part ``part`` of a bag split at a gap (sorts after the bag's id, in part order)."""
    return f"{eid}-part{part:03d}"


def is_own(name: str, eid: str) -> bool:
    """Whether a store entry is the bag ``eid``'s episode or one of its parts."""
    return re.fullmatch(re.escape(eid) + r"(-part\d{3,})?", name) is not None


def _s(ns: int) -> float:
    return round(ns / 1e9, 6)


@dataclasses.dataclass
class Part:
    """One side of the gaps in a bag: its frames and the episode it is stored as (None: dropped)."""

    index: int
    episode: AlignedEpisode
    episode_id: str | None  # None: dropped
    reason: str


def plan_parts(
    bag: pathlib.Path, eid: str, contract: Contract, aligned: AlignedEpisode, files
) -> tuple[list[Part], dict | None]:
    """Apply the contract's gap policy to bag ``eid``: the parts to store (and its split record, if any gap).

    Raises BagError (naming ``files``) for gaps.policy fail, or when no part is long enough.
    """
    if not aligned.gaps:
        return [Part(0, aligned, eid, "")], None
    policy, min_frames = contract.gaps.policy, contract.gaps.min_part_frames
    origin = aligned.origin_ns
    topics = list(dict.fromkeys(t for g in aligned.gaps for t in g.topics))
    if policy == "fail":
        gap = aligned.gaps[0]
        more = f" (and {len(aligned.gaps) - 1} more gaps)" if len(aligned.gaps) > 1 else ""
        raise BagError(
            bag,
            f"drop-out: {gap.describe(origin)}{more}; the contract's gaps.policy is fail",
            ", ".join(topics),
            files,
        )
    parts = [aligned.part(k) for k in range(len(aligned.parts))]
    lengths = [len(p.frame_times) for p in parts]
    longest = int(np.argmax(lengths))
    planned = []
    for k, ep in enumerate(parts):
        sides = ([f"after gap {k - 1}"] if k > 0 else []) + ([f"before gap {k}"] if k < len(parts) - 1 else [])
        where = f"the part {' and '.join(sides)}"
        if lengths[k] < min_frames:
            reason = f"dropped: {where} has {lengths[k]} frames, fewer than gaps.min_part_frames {min_frames}"
        elif policy == "drop" and k != longest:
            reason = f"dropped: gaps.policy drop keeps only the longest part ({longest}, {lengths[longest]} frames)"
        else:
            planned.append(Part(k, ep, part_id(eid, k), f"kept: {where} (gaps.policy {policy})"))
            continue
        planned.append(Part(k, ep, None, reason))
    if not any(p.episode_id for p in planned):
        raise BagError(
            bag,
            f"drop-outs leave no part of at least gaps.min_part_frames {min_frames} frames "
            f"(parts: {lengths}); first gap: {aligned.gaps[0].describe(origin)}",
            ", ".join(topics),
            files,
        )
    record = {
        "bag": str(bag.resolve()),
        "policy": policy,
        "min_part_frames": min_frames,
        "start_time_ns": origin,  # the recording's first frame; *_s times below are seconds after it
        "gaps": [
            {
                "gap": k,
                "start_s": _s(g.start_ns - origin),  # the last frame before it (end of part k)
                "end_s": _s(g.end_ns - origin),  # the first frame after it (start of part k + 1)
                "seconds": _s(g.end_ns - g.start_ns),
                "frames": g.frames,
                "topics": g.topics,
                "silence_s": [round(x, 6) for x in g.silence_s],
                "max_age_s": g.max_age_s,
                "reason": g.describe(origin),
            }
            for k, g in enumerate(aligned.gaps)
        ],
        "parts": [
            {
                "part": p.index,
                "episode_id": p.episode_id,
                "status": "converted" if p.episode_id else "dropped",
                "frames": len(p.episode.frame_times),
                "start_s": _s(int(p.episode.frame_times[0]) - origin),  # its first frame
                "end_s": _s(int(p.episode.frame_times[-1]) - origin),  # its last frame
                "start_time_ns": int(p.episode.frame_times[0]),
                "end_time_ns": int(p.episode.frame_times[-1]),
                "reason": p.reason,
            }
            for p in planned
        ],
    }
    return planned, record


def split_log(o) -> list[str]:
    """Log lines for a bag converted at a gap (an EpisodeOutcome): how it was split, each part left out."""
    if o.split is None or o.status != "converted":
        return []
    sp = o.split
    kept = [p for p in sp["parts"] if p["episode_id"]]
    lines = [
        f"GAP bag {o.bag}: {len(sp['gaps'])} drop-out(s), gaps.policy {sp['policy']}: "
        f"{len(kept)} of {len(sp['parts'])} parts stored as {', '.join(p['episode_id'] for p in kept)}; "
        f"first gap: {sp['gaps'][0]['reason']}"
    ]
    for p in sp["parts"]:
        if not p["episode_id"]:
            lines.append(
                f"GAP bag {o.bag}: part {p['part']} ({p['start_s']:.3f}-{p['end_s']:.3f} s, {p['frames']} frames) "
                f"left out: {p['reason']}"
            )
    return lines
