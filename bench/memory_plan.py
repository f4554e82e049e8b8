"""Per-GPU memory plan of CLAP at the paper's scale (Qwen3-VL-4B), on paper and on the meta device.

Builds config/model/qwen3vl-4b-instruct.config.json with ``torch.device("meta")`` (no memory, no
weights) to count the parameters exactly, counts the LoRA adapters ``finetune: lora`` adds, and
measures the activations one text decoder layer saves for backward by running it on meta tensors
under ``saved_tensors_hooks``. From these it prints, per GPU, for FSDP full-shard over N GPUs with
bf16 mixed precision: parameters, gradients, Adam state, the frozen KM reference, and activations
at batch B per GPU with and without gradient checkpointing. Usage (RESULTS.md has the figures):

    python bench/memory_plan.py                  # N = 8 GPUs, batch 32 per GPU
    python bench/memory_plan.py --gpus 4 --batch 16 --json bench/out/memory_plan.json
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
GB = 1e9


def build_meta(path: pathlib.Path):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    cfg = Qwen3VLConfig(**json.loads(path.read_text()))
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(cfg)
    return cfg, model


def count(module) -> int:
    seen, n = set(), 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def lora_params(text_cfg, rank: int) -> int:
    """Adapters on q, k, v, o, gate, up, down of every text layer: rank * (in + out) each."""
    h, inter = text_cfg.hidden_size, text_cfg.intermediate_size
    q = text_cfg.num_attention_heads * text_cfg.head_dim
    kv = text_cfg.num_key_value_heads * text_cfg.head_dim
    shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]
    return text_cfg.num_hidden_layers * sum(rank * (i + o) for i, o in shapes)


def saved_bytes_per_token(layer, text_cfg, dtype=torch.bfloat16, tokens: int = 61) -> float:
    """Bytes one decoder layer keeps for backward per token (meta run; SDPA attention).

    Counts each saved tensor once, and only tensors with a token axis (not the weights, which the
    parameter rows count). ``tokens`` is prime so that no weight shape contains it by chance.
    """
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

    layer = layer.to(dtype)
    total = 0
    kept = {}

    def pack(t):
        nonlocal total
        if id(t) not in kept and tokens in t.shape:
            kept[id(t)] = t
            total += t.numel() * t.element_size()
        return t

    with torch.device("meta"):
        x = torch.randn(1, tokens, text_cfg.hidden_size, dtype=dtype, requires_grad=True)
        rope = Qwen3VLTextRotaryEmbedding(text_cfg)
        pos = torch.arange(tokens)[None, None].expand(3, 1, tokens)
        cos_sin = rope(x, pos)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x, position_embeddings=cos_sin, attention_mask=None, position_ids=pos[0])
    return total / tokens


def plan(args) -> dict:
    cfg, model = build_meta(args.config)
    text = cfg.text_config
    vis = cfg.vision_config
    n_total = count(model)
    n_vision = count(model.model.visual)
    n_text = n_total - n_vision
    n_lora = lora_params(text, args.lora_rank)
    # one sample: 3 cameras at 224 px -> (224/16)^2 patches / merge 2x2 = 49 tokens each (+ 2 markers),
    # the chat prompt and instruction, then subtask (<= 32) + markers + Nq = 16 action tokens + end
    img_tokens = (args.image_size // vis.patch_size) ** 2 // vis.spatial_merge_size ** 2
    seq = args.cameras * (img_tokens + 2) + args.prompt_tokens + args.target_tokens
    tok = seq * args.batch
    per_tok_layer = saved_bytes_per_token(model.model.language_model.layers[0], text)
    layers = text.num_hidden_layers
    hidden_in = 2 * text.hidden_size  # bf16 layer input kept per layer under checkpointing
    vis_tokens = args.batch * args.cameras * (args.image_size // vis.patch_size) ** 2
    # ViT block, bf16: norm in/out x2, qkv out, attention out, fc1 out, act out (elements per token)
    vis_per_tok_layer = 2 * (2 * vis.hidden_size + 3 * vis.hidden_size + vis.hidden_size + 2 * vis.intermediate_size)
    logits = tok * text.vocab_size * (2 + 4 + 4)  # bf16 logits, their fp32 copy in the loss, its gradient
    n, p = args.gpus, n_total
    rows = {
        "params fp32, FSDP-sharded (4 B/param / N)": 4 * p / n,
        "grads fp32, sharded (4 B/param / N)": 4 * p / n,
        "Adam m and v fp32, sharded (8 B/param / N)": 8 * p / n,
        "bf16 copy of the largest unsharded unit (one decoder layer, x2 prefetch)":
            2 * 2 * count(model.model.language_model.layers[0]),
        "KM reference, bf16, unsharded (RF stage 2 only)": 2 * p,
        "activations, text, gradient checkpointing": tok * (layers * hidden_in + per_tok_layer),
        "activations, vision, gradient checkpointing": vis_tokens * (vis.depth * 2 * vis.hidden_size
                                                                     + vis_per_tok_layer),
        "logits + loss (all positions)": logits,
    }
    no_ckpt = {"activations, text, no checkpointing": tok * layers * per_tok_layer,
               "activations, vision, no checkpointing": vis_tokens * vis.depth * vis_per_tok_layer}
    lora_rows = {
        "base weights bf16, frozen, FSDP-sharded (2 B/param / N)": 2 * p / n,
        "LoRA params + grads + Adam, fp32 (16 B/param, sharded)": 16 * n_lora / n,
    }
    full = sum(rows.values())
    lora_total = (full - rows["params fp32, FSDP-sharded (4 B/param / N)"] - rows["grads fp32, sharded (4 B/param / N)"]
                  - rows["Adam m and v fp32, sharded (8 B/param / N)"] + sum(lora_rows.values()))
    return {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "params_total": n_total, "params_text": n_text, "params_vision": n_vision, "lora_params": n_lora,
        "gpus": n, "batch_per_gpu": args.batch, "seq_len": seq, "tokens_per_gpu": tok,
        "saved_bytes_per_token_per_text_layer": per_tok_layer,
        "full_finetune_gb": {k: v / GB for k, v in rows.items()}, "full_finetune_total_gb": full / GB,
        "without_checkpointing_gb": {k: v / GB for k, v in no_ckpt.items()},
        "lora_gb": {k: v / GB for k, v in lora_rows.items()}, "lora_total_gb": lora_total / GB,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=pathlib.Path, default=ROOT / "config" / "model" / "qwen3vl-4b-instruct.config.json")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--batch", type=int, default=32, help="samples per GPU per micro-step")
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--prompt-tokens", type=int, default=24, help="chat template + instruction")
    p.add_argument("--target-tokens", type=int, default=51, help="subtask (32) + 2 markers + 16 action tokens + end")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--json", type=pathlib.Path)
    args = p.parse_args(argv)
    r = plan(args)
    print(f"Qwen3-VL-4B on the meta device: {r['params_total'] / 1e9:.3f} B parameters "
          f"(text {r['params_text'] / 1e9:.3f} B, vision {r['params_vision'] / 1e9:.3f} B); "
          f"LoRA r={args.lora_rank}: {r['lora_params'] / 1e6:.1f} M")
    print(f"batch {r['batch_per_gpu']} per GPU x {r['seq_len']} tokens = {r['tokens_per_gpu']} tokens; "
          f"one text layer saves {r['saved_bytes_per_token_per_text_layer']:.0f} B/token (meta run)")
    print(f"\nfull fine-tune, FSDP over {r['gpus']} GPUs, bf16 mixed precision, per GPU:")
    for k, v in r["full_finetune_gb"].items():
        print(f"  {v:7.2f} GB  {k}")
    print(f"  {r['full_finetune_total_gb']:7.2f} GB  total")
    for k, v in r["without_checkpointing_gb"].items():
        print(f"  ({v:6.2f} GB  {k})")
    print("\nLoRA (base frozen): replaces the three optimiser rows with\n" + "\n".join(
        f"  {v:7.2f} GB  {k}" for k, v in r["lora_gb"].items()) + f"\n  {r['lora_total_gb']:7.2f} GB  total")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
