"""The topic contract: dataset keys <-> ROS topics, message types and timestamp sources.

One YAML file (``config/contract/astribot.yaml`` by default) is read by the recorder
(``launch/record.launch.py``), the bag converter (``clap convert``) and the live policy node, so
training and deployment cannot drift apart. This module only parses and checks it (typed
dataclasses through :func:`clap_train.config.load_config`); it never imports ROS.

The 14-D vector layout of ``observation.state`` and ``action`` is
``[left x,y,z, left roll,pitch,yaw, left gripper, right x,y,z, right roll,pitch,yaw, right gripper]``
(Euler xyz in radians), built from one pose topic and one gripper topic per arm: the
:class:`~clap_train.data.layout.ActionLayout` of the contract's arms (``contract.action.layout``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Literal

import yaml

from clap_train.config import ConfigError, load_config
from clap_train.data.layout import ActionLayout

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = ("geometry_msgs/msg/PoseStamped",)
GRIPPER_TYPES = ("std_msgs/msg/Float64",)

Stamp = Literal["header", "receive"]
GapPolicy = Literal["split", "drop", "fail"]


def default_contract_path() -> pathlib.Path:
    """The astribot contract shipped with clap_train (a symlink to config/contract in a checkout)."""
    return pathlib.Path(__file__).resolve().parent.parent / "configs" / "contract" / "astribot.yaml"


@dataclasses.dataclass
class TopicSpec:
    """One ROS topic of the contract."""

    topic: str
    type: str
    stamp: Stamp = "header"
    max_age_s: float | None = 0.1
    required: bool = True

    def __post_init__(self) -> None:
        if not self.topic.startswith("/"):
            raise ValueError(f"topic {self.topic!r} must be absolute (start with '/')")
        if self.type.count("/") != 2 or "/msg/" not in self.type:
            raise ValueError(f"{self.topic}: type {self.type!r} must look like pkg/msg/Name")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError(f"{self.topic}: max_age_s must be > 0 or null, got {self.max_age_s}")


@dataclasses.dataclass
class CameraSpec(TopicSpec):
    """A camera: dataset key ``observation.images.<name>``, Image or CompressedImage.

    ``type`` is what the camera is expected to publish; the converter (like the node) accepts
    either image type on the topic whatever ``type`` says.
    """

    name: str = ""
    key: str = ""
    size: tuple[int, int] | None = None  # (height, width) to resize to; None keeps the recorded size

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.name:
            raise ValueError(f"{self.topic}: camera needs a name")
        if not self.key:
            self.key = f"observation.images.{self.name}"
        if self.type not in IMAGE_TYPES:
            raise ValueError(f"camera {self.name} ({self.topic}): type {self.type!r} is not one of {IMAGE_TYPES}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0 or any(s % 2 for s in self.size)):
            raise ValueError(f"camera {self.name}: size {self.size} must be two positive even numbers [height, width]")


@dataclasses.dataclass
class ArmSpec:
    """One arm: an end-effector pose topic and a gripper topic (7 values of the 14-D vector)."""

    name: str
    pose: TopicSpec
    gripper: TopicSpec

    def __post_init__(self) -> None:
        if self.pose.type not in POSE_TYPES:
            raise ValueError(f"arm {self.name} pose {self.pose.topic}: type {self.pose.type!r} not in {POSE_TYPES}")
        if self.gripper.type not in GRIPPER_TYPES:
            raise ValueError(
                f"arm {self.name} gripper {self.gripper.topic}: type {self.gripper.type!r} not in {GRIPPER_TYPES}"
            )


@dataclasses.dataclass
class VectorSpec:
    """A 14-D vector feature (``observation.state`` or ``action``) built from per-arm topics."""

    key: str
    arms: list[ArmSpec]

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"{self.key}: arm names must be unique and non-empty, got {names}")

    @property
    def layout(self) -> ActionLayout:
        """Which index of the vector holds what (the arms in this order, 7 values each)."""
        return ActionLayout(tuple(a.name for a in self.arms))

    @property
    def names(self) -> list[str]:
        return self.layout.names

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def euler_indices(self) -> list[int]:
        """Indices of the Euler angles (unwrapped within an episode, wrapped when published)."""
        return self.layout.euler_indices

    def topics(self) -> list[TopicSpec]:
        return [t for arm in self.arms for t in (arm.pose, arm.gripper)]


@dataclasses.dataclass
class GapSpec:
    """What the converter does where a camera or state topic has no message within its ``max_age_s``.

    Such a gap inside a recording is never spliced over (frames on both sides would be labelled
    one period apart): ``split`` makes each side an episode of its own (``<episode id>-part000``,
    ``-part001``, ...), ``drop`` keeps only the longest side (one LeRobot episode cannot hold a
    jump in time: its frames are indexed one period apart), ``fail`` reports the bag as bad.
    A part shorter than ``min_part_frames`` (default: one action chunk) is left out and logged;
    a recording without a gap is one episode whatever its length.
    """

    policy: GapPolicy = "split"
    min_part_frames: int = 32

    def __post_init__(self) -> None:
        if self.min_part_frames < 1:
            raise ValueError(f"gaps.min_part_frames must be >= 1, got {self.min_part_frames}")


@dataclasses.dataclass
class OutputSpec:
    """What the policy node publishes besides the robot's commands and the subtask (never recorded).

    ``action_chunk`` (clap_msgs/ActionChunk), ``status`` (clap_msgs/PolicyStatus), ``markers``
    (visualization_msgs/MarkerArray) and ``path``, one nav_msgs/Path per action arm: a pattern
    in which ``{arm}`` stands for the arm's name. The message types are fixed by the node.
    """

    action_chunk: str
    status: str
    markers: str
    path: str

    def __post_init__(self) -> None:
        for name, topic in dataclasses.asdict(self).items():
            if not topic.startswith("/"):
                raise ValueError(f"outputs.{name}: topic {topic!r} must be absolute (start with '/')")
        if "{arm}" not in self.path:
            raise ValueError(f"outputs.path: {self.path!r} must contain {{arm}} (one path per arm)")

    def path_topic(self, arm: str) -> str:
        """The topic of ``arm``'s predicted path."""
        return self.path.replace("{arm}", arm)

    def topics(self, arms: list[str]) -> list[str]:
        """Every output topic, with one path per arm of ``arms``."""
        return [self.action_chunk, self.status, self.markers, *(self.path_topic(a) for a in arms)]


@dataclasses.dataclass
class Contract:
    """The whole contract. Load with :func:`load_contract`."""

    name: str
    rate_hz: float
    cameras: list[CameraSpec]
    state: VectorSpec
    action: VectorSpec
    instruction: TopicSpec
    subtask: TopicSpec | None = None
    frame_id: str = "base_link"
    gaps: GapSpec = dataclasses.field(default_factory=GapSpec)
    outputs: OutputSpec | None = None  # the policy node needs it; a dataset's embedded copy may lack it
    source: str = ""  # the file it was loaded from (filled in by load_contract)

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {self.rate_hz}")
        if not self.cameras:
            raise ValueError("a contract needs at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        if self.instruction.type != "std_msgs/msg/String":
            raise ValueError(f"instruction {self.instruction.topic}: type must be std_msgs/msg/String")
        if self.subtask is not None and self.subtask.type != "clap_msgs/msg/Subtask":
            raise ValueError(f"subtask {self.subtask.topic}: type must be clap_msgs/msg/Subtask")
        if self.state.dim != self.action.dim:
            raise ValueError(f"state ({self.state.dim}-D) and action ({self.action.dim}-D) must have one layout")
        topics = [t.topic for t in self.all_topics()]
        if self.outputs is not None:
            topics += self.outputs.topics([a.name for a in self.action.arms])
        dup = sorted({t for t in topics if topics.count(t) > 1})
        if dup:
            raise ValueError(f"topics used twice: {dup}")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def camera_keys(self) -> list[str]:
        return [c.key for c in self.cameras]

    @property
    def vector_names(self) -> list[str]:
        """The 14 names of the state/action layout (left_x, ..., right_gripper)."""
        return self.action.names

    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.rate_hz))

    def camera(self, name: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"contract {self.source or self.name}: no camera {name!r}; cameras: {self.camera_names}")

    def node_outputs(self) -> OutputSpec:
        """The policy node's output topics; an error names the file when the section is missing."""
        if self.outputs is None:
            raise ValueError(f"contract {self.source or self.name}: no outputs: section (the policy node's topics)")
        return self.outputs

    def all_topics(self) -> list[TopicSpec]:
        """Every topic of the contract (what the recorder records)."""
        out: list[TopicSpec] = [*self.cameras, *self.state.topics(), *self.action.topics(), self.instruction]
        if self.subtask is not None:
            out.append(self.subtask)
        return out

    def to_yaml(self) -> str:
        """The contract as YAML (embedded in a dataset's meta/contract.yaml)."""
        from clap_train.config import to_dict

        data = to_dict(self)
        data.pop("source", None)
        if data["outputs"] is None:
            data.pop("outputs")
        return yaml.safe_dump(data, sort_keys=False)


def load_contract(path: str | pathlib.Path | None = None, overrides: list[str] | None = None) -> Contract:
    """Load and check a contract file; ``None`` loads the default astribot contract.

    Errors are :class:`ConfigError` naming the file and the bad key.
    """
    path = default_contract_path() if path is None else pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"contract file not found: {path}")
    contract = load_config(Contract, path, overrides)
    contract.source = str(path)
    return contract


def contract_from_yaml_text(text: str, where: str = "contract") -> Contract:
    """Parse a contract from YAML text (e.g. a dataset's embedded meta/contract.yaml)."""
    from clap_train.config import from_dict

    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    contract = from_dict(Contract, data, where)
    contract.source = where
    return contract
