"""``ClapPolicy``: the one ROS-free inference API of CLAP (NTP token decoding or the RF flow head).

A policy directory (written atomically by ``save_policy``)::

    policy.json            PolicyMeta: chunk/action layout, cameras, rate, image size, token and flow configs
    vlm/                   Qwen3-VL (config.json + model.safetensors) + tokenizer + image processor
    act_vae/               the Act-VAE that decodes action tokens (config.json + model.safetensors)
    flow_head.safetensors  the CLAP-RF DiT head (absent for an NTP-only policy)
    action_space.json      how actions are represented and normalised (data/samples/action_space.py;
                           a directory with only the older stats.json is absolute)

``predict`` takes HxWx3 uint8 frames per camera, resizes them to the training size, runs either
constrained token decoding (``mode="ntp"``) + the Act-VAE decoder, or one prompt pass through the
VLM's first layers + ``num_steps`` Euler steps of the flow head (``mode="rf"``), and returns the
chunk in robot units with Euler angles wrapped to [-pi, pi) (a ``Prediction``).

``Prediction`` and the ``Policy`` protocol that ``ClapPolicy`` implements live in the torch-free
``clap_train.interface`` (what the policy node imports); ``Prediction`` is re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import threading
import time
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clap_train.config import from_dict, to_dict
from clap_train.cpus import limit_torch_threads
from clap_train.data.images import resize_rgb
from clap_train.data.samples.action_space import ActionSpace
from clap_train.data.layout import DEFAULT_LAYOUT, ActionLayout
from clap_train.data.rotations import unwrap_vector_euler, wrap_vector_euler
from clap_train.interface import Prediction
from clap_train.io import atomic_dir
from clap_train.models.act_vae import ActVAE
from clap_train.models.flow_head import FlowHead, FlowHeadConfig, RTCGuidance
from clap_train.models.ntp import ActionVocab, CAMERAS, encode_batch, generate_plan
from clap_train.models.vlm import VLMProcessor, load_qwen3vl, prompt_features

FORMAT = "clap-policy/1"
# Largest |normalised action| a prediction may have (the data's q01/q99 map to -1/1).
ACTION_LIMIT = 1.5


@dataclasses.dataclass
class PolicyMeta:
    """What ``policy.json`` holds."""

    format: str = FORMAT
    chunk_len: int = 32
    action_dim: int = DEFAULT_LAYOUT.dim
    action_names: list[str] = dataclasses.field(default_factory=lambda: DEFAULT_LAYOUT.names)
    camera_names: list[str] = dataclasses.field(default_factory=lambda: list(CAMERAS))
    rate_hz: float = 30.0
    image_size: int = 224
    num_queries: int = 16
    codebook_size: int = 256
    max_subtask_tokens: int = 32
    min_subtask_tokens: int = 0  # > 0 forces a subtask of at least this many tokens (benchmarks)
    flow: FlowHeadConfig | None = None

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ValueError(f"not a CLAP policy of format {FORMAT} (got {self.format!r})")
        if len(self.action_names) != self.action_dim:
            raise ValueError(f"{len(self.action_names)} action names for action_dim {self.action_dim}")
        ActionLayout.from_names(self.action_names)  # ValueError unless the names are a layout's
        if self.rate_hz <= 0 or self.chunk_len <= 0 or self.num_queries <= 0 or self.max_subtask_tokens < 0:
            raise ValueError("rate_hz, chunk_len and num_queries must be positive")
        if self.flow is not None and (self.flow.chunk_len, self.flow.action_dim) != (self.chunk_len, self.action_dim):
            raise ValueError("the flow head's chunk shape differs from the policy's")

    @property
    def layout(self) -> ActionLayout:
        """The action vector's layout, from ``action_names``."""
        return ActionLayout.from_names(self.action_names)

    @property
    def euler_indices(self) -> list[int]:
        return self.layout.euler_indices


def save_policy(path: str | pathlib.Path, meta: PolicyMeta, vlm, processor: VLMProcessor, act_vae: ActVAE,
                space: ActionSpace, flow_head: FlowHead | None = None) -> pathlib.Path:
    """Write a complete policy directory atomically (a reader never sees half of it)."""
    path = pathlib.Path(path)
    if (flow_head is None) != (meta.flow is None):
        raise ValueError("save_policy: meta.flow and flow_head must be given together")
    with atomic_dir(path) as tmp:
        vlm.save_pretrained(tmp / "vlm")
        processor.save_pretrained(tmp / "vlm")
        act_vae.save_pretrained(tmp / "act_vae")
        if flow_head is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in flow_head.state_dict().items()}
            save_file(state, str(tmp / "flow_head.safetensors"), metadata={"model": "clap.flow_head"})
        space.save(tmp)
        (tmp / "policy.json").write_text(json.dumps(to_dict(meta), indent=1))
    return path


class ClapPolicy:
    """Load a policy directory and predict action chunks (thread-safe: one lock around the model)."""

    def __init__(self, path: pathlib.Path, meta: PolicyMeta, vlm, processor: VLMProcessor, act_vae: ActVAE,
                 space: ActionSpace, flow_head: FlowHead | None, device: torch.device, dtype: torch.dtype):
        self.path, self.meta = path, meta
        self.vlm, self.processor, self.act_vae, self.flow_head = vlm, processor, act_vae, flow_head
        self.space = space
        self.device, self.dtype = device, dtype
        for module in (vlm, act_vae, flow_head):
            if module is not None:
                module.requires_grad_(False).eval()
        self.vocab = ActionVocab.from_tokenizer(processor.tokenizer, meta.codebook_size)
        self._lock = threading.Lock()

    # -- contract 5 attributes -----------------------------------------------------------------
    chunk_len = property(lambda self: self.meta.chunk_len)
    action_dim = property(lambda self: self.meta.action_dim)
    action_names = property(lambda self: list(self.meta.action_names))
    layout = property(lambda self: self.meta.layout)
    camera_names = property(lambda self: list(self.meta.camera_names))
    rate_hz = property(lambda self: self.meta.rate_hz)
    image_size = property(lambda self: self.meta.image_size)

    @property
    def modes(self) -> list[str]:
        return ["ntp", "rf"] if self.flow_head is not None else ["ntp"]

    @classmethod
    def load(cls, path: str | pathlib.Path, device: str = "cpu", warmup: bool = True,
             dtype: str | None = None) -> ClapPolicy:
        """Read a policy directory; ``dtype`` defaults to float32 on CPU and bfloat16 on CUDA."""
        path = pathlib.Path(path)
        meta_file = path / "policy.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not a CLAP policy directory (no policy.json)")
        for needed in ("vlm/config.json", "act_vae/config.json"):
            if not (path / needed).is_file():
                raise FileNotFoundError(f"policy {path} is incomplete: {needed} is missing")
        try:
            meta = from_dict(PolicyMeta, json.loads(meta_file.read_text()), str(meta_file))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_file}: not valid JSON: {exc}") from exc
        dev = torch.device(device)
        if dev.type == "cpu":
            limit_torch_threads(torch)  # a CPU quota smaller than the host (containers, CI)
        tdtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        processor = VLMProcessor.from_pretrained(path / "vlm", meta.image_size)
        vlm = load_qwen3vl(path / "vlm", tdtype).to(dev).eval()
        act_vae = ActVAE.from_pretrained(path / "act_vae").to(dev).eval()
        flow_head = None
        if meta.flow is not None:
            weights = path / "flow_head.safetensors"
            if not weights.is_file():
                raise FileNotFoundError(f"policy {path} names a flow head but {weights.name} is missing")
            flow_head = FlowHead(meta.flow)
            missing, unexpected = flow_head.load_state_dict(load_file(str(weights)), strict=False)
            if missing or unexpected:
                raise RuntimeError(f"{weights} does not match policy.json's flow config: missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]}")
            flow_head.to(dev, tdtype).eval()
        try:
            space = ActionSpace.load(path, meta.euler_indices)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"policy {path} is incomplete: {exc}") from exc
        policy = cls(path, meta, vlm, processor, act_vae, space, flow_head, dev, tdtype)
        if warmup:
            policy.warmup()
        return policy

    def warmup(self) -> None:
        """One prediction per mode on black frames (first-call allocations happen here, not on the robot)."""
        black = {c: np.zeros((self.image_size, self.image_size, 3), np.uint8) for c in self.camera_names}
        norm = self.space.normalizer
        state = norm.unnormalize("observation.state", np.zeros(len(norm.low["observation.state"])))
        for mode in self.modes:
            pred = self.predict(black, "warm up", state, mode=mode)
        if "rf" in self.modes:  # the guided (real-time chunking) sampler takes the autograd path
            self.predict(black, "warm up", state, mode="rf", prev_chunk=pred.actions, inference_delay=1)

    # -- inference -----------------------------------------------------------------------------
    def _frames(self, images: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        unknown = sorted(set(images) - set(self.camera_names))
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; this policy's cameras: {self.camera_names}")
        frames = []
        for cam in self.camera_names:
            if cam not in images or images[cam] is None:
                continue
            img = np.asarray(images[cam])
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"camera {cam}: expected an HxWx3 uint8 image, got {img.dtype} {img.shape}")
            frames.append(resize_rgb(np.ascontiguousarray(img), self.image_size, self.image_size))
        if not frames:
            raise ValueError(f"no camera image given; expected some of {self.camera_names}")
        return frames

    def _normalized_prev(self, prev_chunk: np.ndarray, state: np.ndarray | None) -> torch.Tensor:
        prev = np.asarray(prev_chunk, dtype=np.float64)
        if prev.ndim != 2 or prev.shape[1] != self.action_dim or len(prev) == 0:
            raise ValueError(f"prev_chunk must be [P, {self.action_dim}] with P >= 1, got {prev.shape}")
        if not np.all(np.isfinite(prev)):
            raise ValueError("prev_chunk contains NaN or inf")
        prev = unwrap_vector_euler(prev[: self.chunk_len], self.meta.euler_indices)
        if self.space.representation == "relative" and state is None:
            raise ValueError("this policy predicts actions relative to the robot state: give the state")
        return torch.from_numpy(self.space.encode(prev, state))[None]

    def predict(self, images: Mapping[str, np.ndarray], instruction: str, state: np.ndarray | None = None,
                mode: Literal["rf", "ntp"] = "rf", *, prev_chunk: np.ndarray | None = None,
                inference_delay: int = 0, seed: int = 0) -> Prediction:
        """Predict one chunk. ``prev_chunk`` (robot units, row 0 = this chunk's first step) turns on RTC.

        In RF mode the flow is guided toward ``prev_chunk`` (real-time chunking) and, in both modes,
        the first ``inference_delay`` steps are returned equal to ``prev_chunk``'s (they run while this
        prediction is computed). RF mode decodes no text (``subtask`` is ""), unless its head reads the
        subtask (``flow.read_subtask``): then the subtask is decoded first and returned.
        """
        start = time.perf_counter()
        # The work happens in _predict, so that its tensors are freed (at its return) before the
        # clock stops: freeing them is part of the model's cost, not of the caller's.
        actions, subtask, tokens = self._predict(images, instruction, state, mode, prev_chunk,
                                                 inference_delay, seed)
        return Prediction(actions=actions, subtask=subtask, latency=time.perf_counter() - start, mode=mode,
                          tokens=tokens)

    def _predict(self, images, instruction, state, mode, prev_chunk, inference_delay, seed):
        if mode not in ("rf", "ntp"):
            raise ValueError(f"mode must be 'rf' or 'ntp', got {mode!r}")
        if mode not in self.modes:
            raise ValueError(f"policy {self.path} has no RF flow head (an NTP-only policy); use mode='ntp'")
        if inference_delay < 0:
            raise ValueError(f"inference_delay must be >= 0, got {inference_delay}")
        frames = self._frames(images)
        s = st = None
        if state is not None:
            s = np.asarray(state, dtype=np.float64).reshape(-1)
            if s.shape[0] != self.action_dim or not np.all(np.isfinite(s)):
                raise ValueError(f"state must be {self.action_dim} finite numbers, got shape {s.shape}")
            st = torch.from_numpy(self.space.encode_state(s))[None]
        elif self.space.representation == "relative":
            raise ValueError("this policy predicts actions relative to the robot state: give the state "
                             "(the node's use_state parameter)")
        guide_prev = self._normalized_prev(prev_chunk, s) if prev_chunk is not None else None
        tokens = None
        subtask = ""
        with self._lock, torch.inference_mode(mode == "ntp"):
            enc = encode_batch(self.processor, self.vocab, [frames], [instruction]).to(self.device)
            enc.inputs["pixel_values"] = enc.inputs["pixel_values"].to(self.dtype)
            if mode == "ntp":
                subtasks, codes = generate_plan(self.vlm, self.processor, self.vocab, enc, self.meta.num_queries,
                                                self.meta.max_subtask_tokens, self.meta.min_subtask_tokens)
                chunk = self.act_vae.decode_tokens(codes.to(self.device))[0]
                subtask, tokens = subtasks[0], codes[0].cpu().numpy()
            else:
                with torch.no_grad():
                    if self.meta.flow.read_subtask:  # the head reads the subtask too: decode it first
                        subtasks, _ = generate_plan(self.vlm, self.processor, self.vocab, enc, self.meta.num_queries,
                                                    self.meta.max_subtask_tokens, self.meta.min_subtask_tokens)
                        subtask = subtasks[0]
                        enc = encode_batch(self.processor, self.vocab, [frames], [instruction], [subtask],
                                           max_subtask_tokens=self.meta.max_subtask_tokens).to(self.device)
                        enc.inputs["pixel_values"] = enc.inputs["pixel_values"].to(self.dtype)
                    feats = prompt_features(self.vlm, enc.inputs, self.meta.flow.feature_layers)
                    ctx = self.flow_head.fuse(feats)
                pad = ~enc.flow_context(self.meta.flow.read_subtask)
                guide = None
                if guide_prev is not None:
                    guide = RTCGuidance(guide_prev.to(self.device), inference_delay)
                gen = torch.Generator().manual_seed(int(seed))
                s_in = st.to(self.device, self.dtype) if st is not None else None
                chunk = self.flow_head.sample(ctx, pad, s_in, generator=gen, guide=guide)[0]
        # Training actions are normalised to [-1, 1] by their q01/q99 (2 % of them lie a little beyond).
        # Far outside that range the head extrapolates (undertrained or diverging flow): keep the chunk
        # within the trained range plus a margin, so no output is many times the data's span.
        chunk = chunk.clamp(-ACTION_LIMIT, ACTION_LIMIT)
        actions = self.space.decode(chunk.detach().float().cpu().numpy().astype(np.float64), s)
        if prev_chunk is not None and inference_delay > 0:
            d = min(inference_delay, len(prev_chunk), self.chunk_len)
            actions[:d] = unwrap_vector_euler(np.asarray(prev_chunk, np.float64)[: self.chunk_len],
                                              self.meta.euler_indices)[:d]
        actions = wrap_vector_euler(actions, self.meta.euler_indices).astype(np.float32)
        return actions, subtask, tokens
