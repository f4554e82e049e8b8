"""Record scripted episodes as rosbag2 (mcap or sqlite3) with exactly the contract's topics.

Each episode becomes one bag folder ``<out>/<task>_<seed>`` written with the rosbags library
(pure Python, no ROS needed), so ``clap convert <out>`` reads it like a recording made on the
robot: three ``sensor_msgs/msg/Image`` cameras (rgb8, header stamps; JPEG ``CompressedImage`` when the
contract says so), per-arm
``geometry_msgs/msg/PoseStamped`` state and targets, ``std_msgs/msg/Float64`` gripper
positions and commands, the ``std_msgs/msg/String`` instruction and ``clap_msgs/msg/Subtask``
subtask changes (the type registered from clap_msgs' own .msg text).

At control step k (time t_k = t_0 + k / 30 s) the recorder publishes the observation the scene
shows before the step (images, measured poses and grippers) and the command of step k, all
stamped t_k, then advances the physics one period. Bags are written to a temporary folder and
renamed when complete, so an interrupted recording leaves no half-written bag behind.

ROS-free.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from clap_train.io import atomic_dir, atomic_write_text
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from tqdm import tqdm

from .scene import ARMS, BimanualScene
from .scripted import run_scripted
from .tasks import make_task
from .topics import COMPRESSED, SimTopics, jpeg_bytes, load_topics

# Bags start at 2026-01-01T00:00:00Z plus ten minutes per seed: deterministic, distinct times.
EPOCH_NS = 1_767_225_600 * 10**9
SUBTASK_TYPE = "clap_msgs/msg/Subtask"


class RecorderError(RuntimeError):
    """Recording failed (bad arguments, missing message definition, existing output)."""


def subtask_msg_path() -> Path:
    """clap_msgs' Subtask.msg: from the ament index (installed) or the source tree (checkout)."""
    tried = []
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            p = Path(prefix) / "share" / "clap_msgs" / "msg" / "Subtask.msg"
            tried.append(str(p))
            if p.is_file():
                return p
    p = Path(__file__).resolve().parents[2] / "clap_msgs" / "msg" / "Subtask.msg"
    tried.append(str(p))
    if p.is_file():
        return p
    raise RecorderError("cannot find clap_msgs/msg/Subtask.msg; looked in " + ", ".join(tried))


def make_typestore():
    """A ROS 2 Jazzy typestore with clap_msgs/msg/Subtask registered from its .msg text."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg(subtask_msg_path().read_text(), SUBTASK_TYPE))
    return ts


class MessageFactory:
    """Builds rosbags message objects for the contract's types."""

    def __init__(self, typestore, frame_id: str):
        self.ts = typestore
        self.frame_id = frame_id
        t = typestore.types
        self.Time, self.Header = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
        self.Image, self.Pose = t["sensor_msgs/msg/Image"], t["geometry_msgs/msg/Pose"]
        self.CompressedImage = t[COMPRESSED]
        self.PoseStamped, self.Point = t["geometry_msgs/msg/PoseStamped"], t["geometry_msgs/msg/Point"]
        self.Quaternion, self.Float64 = t["geometry_msgs/msg/Quaternion"], t["std_msgs/msg/Float64"]
        self.String, self.Subtask = t["std_msgs/msg/String"], t[SUBTASK_TYPE]

    def header(self, stamp_ns: int):
        return self.Header(stamp=self.Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                           frame_id=self.frame_id)

    def image(self, rgb: np.ndarray, stamp_ns: int):
        h, w, _ = rgb.shape
        return self.Image(header=self.header(stamp_ns), height=h, width=w, encoding="rgb8",
                          is_bigendian=0, step=3 * w, data=np.ascontiguousarray(rgb, np.uint8).reshape(-1))

    def compressed(self, rgb: np.ndarray, stamp_ns: int):
        return self.CompressedImage(header=self.header(stamp_ns), format="jpeg",
                                    data=np.frombuffer(jpeg_bytes(rgb), dtype=np.uint8))

    def camera(self, msgtype: str, rgb: np.ndarray, stamp_ns: int):
        return self.compressed(rgb, stamp_ns) if msgtype == COMPRESSED else self.image(rgb, stamp_ns)

    def pose(self, pos, quat_wxyz, stamp_ns: int):
        w, x, y, z = (float(v) for v in quat_wxyz)
        return self.PoseStamped(header=self.header(stamp_ns), pose=self.Pose(
            position=self.Point(x=float(pos[0]), y=float(pos[1]), z=float(pos[2])),
            orientation=self.Quaternion(x=x, y=y, z=z, w=w)))

    def float64(self, v: float):
        return self.Float64(data=float(v))

    def string(self, s: str):
        return self.String(data=s)

    def subtask(self, instruction: str, subtask: str, index: int, stamp_ns: int):
        return self.Subtask(header=self.header(stamp_ns), instruction=instruction, subtask=subtask,
                            index=index)


@dataclass
class EpisodeRecord:
    """What one recorded episode produced."""

    path: Path
    task: str
    seed: int
    instruction: str
    success: bool
    max_reward: int
    frames: int


def record_episode(task_name: str, seed: int, out_dir: str | Path, *, storage: str = "mcap",
                   n_steps: int | None = None, image_size: int = 224, topics: SimTopics | None = None,
                   scene: BimanualScene | None = None, typestore=None, compress: bool = False,
                   progress: bool = False) -> EpisodeRecord:
    """Run the scripted demonstrator of ``task_name`` for ``seed`` and record it.

    Writes one rosbag2 to ``out_dir/<task>_<seed:06d>``; returns what was recorded (including
    whether the task succeeded). ``compress`` zstd-compresses the bag (mcap: chunk compression
    inside the storage file; sqlite3: per message), ~40x smaller for rendered images.
    """
    if storage not in ("mcap", "sqlite3"):
        raise RecorderError(f"storage must be mcap or sqlite3, got {storage!r}")
    task = make_task(task_name)
    topics = topics or load_topics()
    ts = typestore or make_typestore()
    msgs = MessageFactory(ts, topics.frame_id)
    bag_path = Path(out_dir) / f"{task_name}_{seed:06d}"
    own_scene = scene is None
    scene = scene or task.make_scene(image_size=image_size, rate_hz=topics.rate_hz, render=True)
    period_ns = int(round(1e9 / scene.rate_hz))
    t0 = EPOCH_NS + seed * 600 * 10**9
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    try:
        with atomic_dir(bag_path) as staging:
            # rosbags' Writer creates the bag folder and names its storage file after it; write
            # it inside the staging folder under its final name and move it up when complete.
            tmp = staging / bag_path.name
            staging.chmod(0o755)
            writer = Writer(tmp, version=9, storage_plugin=plugin)
            if compress:
                writer.set_compression(CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE,
                                       CompressionFormat.ZSTD)
            with writer:
                conns = {}

                def conn(topic: str, msgtype: str):
                    if topic not in conns:
                        conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
                    return conns[topic]

                def write(topic: str, msgtype: str, msg, t_ns: int):
                    writer.write(conn(topic, msgtype), t_ns, ts.serialize_cdr(msg, msgtype))

                # Declare every contract topic up front, so even a topic with no message yet
                # is present in the bag with its type.
                for topic in topics.cameras.values():
                    conn(topic, topics.camera_type)
                for arm in ARMS:
                    conn(topics.state[arm].pose, "geometry_msgs/msg/PoseStamped")
                    conn(topics.state[arm].gripper, "std_msgs/msg/Float64")
                    conn(topics.command[arm].pose, "geometry_msgs/msg/PoseStamped")
                    conn(topics.command[arm].gripper, "std_msgs/msg/Float64")
                conn(topics.instruction, "std_msgs/msg/String")
                if topics.subtask is not None:
                    conn(topics.subtask, SUBTASK_TYPE)

                state = {"subtask": None, "index": -1}
                bar = tqdm(total=n_steps, desc=f"{task_name} seed {seed}", unit="step",
                           disable=not progress, leave=False)

                def on_step(k: int, sc: BimanualScene, traj) -> None:
                    t = t0 + k * period_ns
                    if k == 0:
                        bar.total = len(traj)
                        write(topics.instruction, "std_msgs/msg/String", msgs.string(spec_holder[0]), t)
                    label = traj.subtasks[k]
                    if label != state["subtask"] and topics.subtask is not None:
                        state["subtask"], state["index"] = label, state["index"] + 1
                        write(topics.subtask, SUBTASK_TYPE,
                              msgs.subtask(spec_holder[0], label, state["index"], t), t)
                    for name, topic in topics.cameras.items():
                        write(topic, topics.camera_type, msgs.camera(topics.camera_type, sc.render(name), t), t)
                    for arm in ARMS:
                        pose = sc.arm_pose(arm)
                        write(topics.state[arm].pose, "geometry_msgs/msg/PoseStamped",
                              msgs.pose(pose.pos, pose.quat, t), t)
                        write(topics.state[arm].gripper, "std_msgs/msg/Float64", msgs.float64(pose.gripper), t)
                        target = sc.arm_target(arm)
                        write(topics.command[arm].pose, "geometry_msgs/msg/PoseStamped",
                              msgs.pose(target.pos, target.quat, t), t)
                        write(topics.command[arm].gripper, "std_msgs/msg/Float64",
                              msgs.float64(target.gripper), t)
                    bar.update(1)

                spec_holder = [task.sample(seed).instruction]
                success, best, spec, traj = run_scripted(task, seed, n_steps=n_steps, scene=scene,
                                                         on_step=on_step)
                bar.close()
            for item in list(tmp.iterdir()):
                os.replace(item, staging / item.name)
            tmp.rmdir()
    finally:
        if own_scene:
            scene.close()
    return EpisodeRecord(bag_path, task_name, seed, spec.instruction, bool(success), int(best), len(traj))


def record_dataset(task_name: str, episodes: int, out_dir: str | Path, *, seed: int = 0,
                   storage: str = "mcap", n_steps: int | None = None, image_size: int = 224,
                   only_successful: bool = True, progress: bool = True, compress: bool = True,
                   contract_path: str | Path | None = None, workers: int = 1) -> list[EpisodeRecord]:
    """Record ``episodes`` scripted episodes (seeds seed, seed+1, ...) into ``out_dir``.

    With ``only_successful`` a failed demonstration is deleted and the next seed tried (as
    ACT's data collection does), so the folder holds ``episodes`` successful demonstrations.
    ``out_dir/episodes.json`` lists the recorded bags (merged with earlier recordings there).
    ``workers`` > 1 records that many seeds at once, each in a process of its own (rendering is
    most of an episode's time): the same seeds, bags and index as one worker (frames equal up to
    the last bits: a MuJoCo reset is not bit-exact, so an episode depends slightly on the one
    recorded before it in the same scene, with one worker too).
    """
    if episodes < 1:
        raise RecorderError(f"episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise RecorderError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    make_task(task_name)  # an unknown task fails here, before any process starts
    options = dict(task_name=task_name, out_dir=str(out_dir), storage=storage, n_steps=n_steps,
                   image_size=image_size, compress=compress, contract_path=contract_path)
    records: list[EpisodeRecord] = []
    failed: list[int] = []
    bar = tqdm(total=episodes, desc=f"record {task_name}", unit="episode", disable=not progress)
    with _EpisodeWorkers(workers, options) as pool:
        try:
            for rec in pool.in_seed_order(seed, lambda: episodes - len(records)):
                if rec.success or not only_successful:
                    records.append(rec)
                    bar.update(1)
                else:
                    failed.append(rec.seed)
                    shutil.rmtree(rec.path, ignore_errors=True)
                bar.set_postfix(failed=len(failed))
                if len(failed) > max(10, episodes):
                    raise RecorderError(f"the {task_name} demonstrator failed on seeds {failed}; giving up")
        finally:
            bar.close()
    index = out_dir / "episodes.json"
    entries = [{"bag": r.path.name, "task": task_name, "seed": r.seed, "storage": storage,
                "instruction": r.instruction, "success": r.success, "max_reward": r.max_reward,
                "frames": r.frames} for r in records]
    if index.exists():  # keep the entries of earlier recordings into the same folder
        try:
            old = json.loads(index.read_text()).get("episodes", [])
        except (json.JSONDecodeError, AttributeError) as exc:
            raise RecorderError(f"{index} is not an episodes index ({exc}); move it away or fix it") from exc
        names = {e["bag"] for e in entries}
        entries = [e for e in old if e.get("bag") not in names] + entries
    atomic_write_text(index, json.dumps({"episodes": entries, "failed_seeds": {task_name: failed}}, indent=1) + "\n")
    return records


_WORKER: dict = {}


def _worker_start(options: dict) -> None:
    """A recording process: its own scene (and GL context), rendering on this process's core alone."""
    os.environ.setdefault("LP_NUM_THREADS", "0")  # llvmpipe's helper threads slow a 2-core machine down
    task = make_task(options["task_name"])
    topics = load_topics(options["contract_path"])
    scene = task.make_scene(image_size=options["image_size"], rate_hz=topics.rate_hz, render=True)
    _WORKER.update(options=options, topics=topics, scene=scene, typestore=make_typestore())


def _worker_record(seed: int) -> EpisodeRecord:
    o = _WORKER["options"]
    return record_episode(o["task_name"], seed, o["out_dir"], storage=o["storage"], n_steps=o["n_steps"],
                          topics=_WORKER["topics"], scene=_WORKER["scene"], typestore=_WORKER["typestore"],
                          compress=o["compress"])


class _EpisodeWorkers:
    """Records seeds seed, seed+1, ... with ``n`` seeds in flight, yielding each episode in seed order.

    One worker records in this process; more run in spawned processes (a GL context does not
    survive a fork).
    """

    def __init__(self, n: int, options: dict):
        self.n, self.options, self.pool = n, options, None

    def __enter__(self) -> _EpisodeWorkers:
        if self.n > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_start, initargs=(self.options,))
        else:
            _worker_start(self.options)
        return self

    def in_seed_order(self, seed: int, missing):
        """Episodes of seeds seed, seed+1, ... in order, while ``missing()`` (episodes still wanted) > 0.

        No more seeds are in flight than are still missing, so no episode is recorded in vain.
        """
        from collections import deque

        pending, nxt = deque(), seed
        while True:
            while len(pending) < self.n and len(pending) < missing():
                pending.append(self.pool.submit(_worker_record, nxt) if self.pool else nxt)
                nxt += 1
            if not pending:
                return
            job = pending.popleft()
            yield job.result() if self.pool else _worker_record(job)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:  # on an error: the seeds not started are dropped
            self.pool.shutdown(wait=True, cancel_futures=True)
        elif "scene" in _WORKER:
            _WORKER.pop("scene").close()
