"""Latency of CLAP-NTP vs CLAP-RF prediction on the same backbone and input (Table VIII).

Both modes go through ``ClapPolicy.predict`` on one 224x224 head image + instruction (the whole
path: resize, image processor, Qwen3-VL, then either constrained token decoding + Act-VAE
decoder, or a prompt pass through the layers the flow head needs + 10 Euler steps). Prints the
median and p90 latency of each mode, their ratio RF/NTP (paper: 70.1 / 382.0 = 0.18; goal
<= 0.15) and, on CUDA, the peak GPU memory of each mode.

    python bench/latency.py                       # tiny random Qwen3-VL on the CPU (make bench)
    python bench/latency.py --config config/model/qwen3vl-4b-instruct.config.json --device cuda
        # the 4B architecture with random bf16 weights (paper: RF 70.1 ms / 12.1 GB on an H100)
    python bench/latency.py --policy bench/out/closed_loop/transfer_cube/rf/policy
        # a trained, exported policy at its own size: its cameras, image size and chunk (issue 23's
        # goal: the RF chunk's p95 <= 20 ms on the CPU, so that one chunk fits a 30 Hz control tick)

Random weights would end the subtask at a random point, so the grammar is told to decode exactly
``--subtask-tokens`` subtask tokens (default 8, a short Qwen-tokenised subtask) before the 16
action tokens; the generated-token count is reported next to the NTP latency.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def build(args):
    from clap_train.data.samples.action_space import ActionSpace
    from clap_train.data.samples.normalize import Normalizer
    from clap_train.models.act_vae import ActVAEConfig
    from clap_train.models.flow_head import FlowHeadConfig, default_feature_layers
    from clap_train.models.vlm import VLMConfig
    from clap_train.policy import ClapPolicy, PolicyMeta
    from clap_train.testing import build_policy_parts, tiny_stats

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vlm_cfg = VLMConfig(arch_config=args.config, image_size=224) if args.config else VLMConfig(image_size=224)
    if args.config:
        text = json.loads(pathlib.Path(args.config).read_text())["text_config"]
        hidden, layers = text["hidden_size"], text["num_hidden_layers"]
        flow_cfg = FlowHeadConfig(vlm_hidden=hidden, feature_layers=default_feature_layers(layers), d_model=1024,
                                  layers=6, heads=16, ffn_mult=4)
        act_cfg = ActVAEConfig()
    else:
        hidden, layers = vlm_cfg.hidden_size, vlm_cfg.layers
        flow_cfg = FlowHeadConfig(vlm_hidden=hidden, feature_layers=default_feature_layers(layers), d_model=128,
                                  layers=2, heads=4, ffn_mult=4)
        act_cfg = ActVAEConfig(d_model=64, layers=2, decoder_layers=2, heads=4, code_dim=16)
    t0 = time.perf_counter()
    vlm, proc, _, act_vae, head = build_policy_parts(vlm_cfg, act_cfg, flow_cfg, seed=0, dtype=dtype, device=device)
    with torch.no_grad():  # adaLN-zero starts at 0: give the random head a real velocity field
        for p in head.parameters():
            if p.dim() > 1 and float(p.abs().sum()) == 0.0:
                p.normal_(0.0, 0.02)
    meta = PolicyMeta(image_size=224, num_queries=act_cfg.num_queries, codebook_size=act_cfg.codebook_size,
                      flow=flow_cfg, max_subtask_tokens=args.subtask_tokens, min_subtask_tokens=args.subtask_tokens)
    space = ActionSpace("absolute", Normalizer.from_stats(tiny_stats()), meta.euler_indices)
    policy = ClapPolicy(ROOT, meta, vlm, proc, act_vae, space, head, device, dtype)
    return policy, {"build_s": time.perf_counter() - t0, **sizes(policy), "text_layers": layers}


def sizes(policy) -> dict:
    """Parameter counts of the policy's parts and the layers its flow head reads."""
    return {"vlm_params": sum(p.numel() for p in policy.vlm.parameters()),
            "flow_head_params": sum(p.numel() for p in policy.flow_head.parameters()),
            "act_vae_params": sum(p.numel() for p in policy.act_vae.parameters()),
            "feature_layers": policy.meta.flow.feature_layers}


def rf_breakdown(policy, images, instruction: str, repeats: int, cuda: bool) -> dict:
    """Median ms of the RF path's parts: prompt pass through the needed layers, and the Euler steps."""
    from clap_train.models.ntp import encode_batch
    from clap_train.models.vlm import prompt_features

    frames = policy._frames(images)
    enc = encode_batch(policy.processor, policy.vocab, [frames], [instruction]).to(policy.device)
    enc.inputs["pixel_values"] = enc.inputs["pixel_values"].to(policy.dtype)
    layers = policy.meta.flow.feature_layers

    def timed(fn):
        ts = []
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return 1000 * statistics.median(ts)

    with torch.no_grad():
        ctx = policy.flow_head.fuse(prompt_features(policy.vlm, enc.inputs, layers))
        return {
            "prefill_truncated_ms": timed(lambda: prompt_features(policy.vlm, enc.inputs, layers)),
            "prefill_all_layers_ms": timed(lambda: prompt_features(policy.vlm, enc.inputs, layers, truncate=False)),
            "flow_sampling_ms": timed(lambda: policy.flow_head.sample(ctx, generator=torch.Generator().manual_seed(0))),
        }


def load(path: pathlib.Path):
    """A trained policy directory, as the node loads it."""
    from clap_train.policy import ClapPolicy

    policy = ClapPolicy.load(path)
    info = {**sizes(policy), "text_layers": policy.vlm.config.text_config.num_hidden_layers,
            "cameras": policy.meta.camera_names, "image_size": policy.meta.image_size}
    return policy, info


def measure(policy, images: dict[str, np.ndarray], repeats: int, warmup: int, cuda: bool,
            instruction: str = "put the red block on the green mat") -> dict:
    """Both modes, calls interleaved (ntp, rf, ntp, rf, ...) so a busy machine slows both alike."""
    modes = ("ntp", "rf")
    for i in range(warmup):
        for mode in modes:
            policy.predict(images, instruction, mode=mode, seed=i)
    peak: dict[str, float] = {}
    if cuda:  # peak memory of each mode on its own
        for mode in modes:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            policy.predict(images, instruction, mode=mode, seed=0)
            torch.cuda.synchronize()
            peak[mode] = torch.cuda.max_memory_allocated() / 1e9
    lat: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(repeats):
        for mode in modes:
            lat[mode].append(policy.predict(images, instruction, mode=mode, seed=i).latency)
    results = {}
    for mode in modes:
        out = {"median_ms": 1000 * statistics.median(lat[mode]),
               "p90_ms": 1000 * float(np.percentile(lat[mode], 90)),
               "p95_ms": 1000 * float(np.percentile(lat[mode], 95)), "repeats": repeats}
        if mode in peak:
            out["peak_gb"] = peak[mode]
        if mode == "ntp":
            # subtask (forced length) + <|act_start|> + Nq action tokens + <|act_end|> + <|im_end|>
            if policy.meta.min_subtask_tokens == policy.meta.max_subtask_tokens:
                out["generated_tokens"] = policy.meta.min_subtask_tokens + policy.meta.num_queries + 3
        else:
            out.update(rf_breakdown(policy, images, instruction, repeats, cuda))
        results[mode] = out
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="a Qwen3-VL config.json to build with random weights (default: tiny)")
    parser.add_argument("--policy", type=pathlib.Path, help="a trained policy directory to time instead")
    parser.add_argument("--instruction", default="put the red block on the green mat")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--subtask-tokens", type=int, default=8,
                        help="subtask tokens decoded before the action tokens (forced: random weights)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steadier on a shared 2-core machine; 0: torch's default)")
    parser.add_argument("--out", type=pathlib.Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("latency.py: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    policy, info = load(args.policy) if args.policy else build(args)
    rng = np.random.default_rng(0)
    size = policy.meta.image_size
    cameras = policy.meta.camera_names if args.policy else ["head"]
    images = {c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in cameras}
    cuda = policy.device.type == "cuda"
    name = str(args.policy or args.config or "tiny")
    results = {"device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
               "config": name, "cameras": cameras, "image_size": size, **info}
    results.update(measure(policy, images, args.repeats, args.warmup, cuda, args.instruction))
    results["ratio_rf_over_ntp"] = results["rf"]["median_ms"] / results["ntp"]["median_ms"]
    print(f"device {results['device']}; {name}: {len(cameras)} camera(s) at {size} px; "
          f"backbone ({info['vlm_params'] / 1e6:.1f} M params, "
          f"{info['text_layers']} text layers); flow head {info['flow_head_params'] / 1e6:.1f} M on layers "
          f"{info['feature_layers']}")
    for mode in ("ntp", "rf"):
        r = results[mode]
        extra = f", {r['generated_tokens']} generated tokens" if "generated_tokens" in r else ""
        if "flow_sampling_ms" in r:
            extra = (f" (prompt pass {r['prefill_truncated_ms']:.1f} ms through {max(info['feature_layers']) + 1}"
                     f"/{info['text_layers']} layers, all layers {r['prefill_all_layers_ms']:.1f} ms; "
                     f"{policy.meta.flow.num_steps} Euler steps {r['flow_sampling_ms']:.1f} ms)")
        mem = f", peak {r['peak_gb']:.2f} GB" if "peak_gb" in r else ""
        print(f"  {mode.upper():3s}: median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, "
              f"p95 {r['p95_ms']:.1f} ms{extra}{mem}")
    print(f"  RF / NTP latency ratio: {results['ratio_rf_over_ntp']:.3f} (paper 70.1/382.0 = 0.18; goal <= 0.15)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
