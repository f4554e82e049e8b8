"""rosbag2 recordings -> a LeRobotDataset v3.0 (the work behind ``clap convert``).

One bag = one episode. Per episode: pass 1 reads every non-image topic and the image stamps
(bagread), alignment puts them on the 30 Hz grid (align), pass 2 decodes the selected images of
each camera and encodes them to mp4 with one thread per camera (PyAV encodes outside the GIL, so
the streams use both cores), and the episode is published atomically into the store. Finally
the dataset's files are (re)built from the store (lerobot_format.finalize).

Bad input (corrupt or truncated bags, missing topics, unknown encodings, stamps going backwards,
empty bags) fails that episode only, with an error that names the bag, its file and the topic;
the other episodes are converted, and nothing of the failed one is left behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence

import numpy as np

from clap_train.data.align import align_episode
from clap_train.data.bagread import BagError, bag_files, fingerprint, iter_images, read_bag
from clap_train.data.contract import Contract
from clap_train.data.images import resize_rgb
from clap_train.data.lerobot_format import (
    ACTION_KEY,
    STATE_KEY,
    finalize,
    store_dir,
    write_frames,
)
from clap_train.data.stats import image_stats
from clap_train.data.video import DEFAULT_CRF, DEFAULT_GOP, Mp4Writer, VideoError
from clap_train.io import atomic_dir

STATS_SAMPLES = 48  # frames per camera and episode used for image statistics


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    crf: int = DEFAULT_CRF
    gop: int = DEFAULT_GOP
    preset: str = "ultrafast"
    camera_threads: bool = True  # encode the cameras of an episode in parallel threads


@dataclasses.dataclass
class EpisodeOutcome:
    bag: str
    episode_id: str
    status: str  # "converted", "skipped", "failed"
    frames: int = 0
    error: str | None = None
    seconds: float = 0.0


def find_bags(paths: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """Bag folders (with metadata.yaml) given directly or found one level below a given folder."""
    bags: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if (p / "metadata.yaml").is_file():
            bags.append(p)
        elif p.is_dir():
            subs = sorted(s for s in p.iterdir() if s.is_dir() and not s.name.startswith("."))
            found = [s for s in subs if (s / "metadata.yaml").is_file()]
            bags.extend(found)
            # a sub-folder that looks like a bag (has storage files) but lacks metadata is reported
            bags.extend(s for s in subs if s not in found and any(f.suffix in (".db3", ".mcap") for f in s.iterdir()))
            if not subs and not found:
                bags.append(p)  # an empty or foreign folder: reported as an error that names it
        else:
            bags.append(p)  # reported as "does not exist"
    seen, out = set(), []
    for b in bags:
        r = b.resolve()
        if r not in seen:
            seen.add(r)
            out.append(b)
    return out


def episode_id(bag: pathlib.Path) -> str:
    """A stable, sortable id: the bag folder's name plus a hash of its absolute path."""
    digest = hashlib.sha1(str(bag.resolve()).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in bag.name)
    return f"{safe}-{digest}"


def contract_digest(contract: Contract) -> str:
    return hashlib.sha1(contract.to_yaml().encode()).hexdigest()


def _encode_camera(
    bag, contract: Contract, cam_name: str, picks: np.ndarray, path: pathlib.Path, opts: EncodeOptions
) -> dict:
    """Decode the selected images of one camera, write its mp4, return its info (shape, stats)."""
    spec = contract.camera(cam_name)
    fps = contract.rate_hz
    writer = None
    n = len(picks)
    sample_at = set(np.linspace(0, n - 1, min(STATS_SAMPLES, n)).astype(int).tolist())
    samples = []
    shape = None
    images = iter_images(bag, contract, cam_name, np.unique(picks))
    cur_i, cur = -1, None
    try:
        for k, want in enumerate(picks):
            while cur_i < want:
                cur_i, cur = next(images)
                if spec.size is not None:
                    cur = resize_rgb(cur, spec.size[0], spec.size[1])
                if shape is None:
                    shape = cur.shape[:2]
                elif cur.shape[:2] != shape:
                    raise BagError(
                        bag,
                        f"image size changes from {shape[0]}x{shape[1]} to {cur.shape[0]}x{cur.shape[1]} "
                        f"at message {cur_i}; set the camera's size in the contract to resize",
                        spec.topic,
                    )
            if writer is None:
                try:
                    writer = Mp4Writer(path, fps, shape[0], shape[1], crf=opts.crf, gop=opts.gop, preset=opts.preset)
                except VideoError as exc:
                    raise BagError(bag, str(exc), spec.topic) from exc
            writer.write(cur)
            if k in sample_at:
                samples.append(cur)
        writer.close()
        writer = None
    finally:
        if writer is not None:
            writer.abort()
        images.close()
    return {
        "file": path.name,
        "shape": [int(shape[0]), int(shape[1])],
        "topic": spec.topic,
        "stats": image_stats(samples),
    }


def convert_episode(
    bag: str | os.PathLike, contract: Contract, out: str | os.PathLike, opts: EncodeOptions = EncodeOptions()
) -> EpisodeOutcome:
    """Convert one bag into the store of dataset ``out`` (atomically). Raises BagError."""
    t0 = time.perf_counter()
    bag = pathlib.Path(bag)
    eid = episode_id(bag)
    contents = read_bag(bag, contract)
    aligned = align_episode(contents, contract)
    n = len(aligned.frame_times)
    with atomic_dir(store_dir(out) / eid) as tmp:
        cams = {}
        jobs = {}
        workers = len(contract.cameras) if opts.camera_threads else 1
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            for cam in contract.cameras:
                path = tmp / f"{cam.key}.mp4"
                jobs[cam.key] = pool.submit(
                    _encode_camera, bag, contract, cam.name, aligned.image_index[cam.name], path, opts
                )
            for key, job in jobs.items():
                cams[key] = job.result()
        _check_layout(bag, contract, out, cams)
        write_frames(
            tmp / "frames.parquet",
            {
                "timestamp": np.arange(n, dtype=np.float64) / contract.rate_hz,
                "frame_index": np.arange(n),
                STATE_KEY: aligned.state,
                ACTION_KEY: aligned.action,
                "task": aligned.instruction,
                "subtask": aligned.subtask,
            },
            contract.action.dim,
        )
        meta = {
            "kind": "robot",
            "source": str(bag.resolve()),
            "fingerprint": fingerprint(bag),
            "contract": contract_digest(contract),
            "length": n,
            "storage": contents.storage,
            "vector_names": contract.vector_names,
            "cameras": cams,
            "start_time_ns": int(aligned.frame_times[0]),
            "dropped_stale_frames": aligned.dropped_stale,
            "held_action_frames": aligned.held_actions,
        }
        (tmp / "episode.json").write_text(json.dumps(meta, indent=2))
    return EpisodeOutcome(str(bag), eid, "converted", n, seconds=time.perf_counter() - t0)


def _check_layout(bag: pathlib.Path, contract: Contract, out, cams: dict) -> None:
    """One dataset has one image size per camera: compare with an episode already stored."""
    from clap_train.data.lerobot_format import stored_episodes

    others = [e for e in stored_episodes(out) if e.id != episode_id(bag)]
    if not others:
        return
    ref = others[0]
    for cam in contract.cameras:
        have, want = cams[cam.key]["shape"], ref.meta["cameras"].get(cam.key, {}).get("shape")
        if want is not None and list(have) != list(want):
            raise BagError(
                bag,
                f"images are {have[0]}x{have[1]} but the dataset's are {want[0]}x{want[1]} "
                f"(episode {ref.id}); set size: [H, W] for camera {cam.name} in the contract to resize",
                cam.topic,
                bag_files(bag),
            )


def _is_done(bag: pathlib.Path, contract: Contract, out: pathlib.Path) -> bool:
    meta = store_dir(out) / episode_id(bag) / "episode.json"
    if not meta.is_file():
        return False
    try:
        m = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return m.get("fingerprint") == fingerprint(bag) and m.get("contract") == contract_digest(contract)


def _convert_safe(bag: pathlib.Path, contract: Contract, out: pathlib.Path, opts: EncodeOptions) -> EpisodeOutcome:
    t0 = time.perf_counter()
    try:
        return convert_episode(bag, contract, out, opts)
    except BagError as exc:
        return EpisodeOutcome(str(bag), episode_id(bag), "failed", error=str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # anything unexpected still names the bag and keeps the others going
        files = ", ".join(f.name for f in bag_files(bag)) if bag.is_dir() else ""
        return EpisodeOutcome(
            str(bag),
            episode_id(bag),
            "failed",
            error=f"bag {bag} ({files}): {type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - t0,
        )


def convert_bags(
    bags: Sequence[str | os.PathLike],
    contract: Contract,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    opts: EncodeOptions = EncodeOptions(),
    progress: bool = True,
    on_outcome: Callable[[EpisodeOutcome], None] | None = None,
) -> tuple[list[EpisodeOutcome], dict | None]:
    """Convert bags (skipping finished ones), then (re)write the dataset. Returns outcomes and info.json."""
    from tqdm import tqdm

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store_dir(out).mkdir(parents=True, exist_ok=True)
    for stale in store_dir(out).glob(".*.tmp"):  # left by a converter killed mid-episode
        shutil.rmtree(stale, ignore_errors=True)
    paths = find_bags(bags)
    outcomes: list[EpisodeOutcome] = []
    todo = []
    for b in paths:
        if _is_done(b, contract, out):
            outcomes.append(EpisodeOutcome(str(b), episode_id(b), "skipped"))
        else:
            todo.append(b)
    bar = tqdm(total=len(paths), initial=len(paths) - len(todo), desc="convert", unit="episode", disable=not progress)

    def record(o: EpisodeOutcome) -> None:
        outcomes.append(o)
        bar.update(1)
        bar.set_postfix_str(f"{pathlib.Path(o.bag).name}: {o.status}")
        if o.status == "failed" and progress:
            bar.write(f"FAILED {o.error}")
        if on_outcome:
            on_outcome(o)

    if workers > 1 and len(todo) > 1:
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_convert_safe, b, contract, out, opts) for b in todo]
            for fut in cf.as_completed(futures):
                record(fut.result())
    else:
        for b in todo:
            record(_convert_safe(b, contract, out, opts))
    bar.close()
    order = {str(p): i for i, p in enumerate(paths)}
    outcomes.sort(key=lambda o: order.get(o.bag, 0))
    report = {
        "contract": contract.source,
        "episodes": [dataclasses.asdict(o) for o in outcomes],
        "failed": [{"bag": o.bag, "error": o.error} for o in outcomes if o.status == "failed"],
    }
    info = None
    from clap_train.data.lerobot_format import stored_episodes

    if stored_episodes(out):
        info = finalize(  # raises RuntimeError naming the episodes if their layouts disagree
            out,
            fps=contract.rate_hz,
            robot_type=contract.name,
            contract_yaml=contract.to_yaml(),
            euler_indices=contract.action.euler_indices,
            report=report,
        )
    return outcomes, info
