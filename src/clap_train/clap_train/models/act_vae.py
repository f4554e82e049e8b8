"""Act-VAE (CLAP Alg. 1): a discrete, physically grounded vocabulary of action chunks.

Encoder: the normalised [chunk_len, action_dim] chunk is embedded per step, concatenated with
``num_queries`` learnable register tokens and passed through a transformer; the registers'
outputs, projected to ``code_dim``, are the latents z_e [B, Nq, code_dim]. Each latent is replaced
by its nearest codebook entry (K = ``codebook_size``) with a straight-through gradient, giving
z_q and the tokens z_a [B, Nq]. Decoder: ``chunk_len`` learnable query tokens attend jointly with
the projected z_q in a transformer and are read out as the reconstructed chunk.

Loss = ||a - D(z_q)||^2 + ||sg(z_e) - z_q||^2 + beta ||z_e - sg(z_q)||^2. ``position_weight`` w
weights the position dimensions' squared error by w against 1 for the others, rescaled so the
weights average 1 (the reconstruction term keeps its scale against the VQ terms); the reported
``mse`` stays unweighted.

Per arm (``arms`` > 1, the authors' release): the 14-D chunk is split into its arms' 7-D blocks
(the layout's order: left, then right), and each arm's chunk is encoded on its own, by the same
weights, into ``num_queries / arms`` codes of the one shared codebook. Tokens are arm-major
(positions 0..7 the left arm, 8..15 the right). No arm embedding: a token means the same motion
on either arm, which is what lets a human's hand motion, or a single-arm robot, speak the same
vocabulary. A single arm's chunk [B, H, 7] given to a two-arm model encodes into 8 codes.

The transformer blocks are torch's own (nn.TransformerEncoder); only the wiring is ours. Weights
are stored as ``config.json`` + ``model.safetensors`` (``save_pretrained`` / ``from_pretrained``).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from clap_train.config import from_dict, to_dict
from clap_train.data.layout import ARM_WIDTH, DEFAULT_LAYOUT, POSITION
from clap_train.io import atomic_dir
from clap_train.models.quantizer import VectorQuantizer, quantize_with


@dataclasses.dataclass
class ActVAEConfig:
    chunk_len: int = 32
    action_dim: int = DEFAULT_LAYOUT.dim
    num_queries: int = 16  # Nq: 8 codes per arm in the paper
    codebook_size: int = 256  # K
    d_model: int = 256
    layers: int = 4  # encoder layers
    decoder_layers: int = 4
    heads: int = 8
    ffn_mult: int = 4
    dropout: float = 0.0
    code_dim: int = 32  # dimension of the latents / codebook entries (D of contract 4)
    beta: float = 1.0  # commitment weight
    arms: int = 1  # arms encoded separately with shared weights (2: the authors' per-arm Act-VAE)
    position_weight: float = 1.0  # weight of the position dims in the reconstruction loss (others 1)

    def __post_init__(self) -> None:
        for name in ("chunk_len", "action_dim", "num_queries", "d_model", "layers", "decoder_layers", "heads",
                     "ffn_mult", "code_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ActVAEConfig.{name} must be positive, got {getattr(self, name)}")
        if self.codebook_size < 2:
            raise ValueError(f"ActVAEConfig.codebook_size must be >= 2, got {self.codebook_size}")
        if self.d_model % self.heads:
            raise ValueError(f"ActVAEConfig.d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ActVAEConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.beta < 0:
            raise ValueError(f"ActVAEConfig.beta must be >= 0, got {self.beta}")
        if self.position_weight <= 0:
            raise ValueError(f"ActVAEConfig.position_weight must be positive, got {self.position_weight}")
        if self.position_weight != 1.0 and self.action_dim % ARM_WIDTH:
            raise ValueError(f"ActVAEConfig.position_weight needs {ARM_WIDTH} values per arm, got action_dim "
                             f"{self.action_dim}")
        if self.arms < 1 or self.action_dim % self.arms or self.num_queries % self.arms:
            raise ValueError(f"ActVAEConfig.arms ({self.arms}) must divide action_dim ({self.action_dim}) and "
                             f"num_queries ({self.num_queries})")

    @property
    def arm_dim(self) -> int:
        """Action dimensions of one arm (7: xyz, Euler xyz, gripper)."""
        return self.action_dim // self.arms

    @property
    def codes_per_arm(self) -> int:
        return self.num_queries // self.arms

    def recon_weights(self) -> torch.Tensor:
        """Per-dimension weights of the reconstruction loss [action_dim], mean 1."""
        w = torch.ones(self.action_dim)
        if self.position_weight != 1.0:
            pos = torch.arange(self.action_dim) % ARM_WIDTH
            w[(pos >= POSITION.start) & (pos < POSITION.stop)] = self.position_weight
        return w / w.mean()


def _stack(cfg: ActVAEConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        cfg.d_model, cfg.heads, cfg.ffn_mult * cfg.d_model, cfg.dropout, activation="gelu", batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False)


class ActVAE(nn.Module):
    def __init__(self, config: ActVAEConfig | None = None):
        super().__init__()
        cfg = self.config = config or ActVAEConfig()
        d = cfg.d_model
        # encoder (one arm's chunk at a time when arms > 1)
        self.action_in = nn.Linear(cfg.arm_dim, d)
        self.enc_pos = nn.Parameter(torch.randn(1, cfg.chunk_len, d) * 0.02)
        self.registers = nn.Parameter(torch.randn(1, cfg.codes_per_arm, d) * 0.02)
        self.encoder = _stack(cfg, cfg.layers)
        self.to_code = nn.Linear(d, cfg.code_dim)
        # codebook
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim)
        # decoder
        self.from_code = nn.Linear(cfg.code_dim, d)
        self.latent_pos = nn.Parameter(torch.randn(1, cfg.codes_per_arm, d) * 0.02)
        self.dec_queries = nn.Parameter(torch.randn(1, cfg.chunk_len, d) * 0.02)
        self.decoder = _stack(cfg, cfg.decoder_layers)
        self.action_out = nn.Linear(d, cfg.arm_dim)
        self.register_buffer("recon_weight", cfg.recon_weights(), persistent=False)

    # -- contract 4 -----------------------------------------------------------------------------
    @property
    def codebook(self) -> nn.Embedding:
        return self.quantizer.embedding

    def _arms_of(self, chunk: torch.Tensor) -> int:
        """How many arms a chunk [B, chunk_len, n * arm_dim] holds (all of them, or one when arms > 1)."""
        cfg = self.config
        n = chunk.shape[-1] // cfg.arm_dim if chunk.dim() == 3 else 0
        if chunk.dim() != 3 or chunk.shape[1] != cfg.chunk_len or n * cfg.arm_dim != chunk.shape[-1] \
                or n not in (1, cfg.arms):
            one = f" or one arm's [B, {cfg.chunk_len}, {cfg.arm_dim}]" if cfg.arms > 1 else ""
            raise ValueError(
                f"ActVAE expects chunks [B, {cfg.chunk_len}, {cfg.action_dim}]{one}, got {tuple(chunk.shape)}"
            )
        return n

    def encode(self, chunk: torch.Tensor) -> torch.Tensor:
        """[B, chunk_len, action_dim] normalised chunk -> continuous latents z_e [B, Nq, code_dim].

        Per arm: [B, H, n * arm_dim] -> [B, n * codes_per_arm, code_dim], arm-major.
        """
        n = self._arms_of(chunk)
        cfg = self.config
        b, h = chunk.shape[:2]
        x = chunk.reshape(b, h, n, cfg.arm_dim).transpose(1, 2).reshape(b * n, h, cfg.arm_dim)
        x = self.action_in(x.to(self.action_in.weight.dtype)) + self.enc_pos
        x = torch.cat([x, self.registers.expand(b * n, -1, -1)], dim=1)
        x = self.encoder(x)
        return self.to_code(x[:, h:]).reshape(b, n * cfg.codes_per_arm, cfg.code_dim)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Nearest-code quantisation: (z_q straight-through, tokens [B, Nq] long, VQ losses)."""
        return self.quantizer(z_e)

    def quantize_frozen(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise foreign latents (the VD-VAE's) with this codebook without touching it.

        No usage statistics are updated and no gradient reaches the codebook (it is detached).
        """
        return quantize_with(z, self.codebook.weight.detach())

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latents [B, Nq, code_dim] -> chunk [B, chunk_len, action_dim] (one arm: 8 codes -> 7-D)."""
        cfg = self.config
        b, nq = z_q.shape[:2]
        n = nq // cfg.codes_per_arm
        if nq % cfg.codes_per_arm or n not in (1, cfg.arms):
            raise ValueError(f"ActVAE decodes {cfg.num_queries} latents (or {cfg.codes_per_arm} of one arm), got {nq}")
        lat = self.from_code(z_q.reshape(b * n, cfg.codes_per_arm, -1)) + self.latent_pos
        x = torch.cat([lat, self.dec_queries.expand(b * n, -1, -1)], dim=1)
        x = self.action_out(self.decoder(x)[:, cfg.codes_per_arm:])  # [B * n, H, arm_dim]
        return x.reshape(b, n, cfg.chunk_len, cfg.arm_dim).transpose(1, 2).reshape(b, cfg.chunk_len, n * cfg.arm_dim)

    @torch.no_grad()
    def tokenize(self, chunk: torch.Tensor) -> torch.Tensor:
        """Chunk -> tokens [B, Nq] (long), without gradients or codebook statistics."""
        from clap_train.models.quantizer import nearest_codes

        return nearest_codes(self.encode(chunk), self.codebook.weight)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, Nq] -> chunk [B, chunk_len, action_dim] (normalised units)."""
        cfg = self.config
        if tokens.dim() != 2 or tokens.shape[1] not in {cfg.num_queries, cfg.codes_per_arm}:
            raise ValueError(f"ActVAE expects tokens [B, {cfg.num_queries}], got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.codebook_size):
            raise ValueError(
                f"token ids must lie in [0, {self.config.codebook_size}), got range "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        return self.decode_latents(self.codebook(tokens.long()))

    def forward(self, chunk: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Full pass. ``mask`` [B, chunk_len] (True = valid step) restricts the reconstruction loss."""
        z_e = self.encode(chunk)
        z_q, tokens, vq = self.quantize(z_e)
        recon = self.decode_latents(z_q)
        err = (recon - chunk.to(recon.dtype)).pow(2)
        dim_w = self.recon_weight[: err.shape[-1]].to(err.dtype)  # one arm's chunk: that arm's pattern
        if mask is not None:
            w = mask.to(err.dtype)[..., None].expand_as(err)
            mse = (err * w).sum() / w.sum().clamp_min(1.0)
            recon_loss = (err * w * dim_w).sum() / w.sum().clamp_min(1.0)
        else:
            mse, recon_loss = err.mean(), (err * dim_w).mean()
        loss = recon_loss + vq["codebook_loss"] + self.config.beta * vq["commit_loss"]
        return {
            "recon": recon,
            "tokens": tokens,
            "z_e": z_e,
            "loss": loss,
            "recon_loss": recon_loss,
            "mse": mse,
            "codebook_loss": vq["codebook_loss"],
            "commit_loss": vq["commit_loss"],
            "perplexity": vq["perplexity"],
        }

    # -- storage --------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | pathlib.Path) -> pathlib.Path:
        """Write config.json + model.safetensors atomically into ``directory``."""
        directory = pathlib.Path(directory)
        with atomic_dir(directory) as tmp:
            (tmp / "config.json").write_text(json.dumps(to_dict(self.config), indent=1))
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "model": "clap.act_vae"})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | pathlib.Path, map_location: str | torch.device = "cpu") -> ActVAE:
        directory = pathlib.Path(directory)
        cfg_path, weights = directory / "config.json", directory / "model.safetensors"
        for p in (cfg_path, weights):
            if not p.is_file():
                raise FileNotFoundError(f"Act-VAE directory {directory} lacks {p.name}")
        try:
            config = from_dict(ActVAEConfig, json.loads(cfg_path.read_text()), str(cfg_path))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{cfg_path}: not valid JSON: {exc}") from exc
        model = cls(config)
        missing, unexpected = model.load_state_dict(load_file(str(weights), device=str(map_location)), strict=False)
        if "quantizer.initialized" in missing:  # written before that flag existed: trained codes
            model.quantizer.initialized.fill_(1)
            missing = [m for m in missing if m != "quantizer.initialized"]
        if missing or unexpected:
            raise RuntimeError(
                f"{weights} does not match {cfg_path}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model.eval()


def recon_psnr(mse: float, dynamic_range: float = 2.0) -> float:
    """PSNR = 20 log10(R / sqrt(MSE)) with R the range of normalised actions (2 for [-1, 1])."""
    import math

    return 20.0 * math.log10(dynamic_range / math.sqrt(max(mse, 1e-20)))


__all__ = ["ActVAE", "ActVAEConfig", "recon_psnr"]
