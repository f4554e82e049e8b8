"""
Append-only episode log (JSON lines) for the StartEpisode/EndEpisode services.

Every record is written with one ``write``, then flushed and fsynced before the service
answers, so a crash loses nothing that was acknowledged. A start record is written too, so an
episode that never ended (crash, kill) is still visible in the log.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time
from typing import Any


class EpisodeLog:
    """JSON-lines file, one object per event ("start" or "end")."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Append one record, flushed and fsynced."""
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def start(self, episode_id: str, instruction: str, seed: int, wall_time: float | None = None):
        """Record an episode start."""
        self.append({"event": "start", "episode_id": episode_id, "instruction": instruction,
                     "seed": int(seed), "start_time": time.time() if wall_time is None
                     else wall_time})

    def end(self, episode_id: str, instruction: str, seed: int, success: bool, reward: float,
            notes: str, start_time: float, end_time: float, duration: float) -> None:
        """Record an episode's outcome and timing."""
        self.append({"event": "end", "episode_id": episode_id, "instruction": instruction,
                     "seed": int(seed), "success": bool(success), "reward": float(reward),
                     "notes": notes, "start_time": start_time, "end_time": end_time,
                     "duration": duration})

    def read(self) -> list[dict[str, Any]]:
        """Read all records, in order (a torn line from a crash is reported, not hidden)."""
        if not self.path.exists():
            return []
        records = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}:{n}: not a JSON record ({exc})") from exc
        return records
