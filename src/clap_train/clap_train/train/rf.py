r"""``clap train rf`` (alias ``post``): post-training with CLAP-RF and Knowledge Matching (Alg. 4).

Stage 1 (``RUN_DIR/stage1``): NTP adaptation of the starting policy (the config key ``init``, an
NTP policy directory) on target robot tokens + human pseudo tokens, constant lr 2e-5 after warm-up
(Table IX). Its result is frozen as the reference phi_ref.

Stage 2 (``RUN_DIR/stage2``), robot data only: a trainable copy phi_policy of the stage-1 backbone
(``finetune: full``; ``lora``: peft LoRA adapters on the language model, merged into the weights
at export; ``frozen`` trains the head alone) and a DiT flow head that cross-attends to
the fused outputs of an EARLY and a MIDDLE decoder layer over the prompt. Loss:
L_RF + alpha * KL(p_policy || p_ref) over the robot action-token positions (alpha 0.005), with
lr 1e-4, warm-up and cosine decay. The result is exported to ``RUN_DIR/policy`` (modes rf + ntp).

Both stages run through the shared loop (accelerate, atomic checkpoints); ``--resume`` continues
whichever stage was interrupted (a finished stage 1 is reloaded, not retrained). ``--stop-after``
counts steps across both stages.

    clap train rf --config config/train/tiny/rf.yaml --synthetic 8 --run-dir runs/rf \
        --set init=runs/ntp/policy
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
from typing import Any, Literal

import torch
from torch.profiler import record_function

from clap_train.data.samples.action_space import ActionSpace, load_action_space
from clap_train.data.samples.mirror import MirrorKeys
from clap_train.data.samples.sources import DataKeys, Sources, open_mixed
from clap_train.models.act_vae import ActVAE
from clap_train.models.flow_head import FlowHead, FlowHeadConfig, default_feature_layers
from clap_train.models.knowledge_matching import ReferenceCache, reverse_kl
from clap_train.models.ntp import batch_codes, batch_images, encode_batch, kept_cameras, ntp_loss_fn
from clap_train.models.pretrained import Backbone, load_act_vae, load_backbone
from clap_train.models.lora import LORA_TARGETS, add_lora, merge_lora
from clap_train.models.vision_aux import VisionAux, VisionAuxKeys, add_vision_aux
from clap_train.models.vlm import (
    MRopePositions, VLMConfig, VLMProcessor, capture_layers, hidden_size, num_text_layers, selected_logits,
)
from clap_train.train.loop import LoopConfig, Stage, is_main_process, run_loop, unwrap
from clap_train.train.runner import RunOptions, StageSpec


@dataclasses.dataclass
class RFTrainConfig(DataKeys, VisionAuxKeys, MirrorKeys):
    """``clap train rf`` settings (defaults: Table IX)."""

    init: str | None = None  # NTP policy directory to start from (clap train ntp's RUN_DIR/policy)
    vlm: VLMConfig = dataclasses.field(default_factory=VLMConfig)  # only when init is None (random start)
    act_vae: str | None = None  # default: the init policy's own act_vae/ (needed when init is None)
    stage1: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(
        steps=3000, batch_size=128, lr=2e-5, warmup_steps=1000, schedule="constant"))
    stage2: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(
        steps=5000, batch_size=128, lr=1e-4, warmup_steps=1000, schedule="cosine"))
    flow: FlowHeadConfig = dataclasses.field(default_factory=FlowHeadConfig)
    feature_layers: list[int] | None = None  # VLM layers the head fuses; None = an early and a middle layer
    alpha: float = 0.005  # KM weight
    km_cache_mb: int = 1024  # memory for the frozen reference's logits of samples seen before (0: no cache)
    finetune: Literal["full", "lora", "frozen"] = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: list[str] = dataclasses.field(default_factory=lambda: list(LORA_TARGETS))
    policy_lr: float | None = None  # lr of the trainable backbone copy in stage 2 (default: stage2.lr)
    state_dropout: float = 0.2  # share of stage-2 samples trained without the state input
    state_noise: float = 0.0  # std of Gaussian noise on the normalised state input in stage 2
    wrist_dropout: float = 0.3
    human_fraction: float = 0.0
    export_every: int = 0  # stage-2 steps between intermediate policies in RUN_DIR/exports/ (0 = none)
    max_subtask_tokens: int = 32
    rate_hz: float = 30.0
    # weight of the cross-entropy of the target's text in stage 2 (the subtask and the markers around the
    # actions, <|act_start|> included: without it the decoded subtask does not end). KM holds only the action
    # tokens' logits; this keeps the decoded subtask right, which a head with ``flow.read_subtask`` reads; 0: off
    subtask_loss: float = 0.0
    # frames: in stage 2 the text a ``flow.read_subtask`` head reads is the subtask of a frame drawn up to this
    # many frames away in the same episode, so that the images, not the decoded text, say when a phase ends
    # (the decoded text lags at phase boundaries and can hold a phase; e.g. 24 = 0.8 s at 30 Hz); 0: off.
    # ``subtask_loss`` scores the text only of samples whose drawn text is their own
    subtask_jitter: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subtask_jitter < 0:
            raise ValueError(f"subtask_jitter must be >= 0, got {self.subtask_jitter}")
        if self.subtask_jitter and not self.flow.read_subtask:
            raise ValueError("subtask_jitter needs flow.read_subtask: true (only such a head reads the subtask)")
        if self.subtask_loss < 0:
            raise ValueError(f"subtask_loss must be >= 0, got {self.subtask_loss}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.km_cache_mb < 0:
            raise ValueError(f"km_cache_mb must be >= 0, got {self.km_cache_mb}")
        for name in ("state_dropout", "wrist_dropout", "human_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.policy_lr is not None and self.policy_lr <= 0:
            raise ValueError("policy_lr must be positive")
        if self.lora_rank <= 0 or self.lora_alpha <= 0:
            raise ValueError("lora_rank and lora_alpha must be positive")
        if self.state_noise < 0:
            raise ValueError(f"state_noise must be >= 0, got {self.state_noise}")
        if self.export_every < 0:
            raise ValueError(f"export_every must be >= 0, got {self.export_every}")
        if self.export_every and self.finetune == "lora":
            raise ValueError("export_every needs finetune full or frozen (a LoRA backbone is merged once, at the end)")


class RFModel(torch.nn.Module):
    """phi_policy (trainable backbone copy) + the RF flow head: what stage 2 trains and checkpoints."""

    def __init__(self, vlm, head: FlowHead, aux: torch.nn.Module | None = None):
        super().__init__()
        self.vlm, self.head = vlm, head
        self.aux = aux  # a training-only head on the vision tokens (``VisionAux``); not exported

    def forward(self, inputs: dict[str, torch.Tensor], context_mask: torch.Tensor, actions: torch.Tensor,
                state: torch.Tensor, action_pad: torch.Tensor, state_mask: torch.Tensor, select: torch.Tensor):
        """Return (phi_policy's token logits at the positions ``select`` marks, L_RF).

        ``context_mask`` [B, T]: the positions the flow head attends to (``EncodedBatch.flow_context``).

        One pass, so that DDP/FSDP see every trainable parameter.
        """
        layers = self.head.config.feature_layers
        with capture_layers(self.vlm, layers) as found, record_function("policy_vlm"):
            logits = selected_logits(self.vlm, inputs, select)
        with record_function("flow_head"):
            ctx = self.head.fuse([found[i] for i in layers])
            l_rf = self.head.rf_loss(actions, ctx, ~context_mask, state=state, pad=action_pad, state_mask=state_mask)
        return logits, l_rf


def rf_km_loss_fn(processor, vocab, act_vae, reference, cfg: RFTrainConfig, cache: ReferenceCache | None = None):
    """L_RF + alpha * reverse KL to the frozen reference over the robot action-token positions.

    With ``cache`` (batches carry ``sample_index``), the reference runs only on samples whose logits
    it has not computed before for the same cameras; with alpha 0 it does not run at all.
    """
    positions = MRopePositions()

    def pass_inputs(enc) -> dict[str, torch.Tensor]:
        """A teacher-forced pass's inputs (one M-RoPE config: the same for phi_policy and the reference)."""
        inputs = enc.causal_inputs()
        inputs["position_ids"] = positions(reference, enc.inputs)
        return inputs

    def reference_pass(enc, inputs) -> torch.Tensor:
        return selected_logits(reference, inputs, enc.predicting(enc.action_mask))

    def reference_logits(batch, enc, inputs, frames, kept, subtasks, codes, has, dev) -> torch.Tensor:
        if cache is None:
            return reference_pass(enc, inputs)
        keys = [(int(i), k, t) for i, k, t in zip(batch["sample_index"].tolist(), kept, subtasks)]
        found = cache.lookup(keys)
        miss = [b for b, f in enumerate(found) if f is None]
        if miss:
            sub = enc if len(miss) == len(keys) else encode_batch(
                processor, vocab, [frames[b] for b in miss], [batch["instruction"][b] for b in miss],
                [subtasks[b] for b in miss], codes[miss].cpu(), [bool(has[b]) for b in miss],
                cfg.max_subtask_tokens).to(dev)
            fresh = reference_pass(sub, inputs if sub is enc else pass_inputs(sub))
            for b, part in zip(miss, fresh.split(sub.action_mask[:, 1:].sum(1).tolist())):
                found[b] = part
                cache.store(keys[b], part)
        return torch.cat([f.to(dev, torch.float32) for f in found])

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any], step: int):
        dev = batch["action"].device
        if next(reference.parameters()).device != dev:  # frozen: bf16 on GPUs halves its memory
            reference.to(dev, dtype=torch.bfloat16 if dev.type == "cuda" else None)
        with record_function("encode"):
            codes, has = batch_codes(act_vae, batch)
            kept = kept_cameras(batch, cfg.wrist_dropout)
            frames = batch_images(batch, kept=kept)
            subtasks = jittered_subtasks(batch)
            enc = encode_batch(processor, vocab, frames, batch["instruction"], subtasks, codes.cpu(),
                               has.tolist(), cfg.max_subtask_tokens).to(dev)
        keep = torch.rand(batch["state"].shape[0], device=dev) >= cfg.state_dropout
        state = batch["state"]
        if cfg.state_noise > 0:  # the state says roughly where the arms are; the images must say exactly
            state = state + cfg.state_noise * torch.randn_like(state)
        inputs = pass_inputs(enc)
        read = enc.flow_context(unwrap(model).head.config.read_subtask)
        # with subtask_loss, every target token of the samples that carry their own subtask: the subtask, the
        # <|act_start|> that ends it, the actions, ...; of the others (subtask_jitter), the actions only
        own = torch.tensor([a == b for a, b in zip(subtasks, batch["subtask"])], device=dev)[:, None]
        scored = enc.action_mask | (enc.target_mask & own) if cfg.subtask_loss > 0 else enc.action_mask
        logits, l_rf = model(inputs, read, batch["action"], state, batch["action_pad"], keep, enc.predicting(scored))
        loss, metrics = l_rf, {"rf_loss": float(l_rf.detach())}
        if cfg.subtask_loss > 0:  # keep the text's decoding (KM below holds the action tokens only)
            is_action = enc.action_mask[:, 1:][scored[:, 1:]]  # among the scored positions
            labels = enc.inputs["input_ids"][:, 1:][(scored & ~enc.action_mask)[:, 1:]]
            l_sub = (torch.nn.functional.cross_entropy(logits[~is_action].float(), labels) if labels.numel()
                     else logits.sum() * 0.0)
            loss = loss + cfg.subtask_loss * l_sub
            metrics["subtask_loss"] = float(l_sub.detach())
            logits = logits[is_action]
        loss = add_vision_aux(loss, metrics, unwrap(model).aux, frames, cfg.vision_aux)
        if cfg.alpha == 0:  # direct fine-tuning: no reference pass
            return loss, {**metrics, "kl": 0.0}
        with torch.no_grad(), record_function("km_reference"):
            ref = reference_logits(batch, enc, inputs, frames, kept, subtasks, codes, has, dev)
        kl = reverse_kl(logits, ref)
        loss = loss + cfg.alpha * kl
        metrics["kl"] = float(kl.detach())
        if cache is not None:  # the share of reference passes the cache saved so far, and its memory
            metrics.update(km_cache_hit_rate=cache.hit_rate, km_cache_mb=cache.bytes / 2 ** 20)
        return loss, metrics

    return loss_fn


def jittered_subtasks(batch: dict[str, Any]) -> list[str]:
    """Each sample's subtask, or with ``subtask_window`` (``Indexed``'s ``subtask_radius``) one drawn from it.

    The draw uses torch's generator, which the loop seeds per step: resume stays exact.
    """
    if "subtask_window" not in batch:
        return list(batch["subtask"])
    return [w[int(torch.randint(len(w), ()))] for w in batch["subtask_window"]]


class Indexed(torch.utils.data.Dataset):
    """A dataset whose samples also carry their index (``sample_index``: the KM reference cache's key).

    ``subtask_radius`` > 0: samples also carry ``subtask_window``, the subtask of every frame within that many
    frames of theirs in their episode (``subtask_jitter``).
    """

    def __init__(self, base, subtask_radius: int = 0):
        self.base, self.subtask_radius = base, subtask_radius

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = {**self.base[i], "sample_index": int(i)}
        if self.subtask_radius:
            sample["subtask_window"] = self.base.subtasks_around(i, self.subtask_radius)
        return sample


def robot_only(dataset):
    """Stage 2 trains on robot samples only: a mixed dataset's robot part."""
    return getattr(dataset, "robot", dataset)


@dataclasses.dataclass
class Prepared:
    cfg: RFTrainConfig
    act_vae: ActVAE
    dataset: Any
    space: ActionSpace


def prepare(cfg: RFTrainConfig, sources: Sources, options: RunOptions) -> Prepared:
    # an explicit act_vae wins; otherwise the starting policy's own Act-VAE and action space
    act_dir = cfg.act_vae if cfg.act_vae is not None or cfg.init is None else str(pathlib.Path(cfg.init) / "act_vae")
    act_vae = load_act_vae(act_dir)
    space = load_action_space(cfg.init if cfg.init is not None and cfg.act_vae is None else act_dir)
    image_size = cfg.vlm.image_size
    if cfg.init is not None:
        image_size = VLMProcessor.from_pretrained(pathlib.Path(cfg.init) / "vlm").image_size
    dataset, space = open_mixed(sources, cfg, act_vae.config.chunk_len, image_size, act_vae.config.num_queries,
                                space, progress=options.progress, mirror=cfg.mirror)
    return Prepared(cfg, act_vae, dataset, space)


def train(job: Prepared, options: RunOptions) -> int:
    from clap_train.data.samples.dataset import collate_samples
    from clap_train.policy import PolicyMeta, save_policy

    cfg, act_vae, space, run_dir, progress = job.cfg, job.act_vae, job.space, options.run_dir, options.progress
    vlm, processor, vocab = load_backbone(cfg.vlm, cfg.init, act_vae.config.codebook_size)

    # Stage 1: NTP adaptation on robot + human tokens -> the frozen reference.
    stop1 = None if options.stop_after is None else min(options.stop_after, cfg.stage1.steps)
    aux = VisionAux(vlm, cfg.vision_aux_grid) if cfg.vision_aux > 0 else None
    s1 = Stage(name="rf_stage1", model=Backbone(vlm, aux), dataset=job.dataset, collate_fn=collate_samples,
               loss_fn=ntp_loss_fn(processor, vocab, act_vae, cfg.wrist_dropout, cfg.max_subtask_tokens,
                                   cfg.vision_aux))
    r1 = run_loop(s1, cfg.stage1, run_dir / "stage1", resume=options.resume, progress=progress, stop_after=stop1)
    if r1.final_step < cfg.stage1.steps:
        print(f"rf: stopped in stage 1 at step {r1.final_step}")
        return 0
    if aux is not None:
        aux.detach()  # the frozen reference is a deep copy: without the hook
    reference = copy.deepcopy(vlm).eval()
    if aux is not None:
        aux.attach(vlm)
    for p in reference.parameters():
        p.requires_grad_(False)

    # Stage 2: RF head + KM on robot data, policy branch initialised from the reference.
    layers = cfg.feature_layers or default_feature_layers(num_text_layers(vlm))
    flow_cfg = dataclasses.replace(cfg.flow, vlm_hidden=hidden_size(vlm), feature_layers=list(layers),
                                   chunk_len=act_vae.config.chunk_len, action_dim=act_vae.config.action_dim)
    cfg = dataclasses.replace(cfg, flow=flow_cfg)
    torch.manual_seed(cfg.stage2.seed)
    model = RFModel(vlm, FlowHead(flow_cfg), aux)
    if cfg.finetune == "frozen":
        for p in model.vlm.parameters():
            p.requires_grad_(False)
    elif cfg.finetune == "lora":
        add_lora(model.vlm, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    groups = [{"params": list(model.head.parameters()), "lr": cfg.stage2.lr}]
    if cfg.finetune != "frozen":
        groups.append({"params": [p for p in model.vlm.parameters() if p.requires_grad],
                       "lr": cfg.policy_lr or cfg.stage2.lr})
    stop2 = None if options.stop_after is None else options.stop_after - cfg.stage1.steps
    meta = PolicyMeta(chunk_len=act_vae.config.chunk_len, action_dim=act_vae.config.action_dim, rate_hz=cfg.rate_hz,
                      image_size=processor.image_size, num_queries=act_vae.config.num_queries,
                      codebook_size=act_vae.config.codebook_size, max_subtask_tokens=cfg.max_subtask_tokens,
                      flow=flow_cfg)

    def export_intermediate(m: RFModel, step: int) -> None:
        """An intermediate policy every ``export_every`` steps (learning curves: success against training)."""
        if cfg.export_every and step % cfg.export_every == 0 and step < cfg.stage2.steps:
            save_policy(run_dir / "exports" / f"step-{step:06d}", meta, m.vlm, processor, act_vae, space, m.head)

    cache = ReferenceCache(cfg.km_cache_mb * 2 ** 20) if cfg.km_cache_mb > 0 else None
    s2 = Stage(name="rf_stage2", model=model, dataset=Indexed(robot_only(job.dataset), cfg.subtask_jitter),
               collate_fn=collate_samples,
               loss_fn=rf_km_loss_fn(processor, vocab, act_vae, reference, cfg, cache), param_groups=groups,
               snapshot=export_intermediate)
    r2 = run_loop(s2, cfg.stage2, run_dir / "stage2", resume=options.resume, progress=progress, stop_after=stop2)
    if r2.final_step < cfg.stage2.steps:
        print(f"rf: stopped in stage 2 at step {r2.final_step}")
        return 0
    if cfg.finetune == "lora":
        merge_lora(model.vlm)  # the exported backbone is a plain Qwen3-VL again
    if not is_main_process():
        return 0
    out = save_policy(run_dir / "policy", meta, model.vlm, processor, act_vae.cpu(), space, model.head)
    last = r2.history[-1] if r2.history else {}
    hits = f", KM cache hit rate {last['km_cache_hit_rate']:.2f}" if "km_cache_hit_rate" in last else ""
    print(f"rf: stage 2 step {r2.final_step}, rf {last.get('rf_loss', float('nan')):.4g}, "
          f"kl {last.get('kl', float('nan')):.3g}{hits}; policy exported to {out}")
    return 0


SPEC = StageSpec(name="rf", help="CLAP-RF flow head with Knowledge Matching (Alg. 4)", config=RFTrainConfig,
                 prepare=prepare, train=train, human="both", path_keys=("init", "act_vae"))
