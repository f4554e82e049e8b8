"""Typed YAML configs: unknown keys, wrong types and bad files are errors that name the place."""

import dataclasses
from typing import Literal

import pytest

from clap_train.config import ConfigError, load_config, save_config


@dataclasses.dataclass
class Inner:
    width: int = 4
    names: tuple[str, ...] = ("a", "b")


@dataclasses.dataclass
class Outer:
    lr: float = 1e-3
    mode: Literal["rf", "ntp"] = "rf"
    inner: Inner = dataclasses.field(default_factory=Inner)
    layers: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    path: str | None = None

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def test_yaml_values_are_converted_to_the_annotated_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 2.0e-4\nmode: ntp\ninner:\n  width: 8\n  names: [x]\nlayers: [3]\n")
    cfg = load_config(Outer, path)
    assert cfg == Outer(lr=2e-4, mode="ntp", inner=Inner(width=8, names=("x",)), layers=[3])
    assert isinstance(cfg.inner.names, tuple)


def test_overrides_reach_nested_fields():
    cfg = load_config(Outer, None, ["inner.width=16", "lr=0.5", "path=/tmp/x"])
    assert (cfg.inner.width, cfg.lr, cfg.path) == (16, 0.5, "/tmp/x")


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("inner:\n  widht: 3\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*widht"):
        load_config(Outer, path)


@pytest.mark.parametrize("text, pattern", [
    ("mode: diffusion\n", r"mode.*'diffusion'.*not one of"),
    ("inner:\n  width: 2.5\n", r"inner\.width.*integer"),
    ("lr: -1\n", r"lr must be positive"),
    ("- just\n- a list\n", r"top level must be a mapping"),
    ("lr: [unclosed\n", r"not valid YAML"),
])
def test_bad_values_are_rejected_with_a_reason(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(Outer, path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(Outer, tmp_path / "nowhere.yaml")


def test_save_then_load_round_trips(tmp_path):
    cfg = Outer(lr=3e-5, mode="ntp", inner=Inner(width=2, names=("p", "q")), layers=[5, 6, 7])
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Outer, tmp_path / "saved.yaml") == cfg
    assert not list(tmp_path.glob(".*tmp")), "the temporary file must be gone"
