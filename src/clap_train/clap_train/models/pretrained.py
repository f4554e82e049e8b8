"""Loading what an earlier stage exported: the frozen Act-VAE and the Qwen3-VL backbone.

``load_act_vae`` gives the frozen tokenizer the NTP and RF stages read targets from;
``load_backbone`` gives (vlm, processor, vocab) from a policy directory, a local Qwen3-VL, or
random weights, with the action tokens added. ``Backbone`` wraps the VLM as a module so that the
shared loop checkpoints exactly its weights.
"""

from __future__ import annotations

import pathlib

import torch

from clap_train.config import ConfigError
from clap_train.models.act_vae import ActVAE
from clap_train.models.ntp import add_action_tokens
from clap_train.models.vlm import VLMConfig, VLMProcessor, build_vlm, load_qwen3vl, selected_logits


class Backbone(torch.nn.Module):
    """The trainable Qwen3-VL (a module so the shared loop checkpoints exactly its weights)."""

    def __init__(self, vlm, aux: torch.nn.Module | None = None):
        super().__init__()
        self.vlm = vlm
        self.aux = aux  # a training-only head (``VisionAux``); not exported with the policy

    def forward(self, select: torch.Tensor | None = None, **inputs):
        """The model's output, or with ``select`` [B, T] only the logits [N, V] at those positions."""
        if select is None:
            return self.vlm(**inputs)
        return selected_logits(self.vlm, inputs, select)


def load_backbone(cfg_vlm: VLMConfig, init: str | None, codebook_size: int):
    """(vlm, processor, vocab): from a policy directory, a local Qwen3-VL, or random weights."""
    if init is not None:
        root = pathlib.Path(init) / "vlm"
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"init policy {init} has no vlm/config.json")
        processor = VLMProcessor.from_pretrained(root)
        vlm = load_qwen3vl(root, torch.float32)
        vocab = add_action_tokens(vlm, processor.tokenizer, codebook_size)
        return vlm, processor, vocab
    vlm, processor = build_vlm(cfg_vlm)
    vocab = add_action_tokens(vlm, processor.tokenizer, codebook_size)
    return vlm, processor, vocab


def load_act_vae(path: str | pathlib.Path | None) -> ActVAE:
    """A trained Act-VAE (``clap train act-vae``'s RUN_DIR/act_vae), frozen and in eval mode."""
    if path is None:
        raise ConfigError("an Act-VAE directory is needed (set act_vae: in the config, or --set act_vae=DIR)")
    model = ActVAE.from_pretrained(path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
