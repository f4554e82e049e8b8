"""The colour-saliency target on the merged vision tokens (models/vision_aux.py) and ``vision_aux`` in NTP."""

import numpy as np
import pytest
import torch

from clap_train.models.ntp import encode_batch
from clap_train.models.pretrained import Backbone, load_backbone
from clap_train.models.vision_aux import VisionAux, colour_saliency
from clap_train.models.vlm import VLMConfig
from clap_train.train import ntp as ntp_train


def grey(size=64, level=80):
    return np.full((size, size, 3), level, np.uint8)


def test_saliency_is_the_colour_above_grey_of_each_region_row_major():
    frame = grey()
    frame[5, 40] = (200, 80, 80)  # one red pixel in the top-right 32 px region
    frame[50, 3] = (80, 80, 140)  # one blue pixel in the bottom-left one
    target = colour_saliency([[frame], [grey()]], region=32)
    assert target.shape == (8, 3)  # 2 samples x one frame x 2 x 2 regions
    red = (200 - 120) / 255.0
    blue = (140 - 100) / 255.0
    expected = torch.zeros(8, 3)
    expected[1, 0] = red
    expected[2, 2] = blue
    torch.testing.assert_close(target, expected)


def test_saliency_cells_say_where_in_the_region_the_colour_is():
    frame = grey()
    frame[5, 40] = (200, 80, 80)  # top-right region, its local (5, 8): cell (0, 1) of a 4 x 4 grid of 8 px
    target = colour_saliency([[frame]], region=32, grid=4)
    assert target.shape == (4, 4 * 4 * 3)
    cells = target.reshape(4, 16, 3)
    assert torch.nonzero(cells).tolist() == [[1, 1, 0]]  # token 1, cell row 0 col 1, red
    # one cell per region gives back the region's value
    torch.testing.assert_close(colour_saliency([[frame]], region=32, grid=1), cells.amax(dim=1))
    with pytest.raises(ValueError, match="grid must be >= 1 and divide the region's 32 px, got 5"):
        colour_saliency([[frame]], region=32, grid=5)


def test_saliency_rejects_frames_it_cannot_tile():
    with pytest.raises(ValueError, match=r"sample 1 frame 0 is \(48, 64, 3\)"):
        colour_saliency([[grey()], [np.zeros((48, 64, 3), np.uint8)]], region=32)


@pytest.mark.parametrize("grid", [1, 4])
def test_head_learns_where_the_colour_is(grid):
    vlm, processor, vocab = load_backbone(VLMConfig(hidden_size=64, layers=1, intermediate_size=128, vision_hidden=32,
                                                    vision_heads=2, image_size=64), None, 8)
    model = Backbone(vlm, VisionAux(vlm, grid))
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(8):
        f = grey()
        y, x = rng.integers(0, 52, 2)
        f[y:y + 12, x:x + 12] = (230, 40, 40)  # a blob large enough to learn in a few steps
        frames.append([f])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        enc = encode_batch(processor, vocab, frames, ["pick up the red cube"] * 8)
        model(**enc.causal_inputs())
        loss = model.aux.loss(frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5]), (losses[:5], losses[-5:])


def test_negative_weight_is_refused():
    with pytest.raises(ValueError, match="vision_aux must be >= 0"):
        ntp_train.NTPTrainConfig(vision_aux=-1.0)
