"""VD-VAE (CLAP Alg. 2): a visual inverse-dynamics model whose latents speak the Act-VAE's language.

Pieces, in the order a transition (o_t, o_{t+H}) meets them:

- ``FrozenBackbone``: a transformers DINOv2 (``Dinov2Model``) or DINOv3 (``DINOv3ViTModel``) in eval
  mode with no gradients; patch features f [B, P, C]. A tiny random ``Dinov2Config`` is the offline
  default; ``backbone_dir`` loads real weights from a local folder (``AutoModel.from_pretrained``).
- ``InverseDynamics`` E_inv: patch features of both frames (+ spatial and temporal embeddings) and
  ``num_queries`` action queries + ``env_queries`` environment queries go through joint
  spatio-temporal self-attention; the action queries give z_v,a [B, Nq, code_dim] (quantised with
  the FROZEN Act-VAE codebook), the environment queries z_v,i [B, Ne, env_dim] (quantised with a
  learnable 2-code environment codebook).
- ``ForwardDecoder`` D_fwd: spatial self-attention over the patches of f_t together with the
  projected z_q,a and z_q,i; reads out f_hat_{t+H}.
- ``SigLIPLoss`` (Eq. 3) between z_v,a and its positive: sg(E_act(a_gt)) for robot samples, the EMA
  teacher's z_v,a on the clean transition for human samples. ``contrast`` says what is compared.
  ``to_codes`` (the default): the continuous z_v,a against the positive's Act-VAE codes, so the
  latent is pulled towards the very code the true token is. ``quantized``: both sides quantised
  (the anchor straight-through). ``continuous``: both sides continuous. On the learnable toy of
  test_token_agreement.py, after 300 steps, agreement / retrieval top-1 were 0.45 / 0.81
  (to_codes), 0.20 / 0.42 (quantized) and 0.37 / 0.70 (continuous), independent baseline about
  0.08; bench/RESULTS.md has the simulation's figures. With a per-arm Act-VAE the loss is taken
  per arm.
  The online branch sees augmented inputs: with ``aug: image``, the same random resized crop and
  colour jitter on o_t and o_{t+H} before the backbone (``augment_images``); with ``aug: feature``,
  Gaussian noise and patch dropout on the features.

Loss = L_rec + l_vq L_VQ + l_con L_con + l_reg |z_v,i|_1 (Alg. 2). The Act-VAE inside is frozen: its
codebook is read through ``ActVAE.quantize_frozen`` (no gradient, no statistics), and ``train()``
keeps it and the backbone in eval mode.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from clap_train.config import from_dict, to_dict
from clap_train.io import atomic_dir
from clap_train.models.act_vae import ActVAE, ActVAEConfig
from clap_train.models.quantizer import VectorQuantizer, nearest_codes
from clap_train.models.siglip import SigLIPLoss

# what SigLIP compares: anchor / positive = quantised (straight-through) / codes, continuous / continuous,
# or continuous z_v,a / the positive's codes
CONTRASTS = ("quantized", "continuous", "to_codes")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class VDVAEConfig:
    backbone: str = "dinov2"  # dinov2 | dinov3 (tiny random config); ignored when backbone_dir is set
    backbone_dir: str | None = None  # local transformers weights directory (DINOv2/DINOv3)
    image_size: int = 224
    patch_size: int = 16
    backbone_hidden: int = 64
    backbone_layers: int = 2
    backbone_heads: int = 4
    d_model: int = 128
    layers: int = 2  # inverse-dynamics encoder
    decoder_layers: int = 2  # forward decoder
    heads: int = 4
    ffn_mult: int = 4
    env_queries: int = 2  # action-irrelevant latents (tokens)
    env_codebook_size: int = 512  # the authors': 2 tokens from 512 codes
    env_dim: int = 8
    ema_decay: float = 0.99
    lambda_vq: float = 1.0
    lambda_con: float = 0.1
    lambda_reg: float = 0.5
    beta: float = 1.0
    init_tau: float = 0.1
    init_bias: float = -10.0  # SigLIP's logit bias at tau = 0.1 (models/siglip.py)
    contrast: str = "to_codes"  # CONTRASTS: what SigLIP compares (see the module doc)
    aug: str = "image"  # image: crop + colour jitter before the backbone | feature: noise + patch dropout
    crop_scale: float = 0.8  # smallest crop side, as a fraction of the image side
    color_jitter: float = 0.2  # brightness, contrast and saturation factors drawn in [1 - j, 1 + j]
    channel_gain: float = 0.0  # per-channel (R, G, B) gains drawn in [1 - g, 1 + g]: tints, e.g. a grey arm
    erase: float = 0.0  # probability of erasing one random rectangle (side 20-50 %) of the pair's frames
    aug_noise: float = 0.1  # std of Gaussian feature noise, relative to the feature std
    aug_drop: float = 0.1  # probability of zeroing a patch feature

    def __post_init__(self) -> None:
        if self.backbone not in ("dinov2", "dinov3"):
            raise ValueError(f"backbone must be dinov2 or dinov3, got {self.backbone!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {self.ema_decay}")
        for name in ("lambda_vq", "lambda_con", "lambda_reg", "beta", "aug_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.aug_drop < 1.0:
            raise ValueError(f"aug_drop must be in [0, 1), got {self.aug_drop}")
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")
        if self.aug not in ("image", "feature"):
            raise ValueError(f"aug must be image or feature, got {self.aug!r}")
        if not 0.0 < self.crop_scale <= 1.0 or not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"crop_scale must be in (0, 1] and color_jitter in [0, 1), got {self.crop_scale}, "
                             f"{self.color_jitter}")
        if not 0.0 <= self.channel_gain < 1.0 or not 0.0 <= self.erase <= 1.0:
            raise ValueError(f"channel_gain must be in [0, 1) and erase in [0, 1], got {self.channel_gain}, "
                             f"{self.erase}")
        if self.env_queries < 1 or self.env_codebook_size < 2:
            raise ValueError("env_queries must be >= 1 and env_codebook_size >= 2")


def _stack(d: int, heads: int, ffn_mult: int, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, ffn_mult * d, 0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)


class FrozenBackbone(nn.Module):
    """A transformers DINOv2/DINOv3 vision transformer that returns patch features, frozen."""

    def __init__(self, cfg: VDVAEConfig, backbone_config: dict[str, Any] | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if backbone_config is not None:  # rebuilt from a saved VD-VAE (weights come with it)
            model_type = backbone_config["model_type"]
            hf_cfg = AutoConfig.for_model(model_type, **{k: v for k, v in backbone_config.items() if k != "model_type"})
            self.model = AutoModel.from_config(hf_cfg)
        elif cfg.backbone_dir:
            path = pathlib.Path(cfg.backbone_dir)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"backbone_dir {path} has no config.json (a transformers model folder)")
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        elif cfg.backbone == "dinov2":
            from transformers import Dinov2Config, Dinov2Model

            self.model = Dinov2Model(Dinov2Config(
                hidden_size=cfg.backbone_hidden, num_hidden_layers=cfg.backbone_layers,
                num_attention_heads=cfg.backbone_heads, intermediate_size=2 * cfg.backbone_hidden,
                image_size=cfg.image_size, patch_size=cfg.patch_size,
            ))
        else:
            from transformers import DINOv3ViTConfig, DINOv3ViTModel

            self.model = DINOv3ViTModel(DINOv3ViTConfig(
                hidden_size=cfg.backbone_hidden, num_hidden_layers=cfg.backbone_layers,
                num_attention_heads=cfg.backbone_heads, intermediate_size=2 * cfg.backbone_hidden,
                image_size=cfg.image_size, patch_size=cfg.patch_size,
            ))
        self.model.requires_grad_(False)
        self.model.eval()
        hf = self.model.config
        self.hidden = int(hf.hidden_size)
        self.patch = int(getattr(hf, "patch_size", cfg.patch_size))
        self.num_patches = (cfg.image_size // self.patch) ** 2
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def config_dict(self) -> dict[str, Any]:
        return self.model.config.to_dict()

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] floats in [0, 1] -> patch features [B, P, C] (CLS/register tokens dropped)."""
        x = (images.float() - self.mean) / self.std
        out = self.model(pixel_values=x.to(next(self.model.parameters()).dtype)).last_hidden_state
        return out[:, -self.num_patches:].float()


class InverseDynamics(nn.Module):
    """E_inv: joint spatio-temporal attention over (f_t, f_{t+H}) and the latent queries."""

    def __init__(self, cfg: VDVAEConfig, feat_dim: int, num_patches: int, num_queries: int, code_dim: int):
        super().__init__()
        d = cfg.d_model
        self.num_queries, self.env_queries = num_queries, cfg.env_queries
        self.in_proj = nn.Linear(feat_dim, d)
        self.spatial = nn.Parameter(torch.randn(1, 1, num_patches, d) * 0.02)
        self.temporal = nn.Parameter(torch.randn(1, 2, 1, d) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, num_queries + cfg.env_queries, d) * 0.02)
        self.blocks = _stack(d, cfg.heads, cfg.ffn_mult, cfg.layers)
        self.to_action = nn.Linear(d, code_dim)
        self.to_env = nn.Linear(d, cfg.env_dim)

    def forward(self, f_t: torch.Tensor, f_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, p, _ = f_t.shape
        x = self.in_proj(torch.stack([f_t, f_h], dim=1)) + self.spatial + self.temporal  # [B, 2, P, d]
        x = torch.cat([x.reshape(b, 2 * p, -1), self.queries.expand(b, -1, -1)], dim=1)
        q = self.blocks(x)[:, 2 * p:]
        return self.to_action(q[:, : self.num_queries]), self.to_env(q[:, self.num_queries:])


class ForwardDecoder(nn.Module):
    """D_fwd: spatial attention over f_t's patches and the quantised latents -> f_hat_{t+H}."""

    def __init__(self, cfg: VDVAEConfig, feat_dim: int, num_patches: int, num_queries: int, code_dim: int):
        super().__init__()
        d = cfg.d_model
        self.in_proj = nn.Linear(feat_dim, d)
        self.spatial = nn.Parameter(torch.randn(1, num_patches, d) * 0.02)
        self.action_proj = nn.Linear(code_dim, d)
        self.env_proj = nn.Linear(cfg.env_dim, d)
        self.latent_pos = nn.Parameter(torch.randn(1, num_queries + cfg.env_queries, d) * 0.02)
        self.blocks = _stack(d, cfg.heads, cfg.ffn_mult, cfg.decoder_layers)
        self.out = nn.Linear(d, feat_dim)

    def forward(self, f_t: torch.Tensor, z_a: torch.Tensor, z_i: torch.Tensor) -> torch.Tensor:
        p = f_t.shape[1]
        lat = torch.cat([self.action_proj(z_a), self.env_proj(z_i)], dim=1) + self.latent_pos
        x = torch.cat([self.in_proj(f_t) + self.spatial, lat], dim=1)
        return self.out(self.blocks(x)[:, :p])


class VDVAE(nn.Module):
    """The vision-dynamics VAE; ``act_vae`` must be the trained Act-VAE (it is frozen here)."""

    def __init__(self, config: VDVAEConfig, act_vae: ActVAE, backbone_config: dict[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.act_vae = act_vae
        self.act_vae.requires_grad_(False)
        self.act_vae.eval()
        self.backbone = FrozenBackbone(config, backbone_config)
        a = act_vae.config
        self.num_queries, self.code_dim = a.num_queries, a.code_dim
        args = (config, self.backbone.hidden, self.backbone.num_patches, a.num_queries, a.code_dim)
        self.inverse = InverseDynamics(*args)
        self.teacher = copy.deepcopy(self.inverse)
        self.teacher.requires_grad_(False)
        self.env_quantizer = VectorQuantizer(config.env_codebook_size, config.env_dim, data_init=False)
        nn.init.normal_(self.env_quantizer.embedding.weight, std=0.1)
        self.decoder = ForwardDecoder(*args)
        self.siglip = SigLIPLoss(config.init_tau, config.init_bias, groups=a.arms)

    def train(self, mode: bool = True) -> VDVAE:
        super().train(mode)
        self.act_vae.eval()
        self.backbone.train(False)
        self.teacher.eval()
        return self

    # -- pieces ---------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def student_features(self, image_t: torch.Tensor,
                         image_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The online branch's features of augmented images (``aug: image``; never cached), else None."""
        if self.config.aug != "image":
            return None
        aug_t, aug_h = self.augment_images(image_t, image_h)
        return self.features(aug_t), self.features(aug_h)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser trains: not the frozen Act-VAE and backbone, nor the EMA teacher."""
        return [p for n, p in self.named_parameters()
                if p.requires_grad and not n.startswith(("act_vae.", "backbone.", "teacher."))]

    def augment(self, f: torch.Tensor) -> torch.Tensor:
        """Feature-space augmentation (``aug: feature``): relative Gaussian noise + patch dropout."""
        cfg = self.config
        out = f
        if cfg.aug_noise > 0:
            out = out + torch.randn_like(f) * cfg.aug_noise * f.detach().std()
        if cfg.aug_drop > 0:
            keep = (torch.rand(f.shape[:2], device=f.device) >= cfg.aug_drop).to(f.dtype)[..., None]
            out = out * keep
        return out

    @torch.no_grad()
    def augment_images(self, image_t: torch.Tensor, image_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``aug: image``: one random resized crop and colour jitter per sample, the same for o_t and o_{t+H}.

        The pair shares its draw so that the motion between the frames is unchanged. Images [B, 3, S, S]
        in [0, 1]; the crop keeps the aspect ratio (side in [crop_scale, 1]) and is resized back to S.
        Optional, for the look of human videos: per-channel gains (``channel_gain``) and, with
        probability ``erase``, one rectangle filled with the frame's mean colour (random erasing).
        """
        cfg = self.config
        b, dev = image_t.shape[0], image_t.device
        side = cfg.crop_scale + (1.0 - cfg.crop_scale) * torch.rand(b, device=dev)
        shift = (1.0 - side)[:, None] * (2 * torch.rand(b, 2, device=dev) - 1)  # centre within the image
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = side, side, shift
        grid = F.affine_grid(theta, list(image_t.shape), align_corners=False)
        j = cfg.color_jitter
        factors = 1.0 + j * (2 * torch.rand(b, 3, 1, 1, 1, device=dev) - 1)  # brightness, contrast, saturation
        gains = 1.0 + cfg.channel_gain * (2 * torch.rand(b, 3, 1, 1, device=dev) - 1)
        size = image_t.shape[-1]
        rect = (0.2 + 0.3 * torch.rand(b, 2, device=dev)) * size  # height, width in pixels
        corner = torch.rand(b, 2, device=dev) * (size - rect)
        ys = torch.arange(size, device=dev, dtype=torch.float32)
        inside_y = (ys >= corner[:, :1]) & (ys < corner[:, :1] + rect[:, :1])  # [B, S]
        inside_x = (ys >= corner[:, 1:]) & (ys < corner[:, 1:] + rect[:, 1:])
        erase = ((torch.rand(b, device=dev) < cfg.erase)[:, None, None]
                 & inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # [B, 1, S, S]

        def apply(img: torch.Tensor) -> torch.Tensor:
            x = F.grid_sample(img.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
            x = x * factors[:, 0]
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = mean + (x - mean) * factors[:, 1]
            gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
            x = ((gray + (x - gray) * factors[:, 2]) * gains).clamp(0.0, 1.0)
            return torch.where(erase, x.mean(dim=(2, 3), keepdim=True), x)

        return apply(image_t), apply(image_h)

    @torch.no_grad()
    def update_teacher(self) -> None:
        """EMA: theta_teacher <- d * theta_teacher + (1 - d) * theta_online."""
        d = self.config.ema_decay
        for t, s in zip(self.teacher.parameters(), self.inverse.parameters()):
            t.mul_(d).add_(s.detach(), alpha=1.0 - d)

    @torch.no_grad()
    def tokenize_features(self, f_t: torch.Tensor, f_h: torch.Tensor) -> torch.Tensor:
        """Pseudo action tokens [B, Nq] (Act-VAE vocabulary) of clean transitions."""
        z_a, _ = self.inverse(f_t, f_h)
        return nearest_codes(z_a, self.act_vae.codebook.weight)

    @torch.no_grad()
    def tokenize(self, image_t: torch.Tensor, image_h: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] at t and t+H -> pseudo action tokens [B, Nq]."""
        return self.tokenize_features(self.features(image_t), self.features(image_h))

    # -- the training objective (Alg. 2) --------------------------------------------------------
    def forward(self, f_t: torch.Tensor, f_h: torch.Tensor, is_robot: torch.Tensor,
                action: torch.Tensor | None = None,
                student: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Loss terms for a batch of clean feature transitions; ``action`` [B, 32, 14] normalised.

        ``student``: the online branch's features of the augmented images (``aug: image``); without
        it the online branch sees ``augment``-ed clean features.
        """
        cfg = self.config
        s_t, s_h = student if student is not None else (self.augment(f_t), self.augment(f_h))
        z_va, z_vi = self.inverse(s_t, s_h)
        z_qa, tokens, vq_a = self.act_vae.quantize_frozen(z_va)
        z_qi, _, vq_i = self.env_quantizer(z_vi)
        f_hat = self.decoder(f_t, z_qa, z_qi)
        rec = F.mse_loss(f_hat, f_h)
        vq = cfg.beta * vq_a["commit_loss"] + vq_i["codebook_loss"] + cfg.beta * vq_i["commit_loss"]
        codebook = self.act_vae.codebook.weight
        with torch.no_grad():  # positives: sg(E_act(a_gt)) for robot, sg(teacher(clean)) for human
            pos, _ = self.teacher(f_t, f_h)
            robot = is_robot.bool()
            if action is not None and bool(robot.any()):
                pos = pos.clone()
                pos[robot] = self.act_vae.encode(action[robot].to(pos.dtype))
            pos_tokens = nearest_codes(pos, codebook)
            if cfg.contrast != "continuous":  # the positive's codes
                pos = F.embedding(pos_tokens, codebook)
        anchor = z_qa if cfg.contrast == "quantized" else z_va
        con = self.siglip(anchor, pos) if z_va.shape[0] > 1 else z_va.sum() * 0.0
        reg = z_vi.abs().mean()
        loss = rec + cfg.lambda_vq * vq + cfg.lambda_con * con + cfg.lambda_reg * reg
        with torch.no_grad():
            agree = torch.tensor(float("nan"))
            if action is not None and bool(robot.any()):
                agree = (tokens[robot] == pos_tokens[robot]).float().mean()
        return {"loss": loss, "rec_loss": rec, "vq_loss": vq, "con_loss": con, "reg_loss": reg, "tokens": tokens,
                "token_agreement": agree, "tau": self.siglip.tau.detach(), "bias": self.siglip.bias.detach()}

    # -- storage --------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | pathlib.Path) -> pathlib.Path:
        directory = pathlib.Path(directory)
        meta = {"vd_vae": to_dict(self.config), "act_vae": to_dict(self.act_vae.config),
                "backbone": self.backbone.config_dict()}
        with atomic_dir(directory) as tmp:
            (tmp / "config.json").write_text(json.dumps(meta, indent=1, default=str))
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "model": "clap.vd_vae"})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | pathlib.Path) -> VDVAE:
        directory = pathlib.Path(directory)
        cfg_path, weights = directory / "config.json", directory / "model.safetensors"
        for p in (cfg_path, weights):
            if not p.is_file():
                raise FileNotFoundError(f"VD-VAE directory {directory} lacks {p.name}")
        meta = json.loads(cfg_path.read_text())
        act = ActVAE(from_dict(ActVAEConfig, meta["act_vae"], f"{cfg_path}:act_vae"))
        model = cls(from_dict(VDVAEConfig, meta["vd_vae"], f"{cfg_path}:vd_vae"), act, meta["backbone"])
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f"{weights} does not match {cfg_path}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model.eval()
