"""
Approximate-time synchronizer for the policy's cameras: the freshest complete set within a slop.

Written here because message_filters is not installable on the project's machines (no PyPI
wheel); this is the small piece of it the node needs, in pure Python so it is unit-tested
without ROS. Stamps are floats in seconds (header stamps of the images).

``FreshestSetSynchronizer.latest()`` returns, among all combinations of one buffered message
per key whose stamps lie within ``slop`` of each other, the one whose newest stamp is the
largest (ties broken by the largest oldest stamp), or ``None``. A set in which a message is
older than its key's ``max_age`` (``now`` minus its stamp; one value for every key, or one per
key, e.g. each camera's ``max_age_s`` of the contract) is never returned. ``offer()`` buffers a
message and tells whether a newer complete set exists since the last offer (what wakes the
node's inference worker); ``take_new()`` hands each set out once.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class StampedItem:
    """One buffered message: its header stamp (s), receive time (s) and payload."""

    stamp: float
    received: float
    payload: Any


@dataclasses.dataclass(frozen=True)
class SyncedSet:
    """One complete set: key -> StampedItem."""

    items: dict[str, StampedItem]

    @property
    def newest(self) -> float:
        """Return the newest header stamp of the set (s)."""
        return max(item.stamp for item in self.items.values())

    @property
    def oldest(self) -> float:
        """Return the oldest header stamp of the set (s)."""
        return min(item.stamp for item in self.items.values())

    def stamps(self) -> tuple[float, ...]:
        """Return the stamps in key order (used to tell sets apart)."""
        return tuple(self.items[k].stamp for k in sorted(self.items))


class FreshestSetSynchronizer:
    """Keeps the last ``depth`` messages per key and yields the freshest complete set."""

    def __init__(self, keys: Sequence[str], slop: float, max_age: float | Mapping[str, float],
                 depth: int = 8):
        if not keys:
            raise ValueError("synchronizer needs at least one key")
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate synchronizer keys: {list(keys)}")
        if slop < 0:
            raise ValueError(f"slop must be >= 0, got {slop}")
        ages = (dict(max_age) if isinstance(max_age, Mapping)
                else dict.fromkeys(keys, max_age))
        if set(ages) != set(keys):
            raise ValueError(f"max_age keys {sorted(ages)} are not the keys {sorted(keys)}")
        if any(not a > 0 for a in ages.values()):
            raise ValueError(f"max_age must be > 0, got {ages}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.keys = tuple(keys)
        self.slop = float(slop)
        self.max_age = {k: float(ages[k]) for k in self.keys}  # key -> s
        self._buffers = {k: collections.deque(maxlen=depth) for k in self.keys}
        self._last_taken: tuple[float, ...] | None = None
        self._last_offered: tuple[float, ...] | None = None
        self._lock = threading.Lock()

    def add(self, key: str, stamp: float, payload: Any, received: float | None = None) -> None:
        """Buffer one message; out-of-order stamps are inserted in order."""
        if key not in self._buffers:
            raise KeyError(f"unknown synchronizer key {key!r}; known: {list(self.keys)}")
        item = StampedItem(float(stamp), float(stamp if received is None else received), payload)
        with self._lock:
            buf = self._buffers[key]
            if buf and item.stamp < buf[-1].stamp:
                items = sorted([*buf, item], key=lambda i: i.stamp)[-buf.maxlen:]
                buf.clear()
                buf.extend(items)
            else:
                buf.append(item)

    def offer(self, key: str, stamp: float, payload: Any, now: float,
              received: float | None = None) -> bool:
        """Buffer one message; tell whether a newer complete set exists than at the last offer."""
        self.add(key, stamp, payload, received)
        synced = self.latest(now)
        if synced is None:
            return False
        stamps = synced.stamps()
        with self._lock:
            if stamps == self._last_offered:
                return False
            self._last_offered = stamps
        return True

    def newest_stamp(self, key: str) -> float | None:
        """Return the stamp of the newest message of ``key``, or None when none arrived."""
        with self._lock:
            buf = self._buffers[key]
            return buf[-1].stamp if buf else None

    def latest(self, now: float) -> SyncedSet | None:
        """Return the freshest complete set within the slop in which no message is too old."""
        with self._lock:
            if any(not buf for buf in self._buffers.values()):
                return None
            pivots = sorted({i.stamp for buf in self._buffers.values() for i in buf}, reverse=True)
            for pivot in pivots:
                chosen = {}
                for key, buf in self._buffers.items():
                    match = None
                    for item in reversed(buf):
                        if item.stamp <= pivot + 1e-12:
                            if item.stamp >= pivot - self.slop - 1e-12:
                                match = item
                            break
                    if match is None:
                        break
                    chosen[key] = match
                else:
                    synced = SyncedSet(chosen)
                    if any(now - item.stamp > self.max_age[k] for k, item in chosen.items()):
                        return None
                    return synced
            return None

    def take_new(self, now: float) -> SyncedSet | None:
        """Return what ``latest`` does, but each set only once (None until a newer one)."""
        synced = self.latest(now)
        if synced is None:
            return None
        stamps = synced.stamps()
        with self._lock:
            if self._last_taken is not None and stamps == self._last_taken:
                return None
            self._last_taken = stamps
        return synced

    def ages(self, now: float) -> dict[str, float]:
        """Return the age (now - newest stamp) per key; -1.0 when nothing arrived yet."""
        with self._lock:
            return {k: (now - buf[-1].stamp if buf else -1.0) for k, buf in self._buffers.items()}

    def clear(self) -> None:
        """Forget every buffered message."""
        with self._lock:
            for buf in self._buffers.values():
                buf.clear()
            self._last_taken = self._last_offered = None
