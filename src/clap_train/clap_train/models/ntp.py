r"""CLAP-NTP (Alg. 3): Qwen3-VL predicts [subtask text, Nq action tokens] from images + instruction.

* ``add_action_tokens`` adds K action tokens ``<|act_0|> .. <|act_{K-1}|>`` (one per Act-VAE
  codebook entry) and two markers ``<|act_start|>`` / ``<|act_end|>`` to the tokenizer and resizes
  the embeddings (``mean_resizing=False``).
* Prompt, in Qwen's chat format: ``<|im_start|>user\n`` + one ``<|vision_start|><|image_pad|>
  <|vision_end|>`` per camera (head, then the wrists that are present) + instruction +
  ``<|im_end|>\n<|im_start|>assistant\n``. Target: ``subtask <|act_start|> a_1..a_Nq <|act_end|>
  <|im_end|>``. The loss is cross-entropy on target tokens only.
* Constrained decoding (``ActionGrammar``, a transformers ``LogitsProcessor`` used by
  ``generate``): subtask text (no special or action tokens) until ``<|act_start|>`` or
  ``max_subtask_tokens``, then exactly Nq action tokens, then ``<|act_end|>``, ``<|im_end|>``.
  Every decode therefore yields exactly Nq valid codebook indices, even from random weights.
  Training cuts each subtask at the same ``max_subtask_tokens`` (``target_ids``), so the decoder is
  never asked to continue a sequence it was not taught: a subtask cut only at decoding left the
  action tokens conditioned on a text the model never saw, and a policy fitted to one
  demonstration decoded the right subtask in 17 % of its own frames (bench/RESULTS.md).

The grammar is ours because no maintained library constrains HF generation to this token
grammar without extra dependencies (outlines / xgrammar need a JSON/regex front end and a
tokenizer build this project cannot download).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList

from clap_train.models.vlm import IM_END, IM_START, IMAGE_PAD, VISION_END, VISION_START, VLMProcessor

ACT_START = "<|act_start|>"
ACT_END = "<|act_end|>"
CAMERAS = ("head", "left_wrist", "right_wrist")


def action_token(i: int) -> str:
    return f"<|act_{i}|>"


@dataclasses.dataclass
class ActionVocab:
    """Where the action tokens live in the tokenizer's id space."""

    codebook_size: int
    start_id: int
    end_id: int
    ids: torch.Tensor  # [K] long: token id of codebook entry k
    im_end_id: int
    pad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer, codebook_size: int) -> ActionVocab:
        ids = tokenizer.convert_tokens_to_ids([action_token(i) for i in range(codebook_size)])
        start, end = tokenizer.convert_tokens_to_ids([ACT_START, ACT_END])
        unk = tokenizer.unk_token_id
        if any(t is None or t == unk for t in [*ids, start, end]):
            raise ValueError(f"the tokenizer has no action tokens for a codebook of {codebook_size}; "
                             "was it saved after add_action_tokens?")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(codebook_size, int(start), int(end), torch.tensor(ids, dtype=torch.long),
                   int(tokenizer.convert_tokens_to_ids(IM_END)), int(pad))

    def to_codes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> codebook indices (raises if any id is not an action token)."""
        lookup = {int(t): k for k, t in enumerate(self.ids.tolist())}
        flat = [lookup.get(int(t), -1) for t in token_ids.reshape(-1).tolist()]
        if -1 in flat:
            raise ValueError("decoded sequence contains a non-action token where an action token belongs")
        return torch.tensor(flat, dtype=torch.long).reshape(token_ids.shape)


def add_action_tokens(model, tokenizer, codebook_size: int) -> ActionVocab:
    """Add K action tokens + markers to ``tokenizer`` and grow ``model``'s embeddings to fit."""
    new = [ACT_START, ACT_END] + [action_token(i) for i in range(codebook_size)]
    existing = set(tokenizer.get_vocab())
    missing = [t for t in new if t not in existing]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    vocab_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return ActionVocab.from_tokenizer(tokenizer, codebook_size)


# -- prompts and targets -------------------------------------------------------------------------
def prompt_ids(processor: VLMProcessor, instruction: str, image_counts: Sequence[int]) -> list[int]:
    """Chat-format prompt ids with each image placeholder expanded to its visual-token count."""
    vision = (VISION_START + IMAGE_PAD + VISION_END) * len(image_counts)
    text = f"{IM_START}user\n{vision}{instruction}{IM_END}\n{IM_START}assistant\n"
    return processor.expand_image_tokens(processor.text_ids(text), image_counts)


def target_ids(processor: VLMProcessor, vocab: ActionVocab, subtask: str, codes: torch.Tensor | None,
               max_subtask_tokens: int | None = None) -> list[int]:
    """[subtask text, <|act_start|>, Nq action tokens, <|act_end|>, <|im_end|>] (no actions when codes is None).

    The subtask is cut at ``max_subtask_tokens``, where ``ActionGrammar`` forces ``<|act_start|>``
    (with a warning, once per subtask: raise the config's ``max_subtask_tokens`` to keep it whole).
    """
    ids = list(processor.text_ids(subtask)) if subtask else []
    if max_subtask_tokens is not None and len(ids) > max_subtask_tokens:
        warnings.warn(f"subtask {subtask!r} is {len(ids)} tokens; max_subtask_tokens = {max_subtask_tokens} cuts it "
                      "in training as in decoding (raise max_subtask_tokens to keep it whole)", stacklevel=2)
        ids = ids[:max_subtask_tokens]
    if codes is not None:
        ids += [vocab.start_id] + vocab.ids[codes.long().cpu()].tolist() + [vocab.end_id]
    return ids + [vocab.im_end_id]


def to_uint8_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[3,S,S] float in [0,1] (dataset) -> HxWx3 uint8 (what the camera path hands the processor)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        return image
    return np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0))


@dataclasses.dataclass
class EncodedBatch:
    """Model inputs for a batch of prompts + targets (right-padded)."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids
    target_mask: torch.Tensor  # [B, T] bool: token t is a target (predicted by logits at t-1)
    action_mask: torch.Tensor  # [B, T] bool: token t is one of the Nq action tokens
    prompt_mask: torch.Tensor  # [B, T] bool: token t belongs to the prompt (what the flow head attends to)
    subtask_mask: torch.Tensor  # [B, T] bool: token t is a subtask token (the target's text, before the actions)

    def causal_inputs(self) -> dict[str, torch.Tensor]:
        """The model inputs for a teacher-forced pass: without the padding mask.

        Rows are right-padded and the text attention is causal, so no real token ever attends to a
        pad: its logits and hidden states are the same with or without the mask (tested), and without
        it SDPA takes its mask-free causal kernel (on CPU ~2x faster at the tiny sizes). The pads'
        own outputs differ and are never used (the losses and the flow head's context mask them).
        """
        return {k: v for k, v in self.inputs.items() if k != "attention_mask"}

    def flow_context(self, read_subtask: bool) -> torch.Tensor:
        """[B, T] bool: the positions the RF flow head attends to: the prompt, and the subtask when ``read_subtask``."""
        return self.prompt_mask | self.subtask_mask if read_subtask else self.prompt_mask

    def predicting(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: the positions whose logits predict a token ``mask`` marks (position t predicts t + 1)."""
        return F.pad(mask[:, 1:], (0, 1), value=False)

    def to(self, device: torch.device | str) -> EncodedBatch:
        return EncodedBatch({k: v.to(device) for k, v in self.inputs.items()}, self.target_mask.to(device),
                            self.action_mask.to(device), self.prompt_mask.to(device), self.subtask_mask.to(device))


def encode_batch(
    processor: VLMProcessor,
    vocab: ActionVocab,
    images: Sequence[Sequence[np.ndarray]],
    instructions: Sequence[str],
    subtasks: Sequence[str] | None = None,
    codes: torch.Tensor | None = None,
    has_codes: Sequence[bool] | None = None,
    max_subtask_tokens: int | None = None,
) -> EncodedBatch:
    """Tokenise a batch. ``images[b]`` are sample b's frames in camera order; ``codes`` [B, Nq].

    ``max_subtask_tokens``: where subtasks are cut (the decoder's limit; ``target_ids``).
    """
    b = len(instructions)
    if len(images) != b:
        raise ValueError(f"encode_batch: {len(images)} image lists for {b} instructions")
    flat = [im for per in images for im in per]
    pix = processor.images_to_pixels(flat)
    counts = processor.tokens_per_image(pix["image_grid_thw"])
    rows, tmask, amask, pmask, smask = [], [], [], [], []
    act = set(vocab.ids.tolist())
    k = 0
    for i in range(b):
        n = len(images[i])
        if n == 0:
            raise ValueError(f"encode_batch: sample {i} has no image")
        p = prompt_ids(processor, instructions[i], counts[k:k + n])
        k += n
        t: list[int] = []
        if subtasks is not None:
            use = codes is not None and (has_codes is None or bool(has_codes[i]))
            t = target_ids(processor, vocab, subtasks[i], codes[i] if use else None, max_subtask_tokens)
        ids = p + t
        rows.append(ids)
        tmask.append([False] * len(p) + [True] * len(t))
        amask.append([False] * len(p) + [x in act for x in t])
        pmask.append([True] * len(p) + [False] * len(t))
        # the subtask's tokens: those before <|act_start|>, or before the closing <|im_end|>
        n_sub = t.index(vocab.start_id) if vocab.start_id in t else max(len(t) - 1, 0)
        smask.append([False] * len(p) + [True] * n_sub + [False] * (len(t) - n_sub))
    width = max(len(r) for r in rows)

    def pad(seqs, value):
        return [s + [value] * (width - len(s)) for s in seqs]

    input_ids = torch.tensor(pad(rows, vocab.pad_id), dtype=torch.long)
    attention = torch.tensor(pad([[1] * len(r) for r in rows], 0), dtype=torch.long)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "pixel_values": pix["pixel_values"],
        "image_grid_thw": pix["image_grid_thw"],
        "mm_token_type_ids": (input_ids == processor.image_token_id).int(),
    }
    return EncodedBatch(inputs, torch.tensor(pad(tmask, False)), torch.tensor(pad(amask, False)),
                        torch.tensor(pad(pmask, False)), torch.tensor(pad(smask, False)))


def kept_cameras(batch: Mapping, drop_wrist: float = 0.0,
                 generator: torch.Generator | None = None) -> list[tuple[bool, ...]]:
    """Which of ``CAMERAS`` each sample of a collated batch shows: the present ones, wrists dropped at random."""
    mask = batch["image_mask"]
    out = []
    for i in range(mask.shape[0]):
        kept = []
        for c, cam in enumerate(CAMERAS):
            keep = bool(mask[i, c])
            if keep and cam != "head" and drop_wrist > 0 and float(torch.rand((), generator=generator)) < drop_wrist:
                keep = False
            kept.append(keep)
        out.append(tuple(kept))
    return out


def batch_images(batch: Mapping, drop_wrist: float = 0.0, generator: torch.Generator | None = None,
                 kept: Sequence[Sequence[bool]] | None = None) -> list[list]:
    """Per-sample frame lists from a collated contract-3 batch, the ``kept`` cameras of each.

    ``kept`` defaults to the present cameras with wrists dropped at random (``kept_cameras``).
    """
    imgs = batch["images"]
    if kept is None:
        kept = kept_cameras(batch, drop_wrist, generator)
    out = []
    for i, keep in enumerate(kept):
        frames = [to_uint8_hwc(imgs[cam][i]) for cam, k in zip(CAMERAS, keep) if k]
        if not frames:  # a sample without any camera still needs one image slot: a black head frame
            frames.append(to_uint8_hwc(torch.zeros_like(imgs["head"][i])))
        out.append(frames)
    return out


def target_loss(logits: torch.Tensor, enc: EncodedBatch) -> torch.Tensor:
    """Cross-entropy on target tokens only; ``logits`` [N, V] at ``enc.predicting(enc.target_mask)``."""
    labels = enc.inputs["input_ids"][:, 1:][enc.target_mask[:, 1:]]
    return F.cross_entropy(logits.float(), labels)


# -- constrained decoding ------------------------------------------------------------------------
class ActionGrammar(LogitsProcessor):
    """Forces ``subtask <|act_start|> a_1..a_Nq <|act_end|> <|im_end|>`` on generated tokens."""

    def __init__(self, tokenizer, vocab: ActionVocab, num_queries: int, prompt_len: int, vocab_rows: int,
                 max_subtask_tokens: int = 32, min_subtask_tokens: int = 0):
        self.vocab, self.nq, self.prompt_len = vocab, int(num_queries), int(prompt_len)
        self.max_subtask = int(max_subtask_tokens)
        self.min_subtask = min(int(min_subtask_tokens), self.max_subtask)
        text = torch.zeros(vocab_rows, dtype=torch.bool)
        text[: len(tokenizer)] = True
        special = set(tokenizer.all_special_ids) | set(vocab.ids.tolist()) | {vocab.start_id, vocab.end_id}
        text[torch.tensor(sorted(i for i in special if i < vocab_rows), dtype=torch.long)] = False
        self.text_only = text.clone()
        text[vocab.start_id] = True
        self.text_allowed = text
        act = torch.zeros(vocab_rows, dtype=torch.bool)
        act[vocab.ids] = True
        self.action_allowed = act

    def allowed(self, generated: list[int]) -> torch.Tensor | int:
        v = self.vocab
        if v.start_id not in generated:
            if len(generated) >= self.max_subtask:
                return v.start_id
            return self.text_only if len(generated) < self.min_subtask else self.text_allowed
        k = len(generated) - generated.index(v.start_id) - 1
        if k < self.nq:
            return self.action_allowed
        if k == self.nq:
            return v.end_id
        return v.im_end_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.text_allowed.device != scores.device:  # move the masks once, not every token
            for name in ("text_allowed", "text_only", "action_allowed"):
                setattr(self, name, getattr(self, name).to(scores.device))
        out = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            rule = self.allowed(input_ids[row, self.prompt_len:].tolist())
            if isinstance(rule, int):
                out[row, rule] = 0.0
            else:
                out[row, rule] = scores[row, rule]
        return out


@torch.no_grad()
def generate_plan(model, processor: VLMProcessor, vocab: ActionVocab, enc: EncodedBatch, num_queries: int,
                  max_subtask_tokens: int = 32, min_subtask_tokens: int = 0) -> tuple[list[str], torch.Tensor]:
    """Greedy constrained decoding from prompts (``enc`` without targets): (subtasks, codes [B, Nq]).

    ``min_subtask_tokens`` forbids ``<|act_start|>`` before that many subtask tokens (benchmarks use
    it to decode a realistic subtask length from random weights).
    """
    from transformers import GenerationConfig

    ids = enc.inputs["input_ids"]
    if ids.shape[0] != 1 and bool((enc.inputs["attention_mask"] == 0).any()):
        raise ValueError("generate_plan: batched prompts must have equal lengths (no padding)")
    prompt_len = ids.shape[1]
    grammar = ActionGrammar(processor.tokenizer, vocab, num_queries, prompt_len,
                            model.get_output_embeddings().weight.shape[0], max_subtask_tokens,
                            min_subtask_tokens)
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=max_subtask_tokens + num_queries + 3,
                               eos_token_id=vocab.im_end_id, pad_token_id=vocab.pad_id)
    out = model.generate(**enc.inputs, generation_config=gen_cfg, logits_processor=LogitsProcessorList([grammar]))
    subtasks, codes = [], []
    for row in out[:, prompt_len:].tolist():
        start = row.index(vocab.start_id)
        subtasks.append(processor.tokenizer.decode(row[:start], skip_special_tokens=True).strip())
        codes.append(vocab.to_codes(torch.tensor(row[start + 1:start + 1 + num_queries])))
    return subtasks, torch.stack(codes)


def batch_codes(act_vae, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Target codes [B, Nq] and which samples have them: Act-VAE tokens (robot), pseudo tokens (human)."""
    nq = act_vae.config.num_queries
    robot = batch["is_robot"].bool()
    dev = batch["action"].device
    if next(act_vae.parameters()).device != dev:
        act_vae.to(dev)
    codes = torch.zeros(robot.shape[0], nq, dtype=torch.long, device=dev)
    if bool(robot.any()):
        codes[robot] = act_vae.tokenize(batch["action"][robot].float())
    has = robot.clone()
    if "action_tokens" in batch:
        human = ~robot
        pseudo = batch["action_tokens"].long().to(dev)
        labelled = human & (pseudo >= 0).all(dim=1)
        codes[labelled] = pseudo[labelled]
        has |= labelled
    return codes, has


def ntp_loss_fn(processor: VLMProcessor, vocab: ActionVocab, act_vae, wrist_dropout: float,
                max_subtask_tokens: int | None = None, vision_aux: float = 0.0):
    """The NTP objective as a loss for the shared loop: cross-entropy on [subtask, action tokens] targets.

    The model (``Backbone``) is called with ``select``: its LM head runs on the target positions only.
    ``vision_aux`` > 0 adds that weight times the colour-saliency loss of the model's ``aux`` head
    (``clap_train.models.vision_aux``).
    """
    from clap_train.models.vision_aux import add_vision_aux
    from clap_train.models.vlm import MRopePositions
    from clap_train.train.loop import unwrap

    positions = MRopePositions()

    def loss_fn(model: torch.nn.Module, batch: Mapping[str, Any], step: int):
        codes, has = batch_codes(act_vae, batch)
        frames = batch_images(batch, wrist_dropout)
        enc = encode_batch(processor, vocab, frames, batch["instruction"],
                           batch["subtask"], codes.cpu(), has.tolist(), max_subtask_tokens).to(batch["action"].device)
        inputs = enc.causal_inputs()
        inputs["position_ids"] = positions(unwrap(model).vlm, enc.inputs)
        logits = model(select=enc.predicting(enc.target_mask), **inputs)
        loss = target_loss(logits, enc)
        with torch.no_grad():
            is_action = enc.action_mask[:, 1:][enc.target_mask[:, 1:]]  # among the target positions
            hit = logits[is_action].argmax(-1) == enc.inputs["input_ids"][:, 1:][enc.action_mask[:, 1:]]
            acc = float(hit.float().mean()) if hit.numel() else 0.0
        metrics = {"action_token_acc": acc}
        loss = add_vision_aux(loss, metrics, unwrap(model).aux, frames, vision_aux)
        return loss, metrics

    return loss_fn
