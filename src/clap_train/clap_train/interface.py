"""What a policy is to its callers, without torch: ``Prediction``, the ``Policy`` protocol, the layout.

The policy node (clap_policy_ros) and test doubles import this module, never
``clap_train.policy``: that one loads torch and transformers, which a process that only runs a
policy class named by a parameter (or a fake one) must not pay for. ``ClapPolicy``
(clap_train.policy) is the implementation; any class with the same members can stand in for it
(the node's ``policy_class`` parameter). Nothing here imports torch, transformers or ROS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from clap_train.data.layout import ARM_FIELDS, DEFAULT_LAYOUT, ActionLayout, ArmSlices

__all__ = ["ARM_FIELDS", "DEFAULT_LAYOUT", "ActionLayout", "ArmSlices", "Policy", "Prediction"]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One predicted chunk: actions [chunk_len, action_dim] float32 in robot units."""

    actions: np.ndarray
    subtask: str
    latency: float
    mode: str
    tokens: np.ndarray | None = None


@runtime_checkable
class Policy(Protocol):
    """What the policy node calls on a policy (``ClapPolicy`` and its test doubles).

    ``action_names`` are the layout's names (``ActionLayout.from_names`` gives the layout back).
    ``predict``'s ``prev_chunk`` (robot units, row 0 = the new chunk's first step) and
    ``inference_delay`` (rows of it the robot executes before the new chunk arrives) drive
    real-time chunking; ``seed`` makes a prediction repeatable.
    """

    @property
    def chunk_len(self) -> int: ...

    @property
    def action_dim(self) -> int: ...

    @property
    def action_names(self) -> list[str]: ...

    @classmethod
    def load(cls, path, device: str = "cpu", warmup: bool = True) -> Policy:
        """Read a policy from ``path`` (a directory) onto ``device``; ``warmup`` runs it once."""
        ...

    def predict(self, images: Mapping[str, np.ndarray], instruction: str, state: np.ndarray | None = None,
                mode: str = "rf", *, prev_chunk: np.ndarray | None = None, inference_delay: int = 0,
                seed: int = 0) -> Prediction:
        """Predict one chunk from HxWx3 uint8 ``images`` per camera, the instruction and the state."""
        ...
