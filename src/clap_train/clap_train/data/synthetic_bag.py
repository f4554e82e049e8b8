"""Write synthetic rosbag2 recordings on the contract's topics with ``rosbags`` (no ROS needed).

Used by the tests and by bench/convert.py. The content is chosen so that a converted dataset can
be checked against it: a pose's x equals its stamp time in seconds (so an aligned frame shows
which message it used), gripper values equal their receive time, and every image is a
deterministic pattern of (camera, message index) that :func:`image_pattern` regenerates.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib

import numpy as np
from PIL import Image as PILImage

from clap_train.data.contract import Contract, load_contract
from clap_train.data.rotations import euler_xyz_to_quat

T0 = 1_700_000_000 * 1_000_000_000  # a recording's first stamp (ns)


@dataclasses.dataclass
class CameraSetup:
    encoding: str = "rgb8"  # rgb8, bgr8, mono8, rgba8, bgra8, or jpeg / png (CompressedImage)
    height: int = 48
    width: int = 64
    hz: float = 30.0
    offset_s: float = 0.0  # first message's stamp after T0


def image_pattern(cam_index: int, msg_index: int, height: int, width: int, grey: bool = False) -> np.ndarray:
    """The RGB image of message ``msg_index`` of camera ``cam_index``: smooth, and distinct per message."""
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    level = (msg_index * 7) % 120
    chans = [
        40 + level + 60 * x + 20 * y,
        30 + 50 * y + 20 * cam_index + 0.5 * level,
        200 - level - 40 * x,
    ]
    img = np.stack([np.broadcast_to(c, (height, width)) for c in chans], axis=2)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if grey:
        g = img.mean(axis=2).astype(np.uint8)
        img = np.repeat(g[:, :, None], 3, axis=2)
    return img


def _image_msg(store, setup: CameraSetup, rgb: np.ndarray, stamp_ns: int, frame_id: str):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)
    enc = setup.encoding
    if enc in ("jpeg", "png"):
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, format="JPEG" if enc == "jpeg" else "PNG", quality=95)
        return store.types["sensor_msgs/msg/CompressedImage"](
            header=header, format=enc, data=np.frombuffer(buf.getvalue(), np.uint8)
        )
    if enc == "rgb8":
        payload = rgb
    elif enc == "bgr8":
        payload = rgb[:, :, ::-1]
    elif enc == "mono8":
        payload = rgb[:, :, :1]
    elif enc == "rgba8":
        payload = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif enc == "bgra8":
        payload = np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    else:  # an encoding the converter does not know: payload of rgb8 size
        payload = rgb
    payload = np.ascontiguousarray(payload)
    h, w = rgb.shape[:2]
    return store.types["sensor_msgs/msg/Image"](
        header=header,
        height=h,
        width=w,
        encoding=enc,
        is_bigendian=0,
        step=payload.shape[1] * payload.shape[2],
        data=payload.reshape(-1),
    )


def state_yaw(t: float, yaw_cross: bool) -> float:
    """The left arm's yaw at time t (s): crosses +pi at t = 0.283 s when ``yaw_cross``."""
    return (3.0 + 0.5 * t) if yaw_cross else 0.3 * np.sin(t)


def write_bag(
    path: str | pathlib.Path,
    *,
    contract: Contract | None = None,
    storage: str = "sqlite3",
    duration_s: float = 2.0,
    cameras: dict[str, CameraSetup] | None = None,
    state_hz: float = 100.0,
    command_hz: float = 30.0,
    latency_s: float = 0.004,
    yaw_cross: bool = False,
    instruction: str = "put the cube in the bowl",
    subtasks: tuple[tuple[float, str], ...] = ((0.0, "reach the cube"), (1.0, "grasp the cube")),
    omit_topics: tuple[str, ...] = (),
    backwards_topic: str | None = None,
    empty: bool = False,
    with_msgdefs: bool = True,
) -> pathlib.Path:
    """Write one episode as a rosbag2 folder; returns its path."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from clap_train.data.bagread import SUBTASK_MSG, SUBTASK_TYPE

    contract = contract or load_contract()
    cameras = cameras or {c.name: CameraSetup() for c in contract.cameras}
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(SUBTASK_MSG, SUBTASK_TYPE))
    path = pathlib.Path(path)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Pose = store.types["geometry_msgs/msg/Pose"]
    Point = store.types["geometry_msgs/msg/Point"]
    Quat = store.types["geometry_msgs/msg/Quaternion"]
    PoseStamped = store.types["geometry_msgs/msg/PoseStamped"]
    Float64 = store.types["std_msgs/msg/Float64"]
    String = store.types["std_msgs/msg/String"]
    Subtask = store.types[SUBTASK_TYPE]
    frame = contract.frame_id

    def header(ns: int):
        return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame)

    events: list[tuple[int, str, object, str]] = []  # (receive ns, topic, msg, type)
    lat = int(latency_s * 1e9)
    if not empty:
        for ci, cam in enumerate(contract.cameras):
            setup = cameras[cam.name]
            n = int(duration_s * setup.hz)
            for i in range(n):
                ns = T0 + int((setup.offset_s + i / setup.hz) * 1e9)
                rgb = image_pattern(ci, i, setup.height, setup.width, grey=setup.encoding == "mono8")
                typ = (
                    "sensor_msgs/msg/CompressedImage" if setup.encoding in ("jpeg", "png") else "sensor_msgs/msg/Image"
                )
                events.append((ns + lat, cam.topic, _image_msg(store, setup, rgb, ns, frame), typ))
        for group, hz, lead in ((contract.state, state_hz, 0.0), (contract.action, command_hz, 0.01)):
            n = int(duration_s * hz)
            for ai, arm in enumerate(group.arms):
                for i in range(n):
                    t = i / hz
                    ns = T0 + int(t * 1e9)
                    yaw = state_yaw(t + lead, yaw_cross and ai == 0)
                    q = euler_xyz_to_quat(np.array([0.1 * ai, 0.2, yaw]))
                    pose = PoseStamped(
                        header=header(ns),
                        pose=Pose(
                            position=Point(x=t + lead, y=float(ai), z=0.5),
                            orientation=Quat(x=q[0], y=q[1], z=q[2], w=q[3]),
                        ),
                    )
                    events.append((ns + lat, arm.pose.topic, pose, arm.pose.type))
                    events.append((ns + lat, arm.gripper.topic, Float64(data=t + lat / 1e9 + lead), arm.gripper.type))
        events.append((T0 + lat, contract.instruction.topic, String(data=instruction), contract.instruction.type))
        if contract.subtask is not None:
            for k, (t, text) in enumerate(subtasks):
                ns = T0 + int(t * 1e9)
                msg = Subtask(header=header(ns), instruction=instruction, subtask=text, index=k)
                events.append((ns + lat, contract.subtask.topic, msg, contract.subtask.type))
    if backwards_topic is not None:
        idx = [k for k, e in enumerate(events) if e[1] == backwards_topic]
        k = idx[len(idx) // 2]
        recv, topic, msg, typ = events[k]
        msg.header.stamp = Time(sec=(T0 - 10**9) // 1_000_000_000, nanosec=0)
    events.sort(key=lambda e: e[0])

    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        types = {spec.topic: spec.type for spec in contract.all_topics()}
        for cam in contract.cameras:  # the type the images really have
            if cameras[cam.name].encoding in ("jpeg", "png"):
                types[cam.topic] = "sensor_msgs/msg/CompressedImage"
            else:
                types[cam.topic] = "sensor_msgs/msg/Image"
        for topic, typ in types.items():
            if topic in omit_topics:
                continue
            if with_msgdefs or typ != SUBTASK_TYPE:
                conns[topic] = writer.add_connection(topic, typ, typestore=store)
            else:  # a recording without the custom type's definition: the reader must find it itself
                conns[topic] = writer.add_connection(topic, typ, msgdef="", rihs01="RIHS01_" + "0" * 64)
        for recv, topic, msg, typ in events:
            if topic in conns:
                writer.write(conns[topic], recv, store.serialize_cdr(msg, typ))
    return path
