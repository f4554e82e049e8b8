"""``clap predict``: images from files -> printed chunk and JSON; bad files are named."""

import json

import numpy as np
import pytest
from PIL import Image

from clap_train.cli import main
from clap_train.models.vlm import VLMConfig
from clap_train.testing import make_tiny_policy

SMALL = VLMConfig(image_size=64, hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128,
                  vision_hidden=32, vision_heads=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    policy = make_tiny_policy(root / "policy", vlm=SMALL)
    head = root / "head.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(head)
    return root, policy, head


@pytest.mark.parametrize("mode", ["rf", "ntp"])
def test_predict_prints_and_writes_json(setup, capsys, mode):
    root, policy, head = setup
    out = root / f"{mode}.json"
    rc = main(["predict", "--policy", str(policy), "--head", str(head), "--instruction", "pick the cube",
               "--mode", mode, "--json", str(out), "--state", ",".join(["0.1"] * 14)])
    assert rc == 0
    text = capsys.readouterr().out
    assert f"mode {mode}" in text and "left_x" in text
    data = json.loads(out.read_text())
    assert np.asarray(data["actions"]).shape == (32, 14) and data["mode"] == mode
    assert (data["tokens"] is None) == (mode == "rf")


def test_missing_or_bad_image_is_named(setup, capsys):
    root, policy, _ = setup
    assert main(["predict", "--policy", str(policy), "--head", str(root / "nope.png"), "--instruction", "x"]) == 2
    assert "nope.png" in capsys.readouterr().err
    bad = root / "bad.png"
    bad.write_text("not an image")
    assert main(["predict", "--policy", str(policy), "--head", str(bad), "--instruction", "x"]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert main(["predict", "--policy", str(root), "--head", str(root / "head.png"), "--instruction", "x"]) == 2
    assert "policy.json" in capsys.readouterr().err
