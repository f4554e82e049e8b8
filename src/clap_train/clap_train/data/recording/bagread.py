"""Reading one rosbag2 recording (sqlite3 or mcap) against the topic contract, without ROS.

Reading is the ``rosbags`` library's: its rosbag2 ``Reader`` handles both storages, and its
typestore deserialises CDR. Types come from the ROS 2 Jazzy store plus any definition the bag
carries; ``clap_msgs/msg/Subtask`` is registered from the bag's own message definition when it has
one, else from ``Subtask.msg`` found on disk, else from the copy of its text below.

Pass 1 (:func:`read_bag`) reads every non-image topic fully and, for image topics, only each
message's time stamp (parsed from the first bytes of the CDR payload: ``std_msgs/Header`` comes
first in Image and CompressedImage), so an episode's images are never all held in memory.
Pass 2 (:func:`iter_images`) decodes the images that alignment selected, one camera at a time.

A camera topic may hold sensor_msgs/msg/Image or CompressedImage (or both, e.g. when the camera
driver was reconfigured mid-recording) whatever type the contract names, as the live node
accepts either. Every failure is a :class:`BagError` that names the bag, the storage file(s) and
the topic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import struct
from collections.abc import Iterator, Sequence

import numpy as np

from clap_train.data.contract import IMAGE_TYPES, Contract, TopicSpec
from clap_train.data.images import ImageEncodingError, message_to_rgb
from clap_train.data.rotations import quat_to_euler_xyz, unwrap_euler

# A copy of src/clap_msgs/msg/Subtask.msg (fields only), used when neither the bag nor the disk
# has the definition; clap_train never imports ROS, so it cannot ask clap_msgs for it.
SUBTASK_MSG = """std_msgs/Header header
string instruction
string subtask
uint32 index
"""
SUBTASK_TYPE = "clap_msgs/msg/Subtask"


class BagError(Exception):
    """A recording that cannot be converted; the message names the bag, file and topic."""

    def __init__(self, bag: str | os.PathLike, message: str, topic: str | None = None, files: Sequence = ()):
        self.bag = str(bag)
        self.topic = topic
        names = ", ".join(pathlib.Path(f).name for f in files)
        where = f"bag {self.bag}" + (f" ({names})" if names else "") + (f", topic {topic}" if topic else "")
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass
class Series:
    """Messages of one topic: time stamps (ns, the contract's stamp source) and values."""

    topic: str
    stamps: np.ndarray  # int64 [N]
    values: np.ndarray | list  # [N, ...] floats, or a list of strings


@dataclasses.dataclass
class BagContents:
    """Pass-1 result: everything but image pixels."""

    path: pathlib.Path
    files: list[pathlib.Path]
    images: dict[str, Series]  # camera name -> stamps (values: receive times)
    state_pose: list[Series]  # per arm: values [N, 6] (x, y, z, roll, pitch, yaw), Euler unwrapped
    state_gripper: list[Series]  # per arm: values [N]
    action_pose: list[Series]
    action_gripper: list[Series]
    instruction: Series
    subtask: Series | None  # values: list of subtask strings
    storage: str


def bag_files(path: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in path.iterdir() if p.suffix in (".db3", ".mcap", ".zstd")) if path.is_dir() else [path]


def fingerprint(path: pathlib.Path) -> str:
    """Changes when any file of the bag changes (names, sizes, mtimes)."""
    h = hashlib.sha1()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path) if path.is_dir() else p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _find_subtask_msg() -> str:
    here = pathlib.Path(__file__).resolve()
    candidates = [p / "src" / "clap_msgs" / "msg" / "Subtask.msg" for p in here.parents]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(pathlib.Path(prefix) / "share" / "clap_msgs" / "msg" / "Subtask.msg")
    for c in candidates:
        if c.is_file():
            return c.read_text()
    return SUBTASK_MSG


def make_typestore(connections) -> object:
    """Jazzy types + the bag's own definitions (+ clap_msgs/Subtask from disk when the bag lacks it)."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict = {}
    for conn in connections:
        msgdef = conn.msgdef
        if msgdef is None or msgdef.format == MessageDefinitionFormat.NONE or not msgdef.data:
            continue
        if conn.msgtype in store.fielddefs and conn.msgtype != SUBTASK_TYPE:
            continue
        if msgdef.format == MessageDefinitionFormat.MSG:
            types.update(get_types_from_msg(msgdef.data, conn.msgtype))
        else:
            types.update(get_types_from_idl(msgdef.data))
    if SUBTASK_TYPE not in types:
        types.update(get_types_from_msg(_find_subtask_msg(), SUBTASK_TYPE))
    store.register({k: v for k, v in types.items() if k not in store.fielddefs or k == SUBTASK_TYPE})
    return store


def _header_stamp_ns(raw: bytes | memoryview) -> int:
    """The header.stamp of a CDR message whose first field is std_msgs/Header."""
    little = raw[1] == 1
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def _open_reader(path: pathlib.Path):
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(path, "does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(
            path, "is not a rosbag2 folder (no metadata.yaml; for a recording that was killed, run `ros2 bag reindex`)"
        )
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError and sqlite/mcap errors
        raise BagError(path, f"cannot be opened: {exc}", files=bag_files(path)) from exc
    return reader


def _check_stamps(path, files, topic: str, stamps: np.ndarray, source: str) -> None:
    if len(stamps) > 1:
        back = np.nonzero(np.diff(stamps) < 0)[0]
        if back.size:
            i = int(back[0]) + 1
            raise BagError(
                path,
                f"{source} time stamps go backwards at message {i}: {stamps[i]} ns after {stamps[i - 1]} ns",
                topic,
                files,
            )


def read_bag(path: str | os.PathLike, contract: Contract) -> BagContents:
    """Pass 1: read all non-image messages and the image time stamps of one recording."""
    path = pathlib.Path(path)
    files = bag_files(path) if path.exists() else []
    reader = _open_reader(path)
    try:
        by_topic: dict[str, list] = {}  # a topic may have several connections (one per type, per writer)
        for c in reader.connections:
            by_topic.setdefault(c.topic, []).append(c)
        specs: list[TopicSpec] = contract.all_topics()
        image_topics = {c.topic for c in contract.cameras}
        for spec in specs:
            topic_conns = by_topic.get(spec.topic)
            if topic_conns is None:
                if spec.required:
                    raise BagError(path, "required contract topic is missing from the recording", spec.topic, files)
                continue
            allowed = IMAGE_TYPES if spec.topic in image_topics else (spec.type,)
            for conn in topic_conns:
                if conn.msgtype not in allowed:
                    says = " or ".join(allowed) if spec.topic in image_topics else spec.type
                    raise BagError(path, f"has type {conn.msgtype}, the contract says {says}", spec.topic, files)
            if spec.required and sum(c.msgcount for c in topic_conns) == 0:
                raise BagError(path, "required contract topic has no messages (empty recording?)", spec.topic, files)
        store = make_typestore(reader.connections)
        wanted = {s.topic: s for s in specs if s.topic in by_topic}
        stamps: dict[str, list[int]] = {t: [] for t in wanted}
        recv: dict[str, list[int]] = {t: [] for t in wanted}
        values: dict[str, list] = {t: [] for t in wanted}
        conns = [c for t in wanted for c in by_topic[t]]
        current = None
        try:
            for conn, t_recv, raw in reader.messages(connections=conns):
                topic = current = conn.topic
                spec = wanted[topic]
                if topic in image_topics:
                    stamp = _header_stamp_ns(raw) if spec.stamp == "header" else t_recv
                else:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    if spec.stamp == "header":
                        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                    else:
                        stamp = t_recv
                    values[topic].append(_value(msg, conn.msgtype))
                stamps[topic].append(stamp)
                recv[topic].append(t_recv)
        except BagError:
            raise
        except Exception as exc:
            raise BagError(path, f"is corrupt or truncated ({type(exc).__name__}: {exc})", current, files) from exc
    finally:
        reader.close()

    def series(spec: TopicSpec | None) -> Series | None:
        if spec is None or spec.topic not in wanted:
            return None
        st = np.asarray(stamps[spec.topic], dtype=np.int64)
        _check_stamps(path, files, spec.topic, st, spec.stamp)
        vals = values[spec.topic]
        if spec.topic in image_topics:
            vals = np.asarray(recv[spec.topic], dtype=np.int64)
        elif spec.type == "geometry_msgs/msg/PoseStamped":
            arr = np.asarray(vals, dtype=np.float64).reshape(-1, 7)
            try:
                euler = quat_to_euler_xyz(arr[:, 3:7]) if len(arr) else np.zeros((0, 3))
            except ValueError as exc:
                raise BagError(path, f"bad orientation: {exc}", spec.topic, files) from exc
            vals = np.concatenate([arr[:, :3], unwrap_euler(euler, axis=0)], axis=1)
        elif spec.type == "std_msgs/msg/Float64":
            vals = np.asarray(vals, dtype=np.float64)
        return Series(spec.topic, st, vals)

    storage = "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"
    return BagContents(
        path=path,
        files=files,
        images={c.name: series(c) for c in contract.cameras},
        state_pose=[series(a.pose) for a in contract.state.arms],
        state_gripper=[series(a.gripper) for a in contract.state.arms],
        action_pose=[series(a.pose) for a in contract.action.arms],
        action_gripper=[series(a.gripper) for a in contract.action.arms],
        instruction=series(contract.instruction),
        subtask=series(contract.subtask),
        storage=storage,
    )


def _value(msg, msgtype: str):
    if msgtype == "geometry_msgs/msg/PoseStamped":
        p, q = msg.pose.position, msg.pose.orientation
        return (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
    if msgtype == "std_msgs/msg/Float64":
        return float(msg.data)
    if msgtype == "std_msgs/msg/String":
        return str(msg.data)
    if msgtype == SUBTASK_TYPE:
        return str(msg.subtask)
    raise TypeError(f"no value extractor for {msgtype}")


def iter_images(
    path: str | os.PathLike, contract: Contract, camera: str, wanted: np.ndarray
) -> Iterator[tuple[int, np.ndarray]]:
    """Pass 2: yield ``(message_index, rgb)`` for the camera's selected messages, in order.

    ``wanted`` holds the selected message indices (sorted, unique). Errors name the bag, topic and
    encoding.
    """
    path = pathlib.Path(path)
    files = bag_files(path)
    spec = contract.camera(camera)
    wanted = np.unique(np.asarray(wanted, dtype=np.int64))
    reader = _open_reader(path)
    try:
        conns = [c for c in reader.connections if c.topic == spec.topic]
        store = make_typestore(conns)
        k = 0
        for i, (conn, _, raw) in enumerate(reader.messages(connections=conns)):
            if k >= len(wanted):
                break
            if i != wanted[k]:
                continue
            k += 1
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
                rgb = message_to_rgb(msg)
            except ImageEncodingError as exc:
                raise BagError(path, f"message {i}: {exc}", spec.topic, files) from exc
            except Exception as exc:
                raise BagError(
                    path, f"message {i} is corrupt ({type(exc).__name__}: {exc})", spec.topic, files
                ) from exc
            yield i, rgb
        if k < len(wanted):
            raise BagError(path, f"only {k} of {len(wanted)} selected images could be read", spec.topic, files)
    except BagError:
        raise
    except Exception as exc:
        raise BagError(path, f"is corrupt or truncated ({type(exc).__name__}: {exc})", spec.topic, files) from exc
    finally:
        reader.close()
