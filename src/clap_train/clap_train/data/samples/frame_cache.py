"""Every camera frame of a dataset, decoded once and resized to the training size, memory-mapped.

Decoding H.264 per training sample costs ~60 ms for three cameras (seek to a keyframe, decode
up to 7 more frames, resize), which makes training input-bound on a CPU. The cache decodes each
video file once (files side by side, one thread per usable CPU), resizes every frame with
:func:`~clap_train.data.images.resize_rgb` (the function the live node uses, so training sees the
pixels deployment sees) and stores them in one uint8 array ``[frames, cameras, S, S, 3]`` that is
memory-mapped (``numpy.memmap``): the OS page cache shares it between DataLoader workers and a
sample costs a copy.

Files, in ``<dataset>/cache/`` (or ``$CLAP_CACHE_DIR/<name>-<hash>/`` when the dataset folder is
read-only or the variable is set)::

    frames-<S>px.u8     the raw array
    frames-<S>px.json   shape, cameras and the dataset fingerprint; written last

Built on first use, rebuilt when the dataset changes: the fingerprint covers the size and
modification time of ``meta/info.json``, the episode tables and every video file. The build
writes to temporary names and renames them, so a crash never leaves a cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np

from clap_train.cpus import available_cpus
from clap_train.data.images import resize_rgb

FORMAT = "clap-frame-cache/1"


def dataset_fingerprint(root: pathlib.Path) -> str:
    """A hash of (path, size, mtime) of the files a frame cache depends on."""
    files = [root / "meta" / "info.json"]
    files += sorted((root / "meta" / "episodes").rglob("*.parquet"))
    files += sorted((root / "videos").rglob("*.mp4"))
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _cache_dir(root: pathlib.Path) -> pathlib.Path:
    env = os.environ.get("CLAP_CACHE_DIR")
    if env:
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
        return pathlib.Path(env) / f"{root.name}-{tag}"
    local = root / "cache"
    try:
        local.mkdir(exist_ok=True)
        probe = local / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return local
    except OSError:
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
        return pathlib.Path.home() / ".cache" / "clap" / "frames" / f"{root.name}-{tag}"


class FrameCache:
    """Read-only view of a built cache: ``frame(camera, row)`` -> SxSx3 uint8."""

    def __init__(self, data_path: pathlib.Path, shape: tuple[int, ...], cameras: Sequence[str]):
        self.path = data_path
        self.cameras = list(cameras)
        self._cam = {c: k for k, c in enumerate(self.cameras)}
        self.array = np.memmap(data_path, dtype=np.uint8, mode="r", shape=tuple(shape))

    @property
    def image_size(self) -> int:
        return int(self.array.shape[2])

    def frame(self, camera: str, row: int) -> np.ndarray:
        """Camera ``camera``'s frame of dataset row ``row`` (the global frame ``index``): a read-only view."""
        return self.array[int(row), self._cam[camera]]

    @classmethod
    def open(cls, root: str | os.PathLike, image_size: int, cameras: Sequence[str],
             videos: Callable[[str], list[tuple[pathlib.Path, list[tuple[int, int, int]]]]],
             num_rows: int, progress: bool = True, threads: int | None = None) -> FrameCache:
        """The cache of ``root`` at ``image_size``; built (or rebuilt) first when missing or stale.

        ``videos(camera)`` lists that camera's video files, each with its episodes as
        (first dataset row, first frame in the file, frame count). ``threads``: decoding threads of
        a build (default: one per usable CPU).
        """
        root = pathlib.Path(root)
        where = _cache_dir(root)
        name = f"frames-{int(image_size)}px"
        meta_path, data_path = where / f"{name}.json", where / f"{name}.u8"
        fingerprint = dataset_fingerprint(root)
        shape = (int(num_rows), len(cameras), int(image_size), int(image_size), 3)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = None
        fresh = (meta is not None and meta.get("format") == FORMAT and meta.get("fingerprint") == fingerprint
                 and tuple(meta.get("shape", ())) == shape and meta.get("cameras") == list(cameras)
                 and data_path.is_file() and data_path.stat().st_size == int(np.prod(shape)))
        if not fresh:
            _build(root, where, name, shape, cameras, videos, fingerprint, progress, threads or available_cpus())
        return cls(data_path, shape, cameras)


def _build(root: pathlib.Path, where: pathlib.Path, name: str, shape: tuple[int, ...], cameras: Sequence[str],
           videos, fingerprint: str, progress: bool, threads: int) -> None:
    from tqdm.auto import tqdm

    where.mkdir(parents=True, exist_ok=True)
    tmp = where / f"{name}.u8.tmp-{os.getpid()}"
    size = shape[2]
    filled = np.zeros((shape[0], shape[1]), dtype=bool)
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    try:
        jobs = [(k, path, eps) for k, cam in enumerate(cameras) for path, eps in videos(cam)]
        bar = tqdm(total=shape[0] * shape[1], desc=f"frame cache {size}px", unit="frame",
                   disable=not progress, dynamic_ncols=True)

        def decode(dest: np.memmap, k: int, path: pathlib.Path, eps) -> None:
            """Decode one video file into its rows of camera ``k`` in ``dest`` (files write disjoint rows)."""
            # frame index within the file -> dataset rows that show it
            wanted: dict[int, list[int]] = {}
            for first_row, first_frame, count in eps:
                for t in range(count):
                    wanted.setdefault(first_frame + t, []).append(first_row + t)
            try:
                with av.open(str(path)) as container:
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    rate = stream.average_rate or stream.guessed_rate
                    per = float(1 / (rate * stream.time_base)) if rate else 1.0
                    for frame in container.decode(stream):
                        rows = wanted.pop(int(round(frame.pts / per)), None)
                        if rows is None:
                            continue
                        img = resize_rgb(frame.to_ndarray(format="rgb24"), size, size)
                        for r in rows:
                            dest[r, k] = img
                            filled[r, k] = True
                        bar.update(len(rows))
            except av.error.FFmpegError as exc:
                raise ValueError(f"{path}: does not decode while building the frame cache: {exc}") from exc
            if wanted:
                missing = sorted(wanted)[:5]
                raise ValueError(f"{path}: frames {missing} (and {max(0, len(wanted) - 5)} more) that the "
                                 f"episode table names are not in the video")

        # Decoding and resizing release the GIL: ``threads`` threads decode files side by side.
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), threads))) as pool:
            futures = [pool.submit(decode, out, *job) for job in jobs]
            try:
                for done in futures:
                    done.result()  # the first file that fails raises here
            except BaseException:
                for f in futures:
                    f.cancel()  # the files not started yet
                raise
        bar.close()
        if not filled.all():
            r, k = np.argwhere(~filled)[0]
            raise ValueError(f"{root}: no video frame for row {r} of camera {cameras[k]}")
        out.flush()
        del out
        os.replace(tmp, where / f"{name}.u8")
        meta = {"format": FORMAT, "fingerprint": fingerprint, "shape": list(shape), "cameras": list(cameras),
                "resize": "clap_train.data.images.resize_rgb (Pillow bilinear)"}
        meta_tmp = where / f"{name}.json.tmp-{os.getpid()}"
        meta_tmp.write_text(json.dumps(meta, indent=1))
        os.replace(meta_tmp, where / f"{name}.json")
    finally:
        if tmp.exists():
            tmp.unlink()
