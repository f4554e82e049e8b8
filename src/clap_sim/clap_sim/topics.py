"""The robot contract's topic names and types as the simulation uses them.

They come from ``clap_train.data.contract.load_contract()`` (config/contract/astribot.yaml, or
another contract file), so the simulator, the recorder, the converter and the policy node share
one source. ``load_topics`` also checks that the contract fits the ALOHA scene.

ROS-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clap_train.data.contract import load_contract


@dataclass(frozen=True)
class ArmTopics:
    pose: str
    gripper: str


@dataclass(frozen=True)
class SimTopics:
    """Topic names: cameras (name -> topic), per-arm state and command topics, language."""

    cameras: dict[str, str]
    camera_type: str  # sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage (JPEG)
    state: dict[str, ArmTopics]
    command: dict[str, ArmTopics]
    instruction: str
    subtask: str | None  # None: the contract records no subtask
    frame_id: str
    rate_hz: float


COMPRESSED = "sensor_msgs/msg/CompressedImage"
JPEG_QUALITY = 90


def jpeg_bytes(rgb, quality: int = JPEG_QUALITY) -> bytes:
    """Encode an HxWx3 uint8 image as JPEG (Pillow), for CompressedImage cameras."""
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def load_topics(contract_path: str | Path | None = None) -> SimTopics:
    """The topics of a contract file (None: the default Astribot contract)."""
    c = load_contract(contract_path)
    arms = {a.name for a in c.state.arms} | {a.name for a in c.action.arms}
    if arms != {"left", "right"}:
        raise ValueError(f"contract {c.source}: the ALOHA simulation has arms left and right, "
                         f"the contract names {sorted(arms)}")
    missing = {"head", "left_wrist", "right_wrist"} - set(c.camera_names)
    if missing:
        raise ValueError(f"contract {c.source}: cameras {sorted(missing)} are missing; the simulation "
                         f"renders head, left_wrist and right_wrist")
    types = {cam.type for cam in c.cameras}
    if len(types) != 1:
        raise ValueError(f"contract {c.source}: the simulation publishes every camera with one message type, "
                         f"the contract mixes {sorted(types)}")
    return SimTopics(
        cameras={cam.name: cam.topic for cam in c.cameras},
        camera_type=types.pop(),
        state={a.name: ArmTopics(a.pose.topic, a.gripper.topic) for a in c.state.arms},
        command={a.name: ArmTopics(a.pose.topic, a.gripper.topic) for a in c.action.arms},
        instruction=c.instruction.topic,
        subtask=c.subtask.topic if c.subtask is not None else None,
        frame_id=c.frame_id,
        rate_hz=c.rate_hz,
    )
