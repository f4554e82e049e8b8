"""The one layout of the state/action vector: derived from the contract, and torch-free with the interface."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from clap_train.data.samples.action_space import arm_blocks
from clap_train.data.contract import load_contract
from clap_train.data.layout import ARM_FIELDS, ARM_WIDTH, DEFAULT_LAYOUT, EULER_FIELDS, ActionLayout


def test_the_default_layout_is_the_contracts():
    contract = load_contract()
    assert contract.action.layout == DEFAULT_LAYOUT == contract.state.layout
    assert DEFAULT_LAYOUT.arms == tuple(arm.name for arm in contract.action.arms)
    assert contract.vector_names == DEFAULT_LAYOUT.names and contract.action.dim == DEFAULT_LAYOUT.dim == 14
    assert contract.action.euler_indices == DEFAULT_LAYOUT.euler_indices == [3, 4, 5, 10, 11, 12]


def test_the_slices_hold_what_the_names_say():
    names = np.array(DEFAULT_LAYOUT.names)
    assert [a.name for a in DEFAULT_LAYOUT.arm_slices] == ["left", "right"]
    for arm in DEFAULT_LAYOUT.arm_slices:
        assert names[arm.span].tolist() == [f"{arm.name}_{f}" for f in ARM_FIELDS]
        assert names[arm.position].tolist() == [f"{arm.name}_{f}" for f in ("x", "y", "z")]
        assert names[arm.euler].tolist() == [f"{arm.name}_{f}" for f in EULER_FIELDS]
        assert names[arm.gripper] == f"{arm.name}_gripper"
        assert arm.block == (arm.position.start, arm.euler.start, arm.gripper)
        assert DEFAULT_LAYOUT.arm(arm.name) == arm
    assert names[DEFAULT_LAYOUT.euler_indices].tolist() == [
        n for n in names if n.endswith(("_roll", "_pitch", "_yaw"))]
    assert names[DEFAULT_LAYOUT.gripper_indices].tolist() == ["left_gripper", "right_gripper"]
    assert names[DEFAULT_LAYOUT.indices("yaw")].tolist() == ["left_yaw", "right_yaw"]
    assert DEFAULT_LAYOUT.blocks == [(0, 3, 6), (7, 10, 13)] == arm_blocks(DEFAULT_LAYOUT.euler_indices)
    with pytest.raises(KeyError, match="no arm 'middle'"):
        DEFAULT_LAYOUT.arm("middle")


def test_names_give_the_layout_back():
    assert ActionLayout.from_names(DEFAULT_LAYOUT.names) == DEFAULT_LAYOUT
    one = ActionLayout.from_names([f"main_arm_{f}" for f in ARM_FIELDS])  # arm names may hold "_"
    assert one.arms == ("main_arm",) and one.dim == ARM_WIDTH and one.euler_indices == [3, 4, 5]
    assert one.blocks == arm_blocks([3, 4, 5])
    swapped = DEFAULT_LAYOUT.names
    swapped[3], swapped[5] = swapped[5], swapped[3]
    for bad, why in ((swapped, "are not one arm's"), (DEFAULT_LAYOUT.names[:-1], "not 7 per arm"), ([], "not 7"),
                     ([f"j{i}" for i in range(14)], "are not one arm's")):
        with pytest.raises(ValueError, match=why):
            ActionLayout.from_names(bad)
    with pytest.raises(ValueError, match="unique"):
        ActionLayout(("left", "left"))


def test_vector_puts_each_arm_where_the_layout_says():
    per_arm = {"left": ([1, 2, 3], [4, 5, 6], 7), "right": ([8, 9, 10], [11, 12, 13], 14)}
    np.testing.assert_array_equal(DEFAULT_LAYOUT.vector(per_arm), np.arange(1, 15))
    rows = {arm: (np.full((5, 3), k), np.full((5, 3), k + 0.5), np.full(5, -k))
            for k, arm in enumerate(("left", "right"))}
    v = DEFAULT_LAYOUT.vector(rows)
    assert v.shape == (5, 14) and v.dtype == np.float64
    right = DEFAULT_LAYOUT.arm("right")
    assert np.all(v[:, right.position] == 1) and np.all(v[:, right.euler] == 1.5) and np.all(v[:, right.gripper] == -1)


def test_the_interface_imports_neither_torch_nor_transformers():
    code = ("import sys, clap_train.interface as i; "
            "assert i.Prediction and i.Policy and i.DEFAULT_LAYOUT.dim == 14; "
            "heavy = sorted(m for m in ('torch', 'transformers', 'rclpy') if m in sys.modules); "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
