"""A dense, label-free target on Qwen3-VL's merged vision tokens: how much colour each region holds.

Why it exists (bench/RESULTS.md, "Why the binding is not learned, and what fixes it"): in the 64 px head
camera a coloured cube is 1-2 pixels of a 32 x 32 region that one merged vision token stands for.
Qwen3-VL's patch embedding is linear, so the cube moves a token's features by about a percent; a
random tiny backbone trained only through the language loss sat at the prior on "which arm goes
to the red cube" (149/300 held out after 48k samples, at 64 and 128 px and at patch 8), while a
small CNN with max pooling learned it in 500 steps. Asking every merged token to say how much of
each colour its region holds (the per-channel maximum of the colour above the pixel's grey level,
a function of the frame alone: no label, no annotation) gives the vision tower that feature, and
the same probe learned the binding in 750 steps (300/300 held out).

The target is the maximum, not the mean, for the reason above: a mean over the region is the
dilution the patch embedding already has.

In the closed loop (same section): CLAP-NTP names the arm on 300 of 300 held-out scenes with it;
CLAP-RF picks the right arm (20/20) only when its head also reads the subtask (``flow.read_subtask``).
On transfer cube it lets the demo's budget reach the cube (bench/RESULTS.md, "The colour-saliency
target on transfer cube"), and ``grid`` > 1 (cells inside each region) places it at the table's edge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass
class VisionAuxKeys:
    """The target's config keys, shared by the CLAP-NTP and CLAP-RF configs (they inherit them)."""

    # weight of the colour-saliency target on the merged vision tokens (in both RF stages); 0: off
    vision_aux: float = 0.0
    # cells per side inside each merged token's region (1: one value per token; 4: where in the region the
    # colour is, at 8 px in a 64 px frame)
    vision_aux_grid: int = 1

    def __post_init__(self) -> None:
        if self.vision_aux < 0:
            raise ValueError(f"vision_aux must be >= 0, got {self.vision_aux}")
        if self.vision_aux_grid < 1:
            raise ValueError(f"vision_aux_grid must be >= 1, got {self.vision_aux_grid}")


def add_vision_aux(loss: torch.Tensor, metrics: dict, aux: VisionAux, frames, weight: float) -> torch.Tensor:
    """``loss`` plus ``weight`` times ``aux``'s loss on ``frames`` (reported as ``vision_aux_loss``); 0: ``loss``."""
    if weight <= 0:
        return loss
    term = aux.loss(frames)
    metrics["vision_aux_loss"] = float(term.detach())
    return loss + weight * term


def region_px(vlm) -> int:
    """Side in pixels of the square region one merged vision token covers (patch x merge)."""
    vc = vlm.config.vision_config
    return int(vc.patch_size) * int(vc.spatial_merge_size)


def check_grid(region: int, grid: int) -> None:
    """Raise ValueError unless ``grid`` cells per side tile a ``region`` px region (``vision_aux_grid``)."""
    if grid < 1 or region % grid:
        raise ValueError(f"colour_saliency: grid must be >= 1 and divide the region's {region} px, got {grid} "
                         "(vision_aux_grid)")


def colour_saliency(frames: Sequence[Sequence[np.ndarray]], region: int, grid: int = 1) -> torch.Tensor:
    """[tokens, grid * grid * 3] in [0, 1]: per merged token, cell and channel, the cell's most colourful pixel.

    Tokens are the images in order, each image's regions row-major; each region is cut into
    ``grid`` x ``grid`` cells, row-major (``grid`` 1: the region itself); a channel's value is the
    maximum over the cell of (channel - the pixel's mean over channels), floored at 0. With cells,
    the token is asked where in its region the colour is, not only whether it holds some: a merged
    token covers a quarter of a 64 px frame, too coarse to place a grasp (bench/RESULTS.md, the demo).
    ``frames[b]`` are sample b's HxWx3 uint8 frames, square, with a side divisible by ``region``
    (the order and layout in which the processor hands them to the vision tower).
    """
    check_grid(region, grid)
    cell = region // grid
    out = []
    for b, per in enumerate(frames):
        for c, frame in enumerate(per):
            h, w = frame.shape[:2]
            if h != w or h % region or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"colour_saliency: sample {b} frame {c} is {tuple(frame.shape)}; the target needs "
                                 f"square HxWx3 frames with a side divisible by {region} px")
            x = torch.from_numpy(np.ascontiguousarray(frame)).float() / 255.0
            above = (x - x.mean(-1, keepdim=True)).clamp(min=0.0)
            g = h // region
            cells = above.reshape(g, grid, cell, g, grid, cell, 3).amax(dim=(2, 5))  # [g, grid, g, grid, 3]
            out.append(cells.permute(0, 2, 1, 3, 4).reshape(g * g, grid * grid * 3))
    return torch.cat(out)


class VisionAux(torch.nn.Module):
    """A linear head on the merged vision tokens of ``vlm``, and the hook that keeps them per forward."""

    def __init__(self, vlm, grid: int = 1):
        super().__init__()
        self.region, self.grid = region_px(vlm), int(grid)
        check_grid(self.region, self.grid)  # at construction, before any training step
        self.head = torch.nn.Linear(vlm.config.text_config.hidden_size, self.grid * self.grid * 3)
        self._merged: torch.Tensor | None = None
        self._hook = None
        self.attach(vlm)

    def attach(self, vlm) -> None:
        """Keep the merged vision tokens of ``vlm``'s forward passes (and no longer those of another model)."""
        self.detach()
        self._hook = vlm.model.visual.merger.register_forward_hook(self._keep)

    def detach(self) -> None:
        """Stop keeping them (e.g. before ``copy.deepcopy`` of the model, which would copy the hook)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _keep(self, _module, _inputs, output) -> None:
        self._merged = output

    def loss(self, frames: Sequence[Sequence[np.ndarray]]) -> torch.Tensor:
        """MSE between the head's output on the last forward's merged tokens and ``colour_saliency(frames)``."""
        if self._merged is None:
            raise RuntimeError("VisionAux.loss: no vision forward pass has run yet")
        target = colour_saliency(frames, self.region, self.grid).to(self._merged.device)
        if target.shape[0] != self._merged.shape[0]:
            raise ValueError(f"VisionAux.loss: {target.shape[0]} regions in the frames but {self._merged.shape[0]} "
                             "merged tokens in the last forward pass (frames resized by the processor?)")
        merged, self._merged = self._merged, None
        return F.mse_loss(self.head(merged.float()), target)
