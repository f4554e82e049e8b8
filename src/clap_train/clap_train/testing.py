"""Builders of tiny random-weight models and policies, for tests, demos and benchmarks.

``make_tiny_policy`` writes a policy directory that ``ClapPolicy.load`` reads (~1 M parameters);
``build_policy_parts`` gives its parts in memory; ``tiny_stats`` plausible robot ranges for the
de-normalisation of a random policy. Nothing here is used to train or deploy a real policy.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from clap_train.data.samples.action_space import ActionSpace
from clap_train.data.samples.normalize import Normalizer
from clap_train.models.act_vae import ActVAE, ActVAEConfig
from clap_train.models.flow_head import FlowHead, FlowHeadConfig
from clap_train.models.ntp import add_action_tokens
from clap_train.models.vlm import VLMConfig, build_vlm
from clap_train.policy import PolicyMeta, save_policy


def tiny_stats(action_dim: int = 14) -> dict[str, dict[str, list[float]]]:
    """Plausible robot ranges (metres, radians, gripper 0..1) for a random policy's de-normalisation."""
    arm_lo = [0.2, -0.5, 0.0, -np.pi, -np.pi, -np.pi, 0.0]
    arm_hi = [0.8, 0.5, 0.6, np.pi, np.pi, np.pi, 1.0]
    lo, hi = (arm_lo * 2)[:action_dim], (arm_hi * 2)[:action_dim]
    return {k: {"q01": list(lo), "q99": list(hi)} for k in ("action", "observation.state")}


def build_policy_parts(vlm_cfg: VLMConfig, act_cfg: ActVAEConfig, flow_cfg: FlowHeadConfig | None,
                       seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """(vlm, processor, vocab, act_vae, flow_head) with random weights; action tokens already added.

    The VLM and flow head are in ``dtype`` on ``device``; the Act-VAE stays float32.
    """
    vlm, processor = build_vlm(vlm_cfg, dtype=dtype, device=device)
    vocab = add_action_tokens(vlm, processor.tokenizer, act_cfg.codebook_size)
    torch.manual_seed(seed + 1)
    act_vae = ActVAE(act_cfg).to(device).eval()
    head = None
    if flow_cfg is not None:
        head = FlowHead(flow_cfg).to(device, dtype).eval()
    return vlm.eval(), processor, vocab, act_vae, head


def make_tiny_policy(path: str | pathlib.Path, seed: int = 0, image_size: int = 224, rf: bool = True,
                     vlm: VLMConfig | None = None) -> pathlib.Path:
    """Write a random-weight tiny policy directory that ``ClapPolicy.load`` reads (~1 M parameters)."""
    vlm_cfg = vlm or VLMConfig(image_size=image_size, seed=seed)
    act_cfg = ActVAEConfig(d_model=32, layers=1, decoder_layers=1, heads=2, ffn_mult=2, code_dim=16)
    flow_cfg = None
    if rf:
        layers = [0, max(0, vlm_cfg.layers // 2 - 1)]
        flow_cfg = FlowHeadConfig(vlm_hidden=vlm_cfg.hidden_size, feature_layers=sorted(set(layers)), d_model=64,
                                  layers=2, heads=4, ffn_mult=2)
    model, processor, _, act_vae, head = build_policy_parts(vlm_cfg, act_cfg, flow_cfg, seed)
    if head is not None:  # adaLN-zero starts at zero output; give the random head a visible velocity field
        torch.manual_seed(seed + 2)
        with torch.no_grad():
            for p in head.parameters():
                if p.dim() > 1 and float(p.abs().sum()) == 0.0:
                    p.normal_(0.0, 0.02)
    meta = PolicyMeta(image_size=vlm_cfg.image_size, num_queries=act_cfg.num_queries,
                      codebook_size=act_cfg.codebook_size, flow=flow_cfg, max_subtask_tokens=16)
    space = ActionSpace("absolute", Normalizer.from_stats(tiny_stats()), meta.euler_indices)
    return save_policy(path, meta, model, processor, act_vae, space, head)
