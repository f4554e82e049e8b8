"""``clap sim ground``: first frames and their first subtask, a grounding whose loss falls, a backbone to load."""

import numpy as np
import pytest
from clap_sim.cli import build_parser
from clap_sim.grounding import Grounding, first_frames, ground
from clap_sim.scripted import scripted_trajectory
from clap_sim.steps import CONFIGS
from clap_sim.tasks import make_task
from clap_train.config import load_config
from clap_train.train.ntp import NTPTrainConfig


def test_first_frames_carry_the_instruction_and_the_first_subtask(tmp_path):
    data = first_frames("coloured_cubes", 20_000, 3, 32, cache=tmp_path)
    assert data["images"].shape == (3, 3, 32, 32, 3) and data["images"].dtype == np.uint8
    task = make_task("coloured_cubes")
    for k, seed in enumerate(range(20_000, 20_003)):
        spec = task.sample(seed)
        assert data["instruction"][k] == spec.instruction
        assert data["subtask"][k] == f"move the {spec.extra['arm']} gripper above the {spec.extra['target']} cube"
        assert data["subtask"][k] == next(s for s in scripted_trajectory(spec).subtasks if s)
    cached = tmp_path / "renders-coloured_cubes-20000-3-32.npz"
    assert cached.is_file()
    again = first_frames("coloured_cubes", 20_000, 3, 32, cache=tmp_path)  # read back, not rendered again
    assert np.array_equal(again["images"], data["images"])


def test_grounding_learns_and_saves_a_backbone_a_stage_starts_from(tmp_path):
    from clap_train.models.pretrained import load_backbone

    cfg = load_config(NTPTrainConfig, CONFIGS / "coloured_cubes" / "ntp.yaml")
    history = ground(cfg, Grounding(scenes=4, steps=60, batch_size=4), tmp_path, progress=False)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    vlm, processor, vocab = load_backbone(cfg.vlm, str(tmp_path), 64)  # a stage adds its codebook's tokens
    assert processor.image_size == cfg.vlm.image_size and vocab.codebook_size == 64
    assert not any("aux" in name for name, _ in vlm.named_parameters())  # the training-only head is not saved


def test_ground_command_takes_the_grounding_options():
    args = build_parser().parse_args(["ground", "--config", "c.yaml", "--out", "o", "--scenes", "8", "--lr", "0.01"])
    assert args.scenes == 8 and args.lr == 0.01 and args.steps == Grounding().steps and args.progress
    with pytest.raises(ValueError, match="scenes must be >= 1"):
        Grounding(scenes=0)
