"""Write synthetic rosbag2 recordings on the contract's topics with ``rosbags`` (no ROS needed).

Used by the tests and by bench/convert.py. The content is chosen so that a converted dataset can
be checked against it: a pose's x equals its stamp time in seconds (so an aligned frame shows
which message it used), gripper values equal their receive time, and every image is a
deterministic pattern of (camera, message index) that :func:`image_pattern` regenerates.
The index is the message's number in the camera's full stream, so it still tells the message's
time when ``dropouts`` leave some messages out (a camera or sensor drop-out).
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
    # (time s, encoding): from that stamp on the camera publishes this encoding instead (e.g. rgb8 ->
    # jpeg: the topic then has an Image and a CompressedImage connection, a reconfigured driver)
    switch: tuple[float, str] | None = None

    def encoding_at(self, t: float) -> str:
        return self.switch[1] if self.switch is not None and t >= self.switch[0] else self.encoding


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


def image_type(encoding: str) -> str:
    """The message type a camera publishes with this encoding."""
    return "sensor_msgs/msg/CompressedImage" if encoding in ("jpeg", "png") else "sensor_msgs/msg/Image"


def _image_msg(store, enc: str, rgb: np.ndarray, stamp_ns: int, frame_id: str):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)
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
    dropouts: tuple[tuple[str, float, float], ...] = (),
) -> pathlib.Path:
    """Write one episode as a rosbag2 folder; returns its path.

    ``dropouts``: ``(topic, from_s, to_s)``: that topic has no message stamped in [from_s, to_s)
    (seconds after T0), e.g. a camera that drops out for 0.5 s.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from clap_train.data.recording.bagread import SUBTASK_MSG, SUBTASK_TYPE

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
    image_topics = {cam.topic for cam in contract.cameras}

    def header(ns: int):
        return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame)

    def silent(topic: str, t: float) -> bool:
        return any(topic == name and lo <= t < hi for name, lo, hi in dropouts)

    events: list[tuple[int, str, object, str]] = []  # (receive ns, topic, msg, type)
    lat = int(latency_s * 1e9)
    if not empty:
        for ci, cam in enumerate(contract.cameras):
            setup = cameras[cam.name]
            n = int(duration_s * setup.hz)
            for i in range(n):
                t = setup.offset_s + i / setup.hz
                if silent(cam.topic, t):
                    continue
                ns = T0 + int(t * 1e9)
                enc = setup.encoding_at(t)
                rgb = image_pattern(ci, i, setup.height, setup.width, grey=enc == "mono8")
                events.append((ns + lat, cam.topic, _image_msg(store, enc, rgb, ns, frame), image_type(enc)))
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
                    if not silent(arm.pose.topic, t):
                        events.append((ns + lat, arm.pose.topic, pose, arm.pose.type))
                    if not silent(arm.gripper.topic, t):
                        grip = Float64(data=t + lat / 1e9 + lead)
                        events.append((ns + lat, arm.gripper.topic, grip, arm.gripper.type))
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
        types = []
        for spec in contract.all_topics():
            if spec.topic in image_topics:  # the type(s) the images really have, whatever the contract says
                setup = cameras[spec.name]
                encodings = [setup.encoding] + ([setup.switch[1]] if setup.switch is not None else [])
                types.extend((spec.topic, typ) for typ in dict.fromkeys(map(image_type, encodings)))
            else:
                types.append((spec.topic, spec.type))
        for topic, typ in types:
            if topic in omit_topics:
                continue
            if with_msgdefs or typ != SUBTASK_TYPE:
                conns[topic, typ] = writer.add_connection(topic, typ, typestore=store)
            else:  # a recording without the custom type's definition: the reader must find it itself
                conns[topic, typ] = writer.add_connection(topic, typ, msgdef="", rihs01="RIHS01_" + "0" * 64)
        for recv, topic, msg, typ in events:
            if (topic, typ) in conns:
                writer.write(conns[topic, typ], recv, store.serialize_cdr(msg, typ))
    return path
