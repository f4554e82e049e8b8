"""The Qwen3-VL backbone of CLAP-NTP / CLAP-RF: model, tokenizer and image processor.

Two ways to get one, both the real ``Qwen3VLForConditionalGeneration`` from transformers:

* ``VLMConfig(pretrained=DIR)``: a local Qwen3-VL directory (e.g. Qwen3-VL-4B-Instruct) with its
  weights, tokenizer and preprocessor config. Nothing is downloaded (``local_files_only``).
* otherwise a model built from an explicit architecture with random weights: the tiny default
  (4 text layers, hidden 128, vision depth 2, ~1 M parameters) or any Qwen3-VL ``config.json``
  given as ``arch_config`` (``config/model/qwen3vl-4b-instruct.config.json`` is the 4B shape).
  Its tokenizer is Qwen's byte-level BPE (``Qwen2Tokenizer``) built in memory from the 256 byte
  symbols plus Qwen's chat / vision special tokens, so it works offline and is saved with the
  checkpoint.

Why ``VLMProcessor`` is written here: ``Qwen3VLProcessor`` cannot be built without a video
processor, and Qwen's video processor needs torchvision, which cannot be installed beside the CPU
torch of this project. ``VLMProcessor`` does the processor's two jobs with the library's pieces:
pixels through transformers' ``Qwen2VLImageProcessorPil`` (the same patching as Qwen3-VL's), and
each ``<|image_pad|>`` placeholder expanded to the number of merged patches of its image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
IMAGE_PAD = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# The shipped copy of the public Qwen3-VL-4B-Instruct architecture (no weights).
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[4]


def qwen3vl_4b_config_path() -> pathlib.Path:
    """The repository's copy of the Qwen3-VL-4B-Instruct ``config.json`` (architecture only)."""
    for root in (_REPO_ROOT, pathlib.Path.cwd()):
        candidate = root / "config" / "model" / "qwen3vl-4b-instruct.config.json"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("config/model/qwen3vl-4b-instruct.config.json not found (run from the repository root)")


@dataclasses.dataclass
class VLMConfig:
    """Which Qwen3-VL to use. ``pretrained`` wins over ``arch_config`` wins over the tiny shape."""

    pretrained: str | None = None  # local directory with a Qwen3-VL checkpoint
    arch_config: str | None = None  # a Qwen3-VL config.json to build with random weights
    # tiny random shape (used when neither of the above is given)
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 256
    vision_depth: int = 2
    vision_hidden: int = 64
    vision_heads: int = 4
    # images
    image_size: int = 224  # square side the policy resizes camera frames to (224 -> 49 visual tokens)
    patch_size: int = 16
    merge_size: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pretrained is not None and not pathlib.Path(self.pretrained).is_dir():
            raise ValueError(f"VLMConfig.pretrained: no such directory {self.pretrained}")
        if self.arch_config is not None and not pathlib.Path(self.arch_config).is_file():
            raise ValueError(f"VLMConfig.arch_config: no such file {self.arch_config}")
        if self.hidden_size % self.heads:
            raise ValueError(f"VLMConfig.hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ValueError(f"VLMConfig.heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if (self.hidden_size // self.heads) % 2:
            raise ValueError("VLMConfig: head_dim (hidden_size / heads) must be even for rotary embeddings")
        if self.vision_hidden % self.vision_heads:
            raise ValueError("VLMConfig.vision_hidden must be divisible by vision_heads")
        factor = self.patch_size * self.merge_size
        if self.image_size <= 0 or self.image_size % factor:
            raise ValueError(f"VLMConfig.image_size ({self.image_size}) must be a positive multiple of {factor}")
        for name in ("layers", "vision_depth", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VLMConfig.{name} must be positive")


def build_tokenizer():
    """Qwen's byte-level BPE tokenizer over the 256 byte symbols + Qwen's special tokens (offline)."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    tok.pad_token = "<|endoftext|>"
    return tok


def build_image_processor(cfg: VLMConfig):
    """Qwen2-VL/Qwen3-VL patching for square ``image_size`` frames (224 -> 14x14 patches -> 49 tokens)."""
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    pixels = cfg.image_size * cfg.image_size
    return Qwen2VLImageProcessorPil(
        patch_size=cfg.patch_size, merge_size=cfg.merge_size, temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )


def tiny_qwen3vl_config(cfg: VLMConfig, tokenizer):
    """An explicit tiny Qwen3-VL config whose special-token ids match ``tokenizer``."""
    from transformers import Qwen3VLConfig

    head_dim = cfg.hidden_size // cfg.heads
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]  # sums to head_dim / 2
    text = dict(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        head_dim=head_dim, max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000, "mrope_section": section,
                         "mrope_interleaved": True},
    )
    vision = dict(
        depth=cfg.vision_depth, hidden_size=cfg.vision_hidden, intermediate_size=2 * cfg.vision_hidden,
        num_heads=cfg.vision_heads, patch_size=cfg.patch_size, spatial_merge_size=cfg.merge_size,
        temporal_patch_size=2, out_hidden_size=cfg.hidden_size, num_position_embeddings=2304,
        deepstack_visual_indexes=[cfg.vision_depth - 1], hidden_act="gelu_pytorch_tanh",
    )
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                         **_special_ids(tokenizer))


def _special_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids(IMAGE_PAD), "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids(VISION_START), "vision_end_token_id": ids(VISION_END),
    }


def arch_qwen3vl_config(path: str | pathlib.Path, tokenizer):
    """A Qwen3-VL config from a ``config.json`` (e.g. the 4B shape), special ids set to ``tokenizer``'s."""
    from transformers import Qwen3VLConfig

    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if "text_config" not in data or "vision_config" not in data:
        raise ValueError(f"{path}: not a Qwen3-VL config (needs text_config and vision_config)")
    data.update(_special_ids(tokenizer))
    text = dict(data["text_config"])
    text["vocab_size"] = max(int(text.get("vocab_size", 0)), len(tokenizer))
    data["text_config"] = text
    return Qwen3VLConfig(**data)


class VLMProcessor:
    """Tokenizer + image processor; expands each image placeholder to its visual-token count."""

    def __init__(self, tokenizer, image_processor, image_size: int = 224):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_size = int(image_size)
        self.merge_size = int(image_processor.merge_size)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self._text_ids: dict[str, tuple[int, ...]] = {}

    def text_ids(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` (no special tokens added), remembered: training re-encodes a few prompts."""
        ids = self._text_ids.get(text)
        if ids is None:
            ids = tuple(self.tokenizer(text, add_special_tokens=False).input_ids)
            if len(self._text_ids) < 100_000:
                self._text_ids[text] = ids
        return ids

    def images_to_pixels(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """HxWx3 uint8 frames (already ``image_size`` square) -> pixel_values, image_grid_thw."""
        if not images:
            raise ValueError("VLMProcessor: at least one image is needed")
        fast = self._square_frames_to_pixels(images)
        if fast is not None:
            return fast
        out = self.image_processor(images=list(images), return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def _square_frames_to_pixels(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor] | None:
        """The image processor's output for uint8 frames already at ``image_size``, for all frames at once.

        Such frames need no resize, so the processor only rescales, normalises and cuts each frame into
        (merge-ordered) patches, one frame at a time through PIL-sized steps: here it is one vectorised
        pass, equal to the processor's result (tested). None when a frame is not such a frame.
        """
        proc, s = self.image_processor, self.image_size
        if not all(isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.shape == (s, s, 3) for im in images):
            return None
        p, m, t = int(proc.patch_size), int(proc.merge_size), int(proc.temporal_patch_size)
        if s % (p * m):
            return None
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # [N, C, S, S]
        if proc.do_rescale:
            x = x * float(proc.rescale_factor)
        if proc.do_normalize:
            mean = torch.tensor(proc.image_mean, dtype=torch.float32)[None, :, None, None]
            std = torch.tensor(proc.image_std, dtype=torch.float32)[None, :, None, None]
            x = (x - mean) / std
        n, c, g = x.shape[0], x.shape[1], s // p
        x = x.reshape(n, c, g // m, m, p, g // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # N, gh, gw, mh, mw, C, ph, pw
        x = x[:, :, :, :, :, :, None].expand(*x.shape[:6], t, p, p)
        pixels = x.reshape(n * g * g, c * t * p * p).contiguous()
        grid = torch.tensor([[1, g, g]] * n, dtype=torch.long)
        return {"pixel_values": pixels, "image_grid_thw": grid}

    def tokens_per_image(self, grid_thw: torch.Tensor) -> list[int]:
        return [int(t * h * w) // (self.merge_size ** 2) for t, h, w in grid_thw.tolist()]

    def expand_image_tokens(self, ids: list[int], counts: Sequence[int]) -> list[int]:
        """Replace the i-th single ``<|image_pad|>`` id in ``ids`` by counts[i] copies."""
        out: list[int] = []
        k = 0
        for t in ids:
            if t == self.image_token_id:
                if k >= len(counts):
                    raise ValueError("VLMProcessor: more image placeholders than images")
                out.extend([t] * counts[k])
                k += 1
            else:
                out.append(t)
        if k != len(counts):
            raise ValueError(f"VLMProcessor: {len(counts)} images but {k} placeholders in the prompt")
        return out

    def save_pretrained(self, directory: str | pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        (directory / "clap_processor.json").write_text(json.dumps({"image_size": self.image_size}))

    @classmethod
    def from_pretrained(cls, directory: str | pathlib.Path, image_size: int | None = None) -> VLMProcessor:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

        directory = pathlib.Path(directory)
        for name in ("tokenizer_config.json", "preprocessor_config.json"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"processor directory {directory} lacks {name}")
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(directory), local_files_only=True)
        meta = directory / "clap_processor.json"
        if image_size is None:
            image_size = json.loads(meta.read_text())["image_size"] if meta.is_file() else 224
        pixels = image_size * image_size
        # square frames of image_size must map to themselves (no hidden re-scaling)
        image_processor.size = {"shortest_edge": pixels, "longest_edge": pixels}
        return cls(tokenizer, image_processor, image_size)


class PatchConv3d(torch.nn.Conv3d):
    """The vision tower's patch embedding, computed as the one matmul it is.

    Qwen3-VL embeds each flattened (temporal x patch x patch) pixel patch with a Conv3d whose kernel
    equals its stride and its input: one output per patch, i.e. ``x.flatten(1) @ W.flatten(1).T + b``.
    On CPU, oneDNN's convolution (and above all its backward) takes ~10x the time of that matmul.
    Same parameters and state-dict keys as the Conv3d it replaces; other inputs take the convolution.
    """

    @classmethod
    def from_conv(cls, conv: torch.nn.Conv3d) -> PatchConv3d:
        new = cls.__new__(cls)
        new.__dict__.update(conv.__dict__)  # the same parameters (shared, not copied), hooks and settings
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (tuple(x.shape[2:]) != tuple(self.kernel_size) or tuple(self.stride) != tuple(self.kernel_size)
                or self.groups != 1 or any(self.padding)):
            return super().forward(x)
        out = torch.nn.functional.linear(x.reshape(x.shape[0], -1), self.weight.reshape(self.out_channels, -1),
                                         self.bias)
        return out[:, :, None, None, None]


def fast_patch_embedding(model):
    """Swap the vision tower's patch Conv3d for ``PatchConv3d`` (in place; the weights are kept)."""
    embed = model.model.visual.patch_embed
    if not isinstance(embed.proj, PatchConv3d):
        embed.proj = PatchConv3d.from_conv(embed.proj)
    return model


def load_qwen3vl(directory: str | pathlib.Path, dtype: torch.dtype = torch.float32):
    """A saved Qwen3-VL (``Qwen3VLForConditionalGeneration``) from a local directory, nothing downloaded."""
    from transformers import Qwen3VLForConditionalGeneration

    return fast_patch_embedding(Qwen3VLForConditionalGeneration.from_pretrained(
        str(directory), local_files_only=True, dtype=dtype))


def build_vlm(cfg: VLMConfig, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """(model, processor) for ``cfg``: a local pretrained directory, or random weights of a given shape."""
    from transformers import Qwen3VLForConditionalGeneration

    if cfg.pretrained is not None:
        processor = VLMProcessor.from_pretrained(cfg.pretrained, cfg.image_size)
        return load_qwen3vl(cfg.pretrained, dtype).to(device), processor
    tokenizer = build_tokenizer()
    processor = VLMProcessor(tokenizer, build_image_processor(cfg), cfg.image_size)
    config = (arch_qwen3vl_config(cfg.arch_config, tokenizer) if cfg.arch_config is not None
              else tiny_qwen3vl_config(cfg, tokenizer))
    torch.manual_seed(cfg.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # a 4B model is built directly in bf16 on the target device
    try:
        with torch.device(device):
            model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return fast_patch_embedding(model.to(dtype)), processor


class MRopePositions:
    """Qwen3-VL's M-RoPE position ids of a right-padded batch, row by row from a cache.

    Qwen3-VL computes them in ``get_rope_index``, a Python loop over every row's token runs (7 ms
    for a batch of 16 here, on every forward pass). A row's positions depend only on its sequence of
    token types (text / image) and its images' grids, which repeat from step to step (the same
    prompt layout): they are computed once per such row by ``get_rope_index`` itself and reused.
    Pads (after the real tokens) continue the last text run, as ``get_rope_index`` numbers them
    without a padding mask; their values never reach a real token under causal attention.
    """

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._rows: dict[tuple, torch.Tensor] = {}

    def __call__(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Position ids [3, B, T] for ``inputs`` (with their ``attention_mask``) of ``model`` (a Qwen3-VL)."""
        types, real = inputs["mm_token_type_ids"], inputs["attention_mask"].bool()
        grids = inputs["image_grid_thw"]
        grid_rows = [tuple(g) for g in grids.tolist()]
        b, t = types.shape
        out = torch.empty(3, b, t, dtype=torch.long)
        g = 0
        for i, (row, n_real) in enumerate(zip(types.tolist(), real.sum(1).tolist())):
            row = tuple(row[:n_real])
            n_images = sum(1 for k, v in enumerate(row) if v == 1 and (k == 0 or row[k - 1] != 1))
            key = (row, tuple(grid_rows[g:g + n_images]))
            pos = self._rows.get(key)
            if pos is None:
                pos = model.model.get_rope_index(
                    types[i:i + 1, :n_real].long(), mm_token_type_ids=types[i:i + 1, :n_real],
                    image_grid_thw=grids[g:g + n_images] if n_images else None)[0][:, 0].cpu()
                if len(self._rows) < self.max_entries:
                    self._rows[key] = pos
            g += n_images
            out[:, i, :n_real] = pos
            start = int(pos.max()) + 1 if n_real else 0
            out[:, i, n_real:] = torch.arange(start, start + t - n_real)
        return out.to(types.device)


def selected_logits(model, inputs: dict[str, torch.Tensor], select: torch.Tensor) -> torch.Tensor:
    """The logits [N, V] at the positions ``select`` [B, T] marks: the LM head runs only there."""
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    return model.lm_head(hidden[select])


def text_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a Qwen3-VL language model."""
    return model.model.language_model.layers


def num_text_layers(model) -> int:
    return len(text_layers(model))


def hidden_size(model) -> int:
    return int(model.config.text_config.hidden_size)


@contextlib.contextmanager
def capture_layers(model, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Collect the outputs of the given text decoder layers during a forward pass (forward hooks)."""
    found: dict[int, torch.Tensor] = {}
    stack = text_layers(model)
    for i in layers:
        if not 0 <= i < len(stack):
            raise ValueError(f"feature layer {i} does not exist: the VLM has {len(stack)} text layers")
    handles = []
    for i in sorted(set(layers)):
        def hook(_module, _inputs, output, i=i):
            found[i] = output[0] if isinstance(output, tuple) else output
        handles.append(stack[i].register_forward_hook(hook))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def truncated(model, depth: int) -> Iterator[None]:
    """Run only the first ``depth`` text decoder layers inside the block (not thread-safe: hold a lock)."""
    lm = model.model.language_model
    full = lm.layers
    if depth < len(full):
        lm.layers = torch.nn.ModuleList(list(full)[:depth])
    try:
        yield
    finally:
        lm.layers = full


def prompt_features(model, inputs: dict[str, torch.Tensor], layers: Sequence[int],
                    truncate: bool = True) -> list[torch.Tensor]:
    """Hidden states [B, T, H] of ``layers`` over a prompt; with ``truncate`` no deeper layer runs."""
    depth = max(layers) + 1 if truncate else num_text_layers(model)
    with capture_layers(model, layers) as found, truncated(model, depth):
        model.model(**inputs, use_cache=False)
    return [found[i] for i in layers]
