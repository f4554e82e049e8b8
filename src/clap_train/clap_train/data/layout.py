"""The layout of the state/action vector: the one place that says which index holds what.

Per arm, in the contract's arm order, seven values ``[x, y, z, roll, pitch, yaw, gripper]``
(position in metres, Euler xyz in radians, gripper in its own units); arm ``k`` starts at
``7 * k``. For the default contract (``config/contract/astribot.yaml``: arms ``left`` and
``right``) that is the 14-D vector ``[left x..gripper (0-6), right x..gripper (7-13)]``::

    from clap_train.data.layout import DEFAULT_LAYOUT
    DEFAULT_LAYOUT.names            # ["left_x", ..., "right_gripper"]
    DEFAULT_LAYOUT.euler_indices    # [3, 4, 5, 10, 11, 12]
    DEFAULT_LAYOUT.arm("right")     # ArmSlices: position 7:10, euler 10:13, gripper 13

A contract derives its layout from its arms (``contract.action.layout``); a vector's dimension
names give it back (``ActionLayout.from_names``, e.g. a policy's ``policy.json``). Every user of
the vector (converter, training, policy, node, simulation) takes its indices from here.
ROS-free and torch-free (numpy only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

# One arm's values, in order; the names of the vector are ``<arm>_<field>``.
ARM_FIELDS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
ARM_WIDTH = len(ARM_FIELDS)
EULER_FIELDS = ("roll", "pitch", "yaw")
# Where the parts lie within one arm's values.
POSITION = slice(0, 3)
EULER = slice(3, 6)
GRIPPER = 6


@dataclasses.dataclass(frozen=True)
class ArmSlices:
    """Where one arm's values lie in the vector: ``start`` is the index of its ``x``."""

    name: str
    start: int

    @property
    def span(self) -> slice:
        """All seven values of the arm."""
        return slice(self.start, self.start + ARM_WIDTH)

    @property
    def position(self) -> slice:
        return slice(self.start + POSITION.start, self.start + POSITION.stop)

    @property
    def euler(self) -> slice:
        return slice(self.start + EULER.start, self.start + EULER.stop)

    @property
    def gripper(self) -> int:
        return self.start + GRIPPER

    @property
    def block(self) -> tuple[int, int, int]:
        """(position start, Euler start, gripper index)."""
        return self.position.start, self.euler.start, self.gripper

    def index(self, field: str) -> int:
        """The index of one of the arm's ``ARM_FIELDS``."""
        if field not in ARM_FIELDS:
            raise ValueError(f"{field!r} is not one of an arm's fields {ARM_FIELDS}")
        return self.start + ARM_FIELDS.index(field)


@dataclasses.dataclass(frozen=True)
class ActionLayout:
    """The vector of ``arms`` (names, contract order), ``ARM_WIDTH`` values each."""

    arms: tuple[str, ...]

    def __post_init__(self) -> None:
        arms = tuple(self.arms)
        object.__setattr__(self, "arms", arms)
        if not arms or len(set(arms)) != len(arms) or not all(isinstance(a, str) and a for a in arms):
            raise ValueError(f"a layout needs unique, non-empty arm names, got {list(arms)}")

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ActionLayout:
        """The layout whose ``names`` these are (``<arm>_x`` ... ``<arm>_gripper`` per arm)."""
        names = list(names)
        if not names or len(names) % ARM_WIDTH:
            raise ValueError(f"{len(names)} dimension names are not {ARM_WIDTH} per arm: {names}")
        arms = []
        for k in range(0, len(names), ARM_WIDTH):
            arm = str(names[k]).rsplit("_", 1)[0]
            if list(names[k:k + ARM_WIDTH]) != [f"{arm}_{f}" for f in ARM_FIELDS]:
                raise ValueError(f"dimension names {names[k:k + ARM_WIDTH]} (from index {k}) are not one arm's "
                                 f"{list(ARM_FIELDS)}")
            arms.append(arm)
        return cls(tuple(arms))

    @property
    def dim(self) -> int:
        return ARM_WIDTH * len(self.arms)

    @property
    def names(self) -> list[str]:
        """``<arm>_<field>`` for every index (left_x, ..., right_gripper)."""
        return [f"{arm}_{f}" for arm in self.arms for f in ARM_FIELDS]

    @property
    def arm_slices(self) -> tuple[ArmSlices, ...]:
        """Each arm's slices, in order."""
        return tuple(ArmSlices(arm, k * ARM_WIDTH) for k, arm in enumerate(self.arms))

    def arm(self, name: str) -> ArmSlices:
        """The slices of the arm ``name``."""
        if name not in self.arms:
            raise KeyError(f"no arm {name!r} in the layout; arms: {list(self.arms)}")
        return ArmSlices(name, self.arms.index(name) * ARM_WIDTH)

    def indices(self, *fields: str) -> list[int]:
        """The indices of ``fields`` of every arm, arm by arm (for ``"yaw"``: each arm's yaw)."""
        return [a.index(f) for a in self.arm_slices for f in fields]

    @property
    def euler_indices(self) -> list[int]:
        """Indices of the Euler angles (unwrapped within an episode, wrapped when published)."""
        return self.indices(*EULER_FIELDS)

    @property
    def gripper_indices(self) -> list[int]:
        return self.indices("gripper")

    @property
    def blocks(self) -> list[tuple[int, int, int]]:
        """(position start, Euler start, gripper index) of each arm."""
        return [a.block for a in self.arm_slices]

    def vector(self, per_arm: Mapping[str, tuple]) -> np.ndarray:
        """Assemble ``{arm: (position [..., 3], euler [..., 3], gripper [...])}`` into vectors [..., dim]."""
        parts = []
        for arm in self.arms:
            position, euler, gripper = (np.asarray(v, dtype=np.float64) for v in per_arm[arm])
            parts += [position, euler, gripper[..., None]]
        return np.concatenate(parts, axis=-1)


# The default contract's layout (config/contract/astribot.yaml; a test checks that they agree).
DEFAULT_LAYOUT = ActionLayout(("left", "right"))
