"""Human videos -> a LeRobotDataset v3.0 without state or action (the work behind ``clap convert-videos``).

Input: a folder of mp4 files and an instructions file, JSON (``{"file.mp4": "instruction"}`` or a
list of ``{"file": ..., "instruction": ...}``) or CSV (header ``file,instruction``). One video = one
episode; its frames become the head camera (``observation.images.head``), resampled to ``fps`` by
taking the latest source frame at or before each frame time, optionally resized. The store,
atomic publishing, skip-on-rerun and finalising are the bag converter's (lerobot_format).
A video that does not decode fails with an error naming the file; the others are converted.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pathlib
import shutil

import av
import numpy as np

from clap_train.data.recording.bagread import fingerprint
from clap_train.data.images import resize_rgb
from clap_train.data.recording.lerobot_format import finalize, store_dir, stored_episodes, write_frames
from clap_train.data.stats import image_stats
from clap_train.data.video import Mp4Writer, VideoError
from clap_train.io import atomic_dir

HEAD_KEY = "observation.images.head"


class InstructionsError(ValueError):
    """An instructions file that cannot be used; the message names the file and the entry."""


def load_instructions(path: str | pathlib.Path) -> dict[str, str]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise InstructionsError(f"instructions file not found: {path}")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                items = list(data.items())
            elif isinstance(data, list):
                items = [(d["file"], d["instruction"]) for d in data]
            else:
                raise InstructionsError(f"{path}: expected a mapping or a list of {{file, instruction}}")
        elif path.suffix.lower() == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and not {"file", "instruction"} <= set(rows[0]):
                raise InstructionsError(
                    f"{path}: the CSV header must have columns file,instruction; got {list(rows[0])}"
                )
            items = [(r["file"], r["instruction"]) for r in rows]
        else:
            raise InstructionsError(f"{path}: instructions must be .json or .csv")
    except (json.JSONDecodeError, KeyError, TypeError, csv.Error) as exc:
        raise InstructionsError(f"{path}: cannot parse: {exc}") from exc
    out = {}
    for name, text in items:
        if not str(text).strip():
            raise InstructionsError(f"{path}: empty instruction for {name}")
        out[str(name)] = str(text)
    return out


def _video_id(video: pathlib.Path) -> str:
    digest = hashlib.sha1(str(video.resolve()).encode()).hexdigest()[:8]
    return f"{video.stem}-{digest}"


def convert_video(
    video: pathlib.Path, instruction: str, out: pathlib.Path, fps: float, size: tuple[int, int] | None
) -> int:
    """One video -> one stored episode (atomically). Raises VideoError naming the file."""
    try:
        container = av.open(str(video))
        stream = container.streams.video[0]
    except Exception as exc:
        raise VideoError(f"{video}: cannot open video: {exc}") from exc
    with container, atomic_dir(store_dir(out) / _video_id(video)) as tmp:
        tb = float(stream.time_base)
        writer = None
        n_out = 0
        samples = []
        prev = None
        try:
            for frame in container.decode(stream):
                t = (frame.pts or 0) * tb
                rgb = frame.to_ndarray(format="rgb24")
                if size is not None:
                    rgb = resize_rgb(rgb, size[0], size[1])
                if writer is None:
                    t0 = t
                    writer = Mp4Writer(tmp / f"{HEAD_KEY}.mp4", fps, rgb.shape[0], rgb.shape[1])
                # emit every output frame whose time lies before this source frame (latest at or before)
                while prev is not None and t0 + n_out / fps < t - 1e-9:
                    writer.write(prev)
                    if n_out % 10 == 0 and len(samples) < 48:
                        samples.append(prev)
                    n_out += 1
                prev = rgb
        except VideoError:
            raise
        except Exception as exc:
            raise VideoError(f"{video}: does not decode: {exc}") from exc
        if writer is None or prev is None:
            raise VideoError(f"{video}: has no decodable video frames")
        writer.write(prev)
        samples.append(prev)
        n_out += 1
        writer.close()
        write_frames(
            tmp / "frames.parquet",
            {
                "timestamp": np.arange(n_out) / fps,
                "frame_index": np.arange(n_out),
                "task": [instruction] * n_out,
                "subtask": [""] * n_out,
            },
            None,
        )
        meta = {
            "kind": "human",
            "source": str(video.resolve()),
            "fingerprint": fingerprint(video),
            "length": n_out,
            "vector_names": None,
            "cameras": {
                HEAD_KEY: {
                    "file": f"{HEAD_KEY}.mp4",
                    "shape": [writer.height, writer.width],
                    "stats": image_stats(samples),
                }
            },
        }
        (tmp / "episode.json").write_text(json.dumps(meta, indent=2))
    return n_out


def convert_videos(folder, out, instructions=None, fps: float = 30.0, size=None, progress: bool = True):
    """Convert every mp4 of ``folder`` named in the instructions; returns (outcomes, info)."""
    from tqdm import tqdm

    folder, out = pathlib.Path(folder), pathlib.Path(out)
    if instructions is None:
        found = [p for p in (folder / "instructions.json", folder / "instructions.csv") if p.is_file()]
        if not found:
            raise InstructionsError(f"{folder}: no instructions.json or instructions.csv (or pass --instructions)")
        instructions = found[0]
    table = load_instructions(instructions)
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"))
    missing = [v.name for v in videos if v.name not in table]
    unknown = [name for name in table if not (folder / name).is_file()]
    out.mkdir(parents=True, exist_ok=True)
    store_dir(out).mkdir(parents=True, exist_ok=True)
    for stale in store_dir(out).glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    outcomes = [
        {"video": str(folder / n), "status": "failed", "error": f"{folder / n}: listed in {instructions} but missing"}
        for n in unknown
    ]
    outcomes += [
        {"video": str(folder / n), "status": "failed", "error": f"{folder / n}: no instruction in {instructions}"}
        for n in missing
    ]
    todo = [v for v in videos if v.name in table]
    for video in tqdm(todo, desc="convert-videos", unit="video", disable=not progress):
        meta = store_dir(out) / _video_id(video) / "episode.json"
        if meta.is_file() and json.loads(meta.read_text()).get("fingerprint") == fingerprint(video):
            outcomes.append({"video": str(video), "status": "skipped"})
            continue
        try:
            n = convert_video(video, table[video.name], out, fps, size)
            outcomes.append({"video": str(video), "status": "converted", "frames": n})
        except VideoError as exc:
            outcomes.append({"video": str(video), "status": "failed", "error": str(exc)})
    info = None
    if stored_episodes(out):
        info = finalize(out, fps=fps, robot_type=None, contract_yaml=None, report={"videos": outcomes})
    return outcomes, info
