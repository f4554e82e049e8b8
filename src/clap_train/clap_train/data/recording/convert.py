"""rosbag2 recordings -> a LeRobotDataset v3.0 (the work behind ``clap convert``).

One bag = one episode, unless a camera or state topic drops out inside it. Per bag: pass 1 reads
every non-image topic and the image stamps (bagread), alignment puts them on the 30 Hz grid
(align), pass 2 decodes the selected images of each camera and encodes them to mp4 with one
thread per camera (PyAV encodes outside the GIL, so the streams use both cores), and the episode
is published atomically into the store. Finally the dataset's files are (re)built from the store
(lerobot_format.finalize).

Gaps: where a topic has no message within its ``max_age_s`` inside the recording, time is never
spliced over the gap. The contract's ``gaps.policy`` chooses: ``split`` (default) stores each side
as an episode of its own, ``<bag id>-part000``, ``<bag id>-part001``, ... (parts are numbered in
time order, a dropped part keeps its number); ``drop`` keeps only the longest part (one LeRobot
episode cannot hold a jump in time: its frames, videos and action chunks are indexed one period
apart); ``fail`` fails the bag, naming the topic and the time range. A part shorter than
``gaps.min_part_frames`` is left out with a log line. meta/conversion.json's ``splits`` lists each
such bag: its gaps and its parts (episode id or dropped, frames, time range, reason). A bag with
no gap is one episode named ``<bag id>``, as before. Resume: every stored part's episode.json
names all the parts of its bag; a bag counts as done only when all of them are stored.

Modules: gaps.py (the gap policy: which parts of a bag become episodes), encode_camera.py (one
camera to mp4), this one (per bag, resume, the dataset).

Bad input (corrupt or truncated bags, missing topics, unknown encodings, stamps going backwards,
empty bags) fails that episode only, with an error that names the bag, its file and the topic;
the other episodes are converted, and nothing of the failed one is left behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from clap_train.data.recording.align import align_episode
from clap_train.data.recording.bagread import BagError, bag_files, fingerprint, read_bag
from clap_train.data.contract import Contract
from clap_train.data.recording.encode_camera import EncodeOptions, encode_camera
from clap_train.data.recording.gaps import is_own, plan_parts, split_log
from clap_train.data.recording.lerobot_format import (
    ACTION_KEY,
    STATE_KEY,
    StoredEpisode,
    finalize,
    store_dir,
    stored_episodes,
    write_frames,
)
from clap_train.io import atomic_dir


@dataclasses.dataclass
class EpisodeOutcome:
    """What became of one bag."""

    bag: str
    episode_id: str  # the bag's id (its parts, if split at a gap, are <episode_id>-partNNN)
    status: str  # "converted", "skipped", "failed"
    frames: int = 0  # over all stored parts
    error: str | None = None
    seconds: float = 0.0
    episodes: list[str] = dataclasses.field(default_factory=list)  # ids stored for this bag
    split: dict | None = None  # the bag's gaps and parts (conversion.json "splits"); None without a gap


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
    """What a stored episode was converted with: the contract less the node's outputs."""
    return hashlib.sha1(dataclasses.replace(contract, outputs=None).to_yaml().encode()).hexdigest()


def convert_episode(
    bag: str | os.PathLike, contract: Contract, out: str | os.PathLike, opts: EncodeOptions = EncodeOptions()
) -> EpisodeOutcome:
    """Convert one bag into the store of dataset ``out`` (each of its episodes atomically). Raises BagError."""
    t0 = time.perf_counter()
    bag = pathlib.Path(bag)
    eid = episode_id(bag)
    contents = read_bag(bag, contract)
    aligned = align_episode(contents, contract)
    planned, split = plan_parts(bag, eid, contract, aligned, contents.files)
    kept = [p for p in planned if p.episode_id is not None]
    ids = [p.episode_id for p in kept]
    with contextlib.ExitStack() as stack:
        # each episode is built in a temporary folder of its own; all are published once all are complete
        tmps = [stack.enter_context(atomic_dir(store_dir(out) / p.episode_id)) for p in kept]
        cams: list[dict] = [{} for _ in kept]
        jobs = {}
        workers = len(contract.cameras) if opts.camera_threads else 1
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            for cam in contract.cameras:
                parts = [(p.episode.image_index[cam.name], tmp / f"{cam.key}.mp4") for p, tmp in zip(kept, tmps)]
                jobs[cam.key] = pool.submit(encode_camera, bag, contract, cam.name, parts, opts)
            for key, job in jobs.items():
                for c, info in zip(cams, job.result()):
                    c[key] = info
        _check_layout(bag, contract, out, cams[0])
        for p, tmp, cam_info in zip(kept, tmps, cams):
            ep = p.episode
            n = len(ep.frame_times)
            write_frames(
                tmp / "frames.parquet",
                {
                    "timestamp": np.arange(n, dtype=np.float64) / contract.rate_hz,
                    "frame_index": np.arange(n),
                    STATE_KEY: ep.state,
                    ACTION_KEY: ep.action,
                    "task": ep.instruction,
                    "subtask": ep.subtask,
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
                "cameras": cam_info,
                "start_time_ns": int(ep.frame_times[0]),
                "dropped_stale_frames": aligned.dropped_stale,  # of the whole bag, gaps included
                "held_action_frames": ep.held_actions,
                "part": p.index if split else None,
                "bag_episodes": ids,  # every episode stored for this bag: resume checks that all are
                "split": split,
            }
            (tmp / "episode.json").write_text(json.dumps(meta, indent=2))
    # The bag's episodes from an earlier conversion that this one does not replace (e.g. the
    # unsplit episode of a bag now split) are removed once the new ones are all in place.
    for old in _own_dirs(out, eid):
        if old.name not in ids:
            shutil.rmtree(old, ignore_errors=True)
    frames = sum(len(p.episode.frame_times) for p in kept)
    return EpisodeOutcome(
        str(bag), eid, "converted", frames, seconds=time.perf_counter() - t0, episodes=ids, split=split
    )


def _check_layout(bag: pathlib.Path, contract: Contract, out, cams: dict) -> None:
    """One dataset has one image size per camera: compare with an episode of another bag already stored."""
    others = [e for e in stored_episodes(out) if not is_own(e.id, episode_id(bag))]
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


def _stored_outcome(bag: pathlib.Path, contract: Contract, out: pathlib.Path) -> EpisodeOutcome | None:
    """A "skipped" outcome when every episode of the bag is stored, from these files and this contract."""
    eid = episode_id(bag)
    own: list[StoredEpisode] = []
    for sub in _own_dirs(out, eid):
        if not (sub / "episode.json").is_file():
            continue
        try:
            own.append(StoredEpisode(sub, json.loads((sub / "episode.json").read_text())))
        except (OSError, json.JSONDecodeError):
            return None
    if not own:
        return None
    fp, digest = fingerprint(bag), contract_digest(contract)
    want = own[0].meta.get("bag_episodes", [eid])  # written before gaps split bags: the bag's id only
    for e in own:
        m = e.meta
        if m.get("fingerprint") != fp or m.get("contract") != digest or m.get("bag_episodes", [eid]) != want:
            return None
    if sorted(e.id for e in own) != sorted(want):
        return None  # killed between publishing two parts, or an older conversion's episodes are left
    frames = sum(int(e.meta.get("length", 0)) for e in own)
    return EpisodeOutcome(str(bag), eid, "skipped", frames, episodes=list(want), split=own[0].meta.get("split"))


def _own_dirs(out, eid: str) -> list[pathlib.Path]:
    """The store folders of bag ``eid``'s episodes (by name only: other workers publish meanwhile)."""
    d = store_dir(out)
    return sorted(sub for sub in d.iterdir() if is_own(sub.name, eid)) if d.is_dir() else []


def _remove_stored(bag: pathlib.Path, out: pathlib.Path) -> None:
    """Remove the bag's episodes from an earlier conversion (other files or contract) from the store."""
    for old in _own_dirs(out, episode_id(bag)):
        shutil.rmtree(old, ignore_errors=True)


def _convert_safe(bag: pathlib.Path, contract: Contract, out: pathlib.Path, opts: EncodeOptions) -> EpisodeOutcome:
    t0 = time.perf_counter()
    try:
        return convert_episode(bag, contract, out, opts)
    except BagError as exc:
        _remove_stored(bag, out)  # nothing of a failed bag stays in the dataset
        return EpisodeOutcome(str(bag), episode_id(bag), "failed", error=str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # anything unexpected still names the bag and keeps the others going
        _remove_stored(bag, out)
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
        done = _stored_outcome(b, contract, out)
        if done is not None:
            outcomes.append(done)
        else:
            todo.append(b)
    bar = tqdm(total=len(paths), initial=len(paths) - len(todo), desc="convert", unit="episode", disable=not progress)

    def record(o: EpisodeOutcome) -> None:
        outcomes.append(o)
        bar.update(1)
        bar.set_postfix_str(f"{pathlib.Path(o.bag).name}: {o.status}")
        if o.status == "failed" and progress:
            bar.write(f"FAILED {o.error}")
        for line in split_log(o):  # always shown: a bag split or frames left out at a drop-out
            bar.write(line, file=sys.stderr)
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
        "episodes": [{k: v for k, v in dataclasses.asdict(o).items() if k != "split"} for o in outcomes],
        "failed": [{"bag": o.bag, "error": o.error} for o in outcomes if o.status == "failed"],
        # bags with a drop-out (gap): the policy applied, each gap, and each part (kept or dropped)
        "splits": [{**o.split, "bag": o.bag} for o in outcomes if o.split and o.status != "failed"],
    }
    info = None
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
