"""The LeRobotDataset v3.0 layout: episode staging, and finalising the dataset's files.

Written by hand (pyarrow + json) because LeRobot itself cannot be installed beside this
project's torch (see scripts/lerobot_check/, which proves LeRobot 0.4.4's reader loads our output).

Layout (as LeRobot 0.4.4 writes it; one episode per data file and per video file)::

    data/chunk-000/file-000.parquet          frames: timestamp, frame_index, episode_index, index,
                                             task_index, subtask_index, observation.state, action
    videos/<camera key>/chunk-000/file-000.mp4
    meta/info.json  meta/stats.json  meta/tasks.parquet  meta/subtasks.parquet
    meta/episodes/chunk-000/file-000.parquet meta/contract.yaml  meta/conversion.json

Crash safety: each converted episode is first published whole (``atomic_dir``) into the
store ``.clap/episodes/<id>/`` (frames.parquet, one mp4 per camera, episode.json); a half-converted
episode never appears there. :func:`finalize` then rebuilds data/, videos/ (hard links) and meta/
from every stored episode in a temporary folder and swaps them in; a kill during finalize is
repaired by running the converter again (it skips stored episodes and finalises anew).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clap_train.data.stats import pool_stats, vector_stats
from clap_train.io import atomic_write_text, fsync_dir

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STORE = ".clap/episodes"
STATE_KEY, ACTION_KEY = "observation.state", "action"


@dataclasses.dataclass
class StoredEpisode:
    """One published episode in the store."""

    dir: pathlib.Path
    meta: dict

    @property
    def id(self) -> str:
        return self.dir.name


def store_dir(root: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(root) / STORE


def stored_episodes(root: str | os.PathLike) -> list[StoredEpisode]:
    """Every complete episode in the store, sorted by id (= the episode order of the dataset)."""
    out = []
    d = store_dir(root)
    if not d.is_dir():
        return out
    for sub in sorted(d.iterdir()):
        if sub.name.startswith(".") or not (sub / "episode.json").is_file():
            continue
        out.append(StoredEpisode(sub, json.loads((sub / "episode.json").read_text())))
    return out


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def write_frames(path: pathlib.Path, columns: dict[str, object], dim: int | None) -> None:
    """Write an episode's frames (strings for task/subtask; finalize turns them into indices)."""
    arrays, names = [], []
    for name, value in columns.items():
        if name in (STATE_KEY, ACTION_KEY):
            flat = pa.array(np.asarray(value, dtype=np.float32).reshape(-1), pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, dim))
        elif name == "timestamp":
            arrays.append(pa.array(np.asarray(value, dtype=np.float32)))
        elif name == "frame_index":
            arrays.append(pa.array(np.asarray(value, dtype=np.int64)))
        else:
            arrays.append(pa.array(list(value), pa.string()))
        names.append(name)
    pq.write_table(pa.table(arrays, names=names), path)


def _pandas_index_table(values: list[str], index_name: str, column: str) -> pa.Table:
    """A table that pandas reads back as DataFrame({column: 0..n-1}, index=values), LeRobot's tasks format."""
    table = pa.table(
        {column: pa.array(np.arange(len(values), dtype=np.int64)), index_name: pa.array(values, pa.string())}
    )
    pandas_meta = {
        "index_columns": [index_name],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {"name": column, "field_name": column, "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {
                "name": index_name,
                "field_name": index_name,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def features_for(
    fps: float, cameras: dict[str, tuple[int, int]], vector_names: Sequence[str] | None
) -> dict[str, dict]:
    """info.json features: videos per camera key, optional state/action, index columns, subtask_index."""
    feats: dict[str, dict] = {}
    for key, (h, w) in cameras.items():
        feats[key] = {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    if vector_names is not None:
        for key in (STATE_KEY, ACTION_KEY):
            feats[key] = {"dtype": "float32", "shape": [len(vector_names)], "names": list(vector_names)}
    feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in ("frame_index", "episode_index", "index", "task_index", "subtask_index"):
        feats[key] = {"dtype": "int64", "shape": [1], "names": None}
    return feats


def _link_or_copy(src: pathlib.Path, dst: pathlib.Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def finalize(
    root: str | os.PathLike,
    *,
    fps: float,
    robot_type: str | None,
    contract_yaml: str | None,
    euler_indices: Sequence[int] = (),
    report: dict | None = None,
) -> dict:
    """(Re)build data/, videos/ and meta/ of ``root`` from the stored episodes; returns info.json."""
    from clap_train.data.rotations import canonical_branch

    root = pathlib.Path(root)
    fps = int(fps) if float(fps).is_integer() else float(fps)
    episodes = stored_episodes(root)
    if not episodes:
        raise RuntimeError(f"{root}: no converted episode to write a dataset from")
    first = episodes[0].meta
    cameras = {k: tuple(v["shape"]) for k, v in first["cameras"].items()}
    vector_names = first.get("vector_names")
    for ep in episodes[1:]:
        shapes = {k: tuple(v["shape"]) for k, v in ep.meta["cameras"].items()}
        if shapes != cameras or ep.meta.get("vector_names") != vector_names:
            raise RuntimeError(
                f"{root}: episode {ep.id} (from {ep.meta['source']}) has cameras {shapes} / vector "
                f"{ep.meta.get('vector_names')}, episode {episodes[0].id} has {cameras} / {vector_names}: "
                "one dataset needs one layout (set each camera's size in the contract)"
            )
    dim = len(vector_names) if vector_names else None

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".finalize.", dir=root / ".clap"))
    try:
        tasks: dict[str, int] = {}
        subtasks: dict[str, int] = {}
        ep_rows: list[dict] = []
        states, actions = [], []
        image_parts: dict[str, list] = {k: [] for k in cameras}
        scalars: dict[str, list] = {
            k: [] for k in ("timestamp", "frame_index", "episode_index", "index", "task_index", "subtask_index")
        }
        offset = 0
        for ep_index, ep in enumerate(episodes):
            table = pq.read_table(ep.dir / "frames.parquet")
            n = table.num_rows
            task_col = table.column("task").to_pylist()
            sub_col = table.column("subtask").to_pylist()
            task_idx = np.array([tasks.setdefault(t, len(tasks)) for t in task_col], dtype=np.int64)
            sub_idx = np.array([subtasks.setdefault(s, len(subtasks)) for s in sub_col], dtype=np.int64)
            chunk, file = divmod(ep_index, CHUNKS_SIZE)
            cols = {
                "timestamp": table.column("timestamp"),
                "frame_index": table.column("frame_index"),
                "episode_index": pa.array(np.full(n, ep_index, dtype=np.int64)),
                "index": pa.array(np.arange(offset, offset + n, dtype=np.int64)),
                "task_index": pa.array(task_idx),
                "subtask_index": pa.array(sub_idx),
            }
            if dim:
                cols[STATE_KEY] = table.column(STATE_KEY)
                cols[ACTION_KEY] = table.column(ACTION_KEY)
                s = np.asarray(table.column(STATE_KEY).combine_chunks().flatten()).reshape(n, dim)
                a = np.asarray(table.column(ACTION_KEY).combine_chunks().flatten()).reshape(n, dim)
                s, a = canonical_branch(s.astype(np.float64), a.astype(np.float64), list(euler_indices))
                states.append(s)
                actions.append(a)
            for k in scalars:
                scalars[k].append(np.asarray(cols[k]))
            path = tmp / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(cols), path)
            row = {
                "episode_index": ep_index,
                "tasks": list(dict.fromkeys(task_col)),
                "length": n,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": offset,
                "dataset_to_index": offset + n,
            }
            for key, cam in ep.meta["cameras"].items():
                _link_or_copy(
                    ep.dir / cam["file"], tmp / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                )
                row[f"videos/{key}/chunk_index"] = chunk
                row[f"videos/{key}/file_index"] = file
                row[f"videos/{key}/from_timestamp"] = 0.0
                row[f"videos/{key}/to_timestamp"] = n / fps
                image_parts[key].append(cam["stats"])
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            row["clap/source"] = ep.meta["source"]
            row["clap/episode_id"] = ep.id
            ep_rows.append(row)
            offset += n

        meta = tmp / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True)
        ep_table = pa.Table.from_pylist(ep_rows)
        pq.write_table(ep_table, tmp / EPISODES_PATH.format(chunk_index=0, file_index=0))
        pq.write_table(_pandas_index_table(list(tasks), "task", "task_index"), meta / "tasks.parquet")
        pq.write_table(_pandas_index_table(list(subtasks), "subtask", "subtask_index"), meta / "subtasks.parquet")

        stats: dict[str, dict] = {}
        if dim:
            stats[STATE_KEY] = vector_stats(np.concatenate(states))
            stats[ACTION_KEY] = vector_stats(np.concatenate(actions))
        for key, parts in image_parts.items():
            stats[key] = pool_stats(parts)
        for key, parts in scalars.items():
            stats[key] = vector_stats(np.concatenate(parts).astype(np.float64))
        (meta / "stats.json").write_text(json.dumps(stats, indent=2))
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": robot_type,
            "total_episodes": len(episodes),
            "total_frames": offset,
            "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features_for(fps, cameras, vector_names),
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4))
        if contract_yaml is not None:
            (meta / "contract.yaml").write_text(contract_yaml)
        (meta / "conversion.json").write_text(json.dumps(report or {}, indent=2))
        # fsync what was written, then swap each top-level folder in.
        for dirpath, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    os.fsync(f.fileno())
        for part in ("data", "videos", "meta"):
            dst = root / part
            old = root / ".clap" / f"old-{part}"
            if old.exists():
                shutil.rmtree(old)
            if dst.exists():
                os.replace(dst, old)
            if (tmp / part).exists():
                os.replace(tmp / part, dst)
            if old.exists():
                shutil.rmtree(old)
        fsync_dir(root)
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: pathlib.Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))
