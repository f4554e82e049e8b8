"""CLAP-RF action head (Sec. III-E1): a DiT that turns VLM features into a continuous action chunk.

* Conditioning: hidden states of an EARLY and a MIDDLE decoder layer of the VLM over the prompt
  (images + instruction), each RMS-normalised, concatenated per position and projected to the
  head width (``feature_layers``, Table VI: early + middle fusion works best). The head
  cross-attends to them; the flow time (and the robot state, when given) modulate every block
  with adaLN-zero, as in DiT.
* Rectified flow: a^rho = rho * a + (1 - rho) * eps, target v = a - eps, loss ||v - f(a^rho)||^2;
  rho = s * (1 - u), u ~ Beta(1.5, 1.0), s = 0.999 (pi0's schedule, which favours noisy times).
* Sampling: Euler from rho = 0 (noise) to 1 in ``num_steps`` steps (default 10). The context's
  cross-attention keys/values and the adaLN modulations of all steps are computed once per chunk.
* Real-time chunking (Black, Galliker, Levine 2025, arXiv 2506.07339, Alg. 1): given the previous
  chunk's remaining actions Y and the inference delay d, every Euler step adds guidance
  ``min(beta, (1 - rho) / (rho r^2)) * J^T (W * (Y - A1_hat))`` where ``A1_hat = x + (1 - rho) v``
  is the predicted clean chunk, J its Jacobian (a vector-Jacobian product through the head),
  ``r^2 = (1 - rho)^2 / (rho^2 + (1 - rho)^2)`` and W = 1 on the first d steps, decaying
  (exponentially, or linearly) to 0 at the end of the overlap, 0 after it.

Written here because no maintained library provides a DiT flow head conditioned on Qwen3-VL layer
features (the blocks use torch's own ``nn.MultiheadAttention``); LeRobot's RTC code is bound to
its own policy classes and cannot be imported without torchvision.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clap_train.data.layout import DEFAULT_LAYOUT

TIME_S = 0.999


@dataclasses.dataclass
class FlowHeadConfig:
    """Shape of the DiT flow head and of its flow."""

    chunk_len: int = 32
    action_dim: int = DEFAULT_LAYOUT.dim
    state_dim: int = DEFAULT_LAYOUT.dim
    vlm_hidden: int = 128  # hidden size of the VLM whose features are fused
    feature_layers: list[int] = dataclasses.field(default_factory=lambda: [0, 1])  # early, middle decoder layers
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    ffn_mult: int = 4
    num_steps: int = 10  # Euler steps at inference
    use_state: bool = True  # condition on the robot state (False: images and instruction only)
    # the context is the prompt and the subtask (teacher-forced in training, decoded greedily at inference),
    # so what the subtask names (e.g. which arm) is in the head's context as text; False: the prompt only
    read_subtask: bool = False
    temperature: float = 1.0  # std of the starting noise at inference (0: one deterministic chunk)
    beta_a: float = 1.5
    beta_b: float = 1.0

    def __post_init__(self) -> None:
        for name in ("chunk_len", "action_dim", "state_dim", "vlm_hidden", "d_model", "layers", "heads",
                     "ffn_mult", "num_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FlowHeadConfig.{name} must be positive, got {getattr(self, name)}")
        if not self.feature_layers:
            raise ValueError("FlowHeadConfig.feature_layers must name at least one VLM layer")
        if any(i < 0 for i in self.feature_layers):
            raise ValueError(f"FlowHeadConfig.feature_layers must be >= 0, got {self.feature_layers}")
        if self.d_model % self.heads:
            raise ValueError(f"FlowHeadConfig.d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.beta_a <= 0 or self.beta_b <= 0:
            raise ValueError("FlowHeadConfig.beta_a and beta_b must be positive")
        if self.temperature < 0:
            raise ValueError(f"FlowHeadConfig.temperature must be >= 0, got {self.temperature}")

    @property
    def depth_needed(self) -> int:
        """How many VLM decoder layers must run to produce the features (RF runs no more)."""
        return max(self.feature_layers) + 1


def default_feature_layers(num_layers: int) -> list[int]:
    """An early and a middle decoder layer of a VLM with ``num_layers`` layers."""
    early = min(num_layers - 1, max(0, num_layers // 6))
    middle = max(early, num_layers // 2 - 1)
    return sorted({early, middle})


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow times in [0, 1] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float()[:, None] * 1000.0) * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class DiTBlock(nn.Module):
    """Self-attention over the chunk, cross-attention to VLM features, MLP; adaLN-zero modulation.

    The cross-attention keys/values depend only on the context, so ``context_kv`` computes them
    once per prediction and every Euler step reuses them (like a KV cache).
    """

    def __init__(self, d: int, heads: int, ffn_mult: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.norm_x = nn.LayerNorm(d, eps=1e-6)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(approximate="tanh"), nn.Linear(ffn_mult * d, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def context_kv(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(ctx).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, mod: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                ctx_mask: torch.Tensor | None):
        """``mod`` = ``self.ada(c)[:, None]`` [B, 1, 6d]: precomputed once per flow time."""
        b, n, d = x.shape
        s1, b1, g1, s2, b2, g2 = mod.chunk(6, dim=-1)
        h = self.norm1(x) * (1 + s1) + b1
        q, k, v = (self._split(t) for t in self.qkv(h).chunk(3, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + g1 * self.attn_out(a)
        q = self._split(self.cross_q(self.norm_x(x)))
        a = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=ctx_mask).transpose(1, 2).reshape(b, n, d)
        x = x + self.cross_out(a)
        h = self.norm2(x) * (1 + s2) + b2
        return x + g2 * self.mlp(h)


class FlowHead(nn.Module):
    """f^a(a^rho, rho, h_t, state) -> velocity [B, chunk_len, action_dim]."""

    def __init__(self, config: FlowHeadConfig):
        super().__init__()
        cfg = self.config = config
        d = cfg.d_model
        n = len(cfg.feature_layers)
        self.feat_norm = nn.ModuleList(nn.RMSNorm(cfg.vlm_hidden, eps=1e-6) for _ in range(n))
        self.feat_proj = nn.Linear(n * cfg.vlm_hidden, d)
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.pos = nn.Parameter(torch.randn(1, cfg.chunk_len, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.state_in = nn.Linear(cfg.state_dim, d)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, cfg.ffn_mult) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.action_out = nn.Linear(d, cfg.action_dim)
        nn.init.zeros_(self.ada_out[1].weight)
        nn.init.zeros_(self.ada_out[1].bias)

    def fuse(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Per-layer hidden states [B, T, H] (in ``feature_layers`` order) -> context [B, T, d_model]."""
        if len(features) != len(self.feat_norm):
            raise ValueError(f"FlowHead expects {len(self.feat_norm)} feature layers, got {len(features)}")
        w = self.feat_proj.weight
        return self.feat_proj(torch.cat([n(f.to(w.dtype)) for n, f in zip(self.feat_norm, features)], dim=-1))

    def context_kv(self, ctx: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's cross-attention keys/values of the fused context (computed once per chunk)."""
        return [block.context_kv(ctx) for block in self.blocks]

    def modulations(self, t: torch.Tensor, state: torch.Tensor | None = None,
                    state_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The adaLN parameters of every block (and the output layer) for flow times ``t`` [B] and a state.

        ``state`` [B, state_dim] (normalised) is optional; ``state_mask`` [B] (False = treat the state
        as absent, for state dropout in training) makes a sample look like one predicted without it.
        """
        w = self.action_in.weight
        c = self.time_mlp(timestep_embedding(t, self.config.d_model).to(w.dtype))
        if state is not None and self.config.use_state:
            s = self.state_in(state.to(w.dtype))
            if state_mask is not None:
                s = s * state_mask.to(s.dtype)[:, None]
            c = c + s
        return [block.ada(c)[:, None] for block in self.blocks] + [self.ada_out(c)[:, None]]

    def forward(self, x: torch.Tensor, t: torch.Tensor | None, ctx, ctx_pad: torch.Tensor | None = None,
                state: torch.Tensor | None = None, state_mask: torch.Tensor | None = None,
                mods: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Velocity at noisy chunk ``x`` [B,H,A], times ``t`` [B]; ``ctx``: fused context or its ``context_kv``.

        ``mods`` (from ``modulations``) replaces ``t``/``state``/``state_mask`` when precomputed.
        """
        if mods is None:
            mods = self.modulations(t, state, state_mask)
        h = self.action_in(x.to(self.action_in.weight.dtype)) + self.pos
        kvs = ctx if isinstance(ctx, list) else self.context_kv(ctx)
        mask = None if ctx_pad is None else ~ctx_pad[:, None, None, :]  # True = attend
        for block, kv, mod in zip(self.blocks, kvs, mods):
            h = block(h, mod, kv, mask)
        shift, scale = mods[-1].chunk(2, dim=-1)
        return self.action_out(self.norm_out(h) * (1 + scale) + shift)

    # -- training ------------------------------------------------------------------------------
    def sample_time(self, batch: int, device: torch.device | str) -> torch.Tensor:
        """Flow times rho = s (1 - u), u ~ Beta(1.5, 1.0): pi0's schedule (global torch RNG)."""
        u = torch.distributions.Beta(torch.tensor(self.config.beta_a), torch.tensor(self.config.beta_b))
        return (TIME_S * (1.0 - u.sample((batch,)))).to(device)

    def rf_loss(self, actions: torch.Tensor, ctx: torch.Tensor, ctx_pad: torch.Tensor | None = None,
                state: torch.Tensor | None = None, pad: torch.Tensor | None = None,
                state_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Rectified-flow loss on normalised chunks [B,H,A]; ``pad`` [B,H] True = step past the episode end."""
        b = actions.shape[0]
        rho = self.sample_time(b, actions.device)
        eps = torch.randn_like(actions)
        r = rho.to(actions.dtype)[:, None, None]
        x = r * actions + (1 - r) * eps
        err = (self(x, rho, ctx, ctx_pad, state, state_mask).float() - (actions - eps).float()).pow(2)
        if pad is None:
            return err.mean()
        w = (~pad).to(err.dtype)[..., None].expand_as(err)
        return (err * w).sum() / w.sum().clamp_min(1.0)

    # -- inference -----------------------------------------------------------------------------
    def sample(self, ctx: torch.Tensor, ctx_pad: torch.Tensor | None = None, state: torch.Tensor | None = None,
               generator: torch.Generator | None = None, num_steps: int | None = None,
               guide: RTCGuidance | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Integrate the flow from noise; returns the chunk [B, H, A] (normalised units)."""
        kvs = self.context_kv(ctx)
        steps, b = num_steps or self.config.num_steps, ctx.shape[0]
        # the adaLN parameters of all steps in one batched call (they depend on time and state only)
        times = (torch.arange(steps, device=ctx.device, dtype=torch.float32) / steps).repeat_interleave(b)
        per_step = self.modulations(times, None if state is None else state.repeat(steps, 1))
        per_step = [m.view(steps, b, *m.shape[1:]) for m in per_step]
        if noise is None:
            noise = self.config.temperature * torch.randn((b, self.config.chunk_len, self.config.action_dim),
                                                          generator=generator)
        return euler_sample(lambda x, t, k: self(x, None, kvs, ctx_pad, mods=[m[k] for m in per_step]), b,
                            (self.config.chunk_len, self.config.action_dim), steps,
                            generator=generator, guide=guide, noise=noise, device=ctx.device,
                            dtype=self.action_in.weight.dtype)


@dataclasses.dataclass
class RTCGuidance:
    """Real-time chunking: steer a new chunk toward the previous one over their overlap.

    ``prev`` [B, P, A] (normalised) are the previous chunk's actions for the new chunk's steps
    0..P-1; the first ``delay`` of them are executed while inference runs (weight 1), the rest get
    weights decaying to 0 at P (``schedule``), steps >= P get 0. ``max_weight`` clips the guidance.
    """

    prev: torch.Tensor
    delay: int
    max_weight: float = 10.0
    schedule: Literal["exp", "linear"] = "exp"

    def __post_init__(self) -> None:
        if self.prev.dim() != 3:
            raise ValueError(f"RTCGuidance.prev must be [B, P, A], got {tuple(self.prev.shape)}")
        if self.delay < 0:
            raise ValueError(f"RTCGuidance.delay must be >= 0, got {self.delay}")
        if self.max_weight < 0:
            raise ValueError("RTCGuidance.max_weight must be >= 0")

    def weights(self, horizon: int) -> torch.Tensor:
        """W [horizon]: 1 on the first ``delay`` steps, decaying over the rest of the overlap, then 0."""
        p = min(self.prev.shape[1], horizon)
        d = min(self.delay, p)
        w = torch.zeros(horizon)
        w[:d] = 1.0
        if p > d:
            i = torch.arange(d, p, dtype=torch.float32)
            c = (p - i) / (p - d + 1)  # in (0, 1): 1 just after the frozen part, -> 0 at the overlap's end
            w[d:p] = c * (torch.expm1(c) / math.expm1(1.0)) if self.schedule == "exp" else c
        return w

    def target(self, horizon: int) -> torch.Tensor:
        """The previous chunk padded to ``horizon`` steps (values past P carry weight 0)."""
        b, p, a = self.prev.shape
        if p >= horizon:
            return self.prev[:, :horizon]
        return torch.cat([self.prev, self.prev[:, -1:].expand(b, horizon - p, a)], dim=1)


def euler_sample(velocity, batch: int, shape: tuple[int, int], num_steps: int, *,
                 generator: torch.Generator | None = None, guide: RTCGuidance | None = None,
                 noise: torch.Tensor | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Euler integration of ``velocity(x, t, k)`` (t: times [B], k: step index) from t = 0 (noise) to 1.

    With ``guide``, each step adds real-time-chunking guidance (see ``RTCGuidance``).
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    if noise is None:
        noise = torch.randn((batch, *shape), generator=generator)
    x = noise.to(device=device, dtype=torch.float32)
    dt = 1.0 / num_steps
    if guide is not None:
        horizon = shape[0]
        w = guide.weights(horizon).to(device)[None, :, None]
        y = guide.target(horizon).to(device=device, dtype=torch.float32)
    for k in range(num_steps):
        tau = k * dt
        t = torch.full((batch,), tau, device=device)
        if guide is None:
            with torch.no_grad():
                v = velocity(x.to(dtype), t, k).float()
        else:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                v = velocity(xg.to(dtype), t, k).float()
                a1 = xg + (1.0 - tau) * v
                err = (y - a1) * w
                g = torch.autograd.grad(a1, xg, grad_outputs=err)[0]
            r2 = (1.0 - tau) ** 2 / (tau ** 2 + (1.0 - tau) ** 2)
            gw = guide.max_weight if tau == 0 else min(guide.max_weight, (1.0 - tau) / (tau * r2))
            v = v.detach() + gw * g
        x = x + dt * v
    return x.to(dtype)
