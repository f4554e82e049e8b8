"""Unit tests of the freshest-complete-set synchronizer (pure Python)."""

import pytest

from clap_policy_ros.synchronizer import FreshestSetSynchronizer

KEYS = ("head", "left_wrist", "right_wrist")


def test_freshest_complete_set_within_slop():
    sync = FreshestSetSynchronizer(KEYS, slop=0.01, max_age=1.0)
    for t in (0.0, 0.033, 0.066):
        sync.add("head", t, f"h{t}")
        sync.add("left_wrist", t + 0.004, f"l{t}")
    sync.add("right_wrist", 0.035, "r0.033")
    got = sync.latest(now=0.07)
    # the newest head (0.066) has no right_wrist within 10 ms: the set at ~0.033 wins
    assert {k: v.payload for k, v in got.items.items()} == {
        "head": "h0.033", "left_wrist": "l0.033", "right_wrist": "r0.033"}
    sync.add("right_wrist", 0.067, "r0.066")
    got = sync.latest(now=0.07)
    assert got.items["head"].payload == "h0.066" and got.items["right_wrist"].payload == "r0.066"


def test_incomplete_or_out_of_slop_gives_none():
    sync = FreshestSetSynchronizer(KEYS, slop=0.005, max_age=1.0)
    sync.add("head", 0.0, 1)
    sync.add("left_wrist", 0.0, 2)
    assert sync.latest(now=0.0) is None  # right_wrist never arrived
    sync.add("right_wrist", 0.02, 3)  # too far from the others
    assert sync.latest(now=0.02) is None


def test_max_age_rejects_stale_sets_and_take_new_returns_once():
    sync = FreshestSetSynchronizer(KEYS, slop=0.01, max_age=0.1)
    for k in KEYS:
        sync.add(k, 1.0, k)
    assert sync.take_new(now=1.05) is not None
    assert sync.take_new(now=1.06) is None  # same set again
    assert sync.latest(now=1.2) is None  # older than max_age
    ages = sync.ages(now=1.2)
    assert ages == pytest.approx({k: 0.2 for k in KEYS})


def test_max_age_per_key():
    sync = FreshestSetSynchronizer(("a", "b"), slop=0.01, max_age={"a": 0.1, "b": 0.5})
    sync.add("a", 1.0, "a")
    sync.add("b", 1.0, "b")
    assert sync.latest(now=1.09) is not None
    assert sync.latest(now=1.2) is None  # "a" is older than its 0.1 s
    sync.add("a", 1.15, "a2")
    sync.add("b", 1.15, "b2")
    assert sync.latest(now=1.2).items["a"].payload == "a2"
    with pytest.raises(ValueError, match="are not the keys"):
        FreshestSetSynchronizer(("a", "b"), slop=0.0, max_age={"a": 1.0})


def test_out_of_order_messages_are_sorted_and_bad_keys_named():
    sync = FreshestSetSynchronizer(("a", "b"), slop=0.0, max_age=10.0, depth=3)
    sync.add("a", 2.0, "a2")
    sync.add("a", 1.0, "a1")
    sync.add("b", 1.0, "b1")
    assert sync.latest(now=2.0).items["a"].payload == "a1"
    with pytest.raises(KeyError, match="'c'"):
        sync.add("c", 1.0, None)
    with pytest.raises(ValueError, match="slop"):
        FreshestSetSynchronizer(("a",), slop=-1, max_age=1)
