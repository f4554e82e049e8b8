"""Issues 21 and 22: whether the tiny Qwen3-VL can learn coloured cubes' colour -> side binding at all.

The probe strips the question to its core: coloured-cubes first frames (head + both wrists, rendered
at rest, no physics rollout), the instruction ("pick up the red cube"), and as the only target the
first subtask ("move the right gripper above the red cube"). Nothing in a first frame moves, so
the arm can only come from the images and the colour word. Scored on held-out scenes by the
teacher-forced choice between the arm word's first bytes ("r" / "l"; the tokenizer is byte-level).

    python bench/binding_probe.py --runs plain:0 aux:0 plain:1 aux:1 plain:2 aux:2

A run is ``NAME:SEED`` with NAME one of ``RUNS`` (``plain``: the language loss alone; ``aux``: plus
the colour-saliency target on the merged vision tokens, models/vision_aux.py; ``rf`` / ``rf_aux``:
CLAP-RF's read-out instead of the language loss, a flow head (models/flow_head.py, the closed_loop
shape) on decoder layers 0 and 1 at the prompt's positions, whose target chunk is +1 on the named
cube's arm and -1 on the other; scored by the sign of the sampled chunk). ``--init DIR`` starts
every run from a saved backbone (DIR/vlm), e.g. a grounded one of an earlier ``aux`` run. Renders
(``clap_sim.grounding.first_frames``: the frames ``clap sim ground`` trains on, whose ``aux`` run this
probe's is) are cached in bench/out/binding_probe, each trained backbone is saved there as NAME_sSEED (a
policy stage's ``init``: the grounded backbone of bench/RESULTS.md), results go to
bench/results/binding_probe.json.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "binding_probe"
RESULTS = ROOT / "bench" / "results" / "binding_probe.json"
RUNS = {  # name -> (vision_aux weight, image size, patch size, objective: "lm" or "rf", rf read-out)
    "plain": (0.0, 64, 16, "lm", None),
    "aux": (16.0, 64, 16, "lm", None),
    "plain128": (0.0, 128, 16, "lm", None),
    "plain_p8": (0.0, 64, 8, "lm", None),
    "rf": (0.0, 64, 16, "rf", "prompt"),
    "rf_aux": (16.0, 64, 16, "rf", "prompt"),
    # read-out variants: + a learned embedding of each context position (the flow head's cross-attention
    # has none, so it cannot tell which camera or region a token came from); only the prompt's last 8
    # positions (where the decoder has gathered the prompt, as at the NTP answer)
    "rf_aux_pos": (16.0, 64, 16, "rf", "pos"),
    "rf_aux_tail": (16.0, 64, 16, "rf", "tail"),
}


def probe(name: str, seed: int, steps: int, train_n: int, batch: int, wrist_dropout: float = 0.3,
          init: pathlib.Path | None = None) -> dict:
    """Train one run and score the arm (word, or flow chunk) every 250 steps."""
    from clap_train.models.flow_head import FlowHead, FlowHeadConfig, timestep_embedding
    from clap_train.models.ntp import encode_batch, target_loss
    from clap_train.models.pretrained import Backbone, load_backbone
    from clap_train.models.vision_aux import VisionAux
    from clap_train.models.vlm import MRopePositions, VLMConfig, capture_layers

    weight, size, patch, objective, readout = RUNS[name]
    from clap_sim.grounding import first_frames

    train = first_frames("coloured_cubes", 20_000, train_n, size, cache=OUT)
    tests = {"heldout": first_frames("coloured_cubes", 30_000, 300, size, cache=OUT),
             "train": {k: v[:300] for k, v in train.items()}}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # the closed_loop configs' tiny shape
    cfg = VLMConfig(hidden_size=64, layers=2, intermediate_size=128, vision_hidden=32, vision_heads=2,
                    image_size=size, patch_size=patch, seed=seed)
    vlm, processor, vocab = load_backbone(cfg, None if init is None else str(init), 1024)
    model = Backbone(vlm, VisionAux(vlm) if weight > 0 else None).train()
    # the closed_loop configs' flow head (tiny/rf.yaml) with a 2-D chunk: (right arm, left arm)
    head = None if objective != "rf" else FlowHead(FlowHeadConfig(
        chunk_len=4, action_dim=2, state_dim=2, vlm_hidden=vlm.config.text_config.hidden_size, feature_layers=[0, 1],
        d_model=64, layers=2, heads=4, ffn_mult=2, use_state=False))
    pos_proj = torch.nn.Linear(64, 64) if readout == "pos" else None
    params = list(model.parameters()) + ([] if head is None else list(head.parameters()))
    params += [] if pos_proj is None else list(pos_proj.parameters())
    positions = MRopePositions()
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    arm_at = len(processor.text_ids("move the "))
    right, left = processor.text_ids("r")[0], processor.text_ids("l")[0]

    def frames(images, drop):
        return [[per[c] for c in range(3) if c == 0 or not drop or rng.random() >= wrist_dropout] for per in images]

    def forward(images, instructions, subtasks, fr):
        enc = encode_batch(processor, vocab, fr, list(instructions), list(subtasks), None)
        inputs = enc.causal_inputs()
        inputs["position_ids"] = positions(vlm, enc.inputs)
        return enc, model(select=enc.predicting(enc.target_mask), **inputs)

    def context(instructions, fr):
        """The flow head's context: decoder layers 0 and 1 over the prompt (images + instruction)."""
        enc = encode_batch(processor, vocab, fr, list(instructions))
        inputs = enc.causal_inputs()
        inputs["position_ids"] = positions(vlm, enc.inputs)
        with capture_layers(vlm, [0, 1]) as found:
            model(**inputs)
        ctx, keep = head.fuse([found[0], found[1]]), enc.prompt_mask
        if readout == "pos":
            idx = torch.arange(ctx.shape[1], dtype=torch.float32) / 1000.0  # timestep_embedding scales by 1000
            ctx = ctx + pos_proj(timestep_embedding(idx, 64))[None]
        elif readout == "tail":
            from_end = keep.sum(1, keepdim=True) - torch.cumsum(keep.long(), 1)  # 0 at the last prompt token
            keep = keep & (from_end < 8)
        return ctx, ~keep

    def chunk(subtasks) -> torch.Tensor:
        side = torch.tensor([1.0 if " right " in s else -1.0 for s in subtasks])
        return torch.stack([side, -side], -1)[:, None].expand(-1, 4, -1).contiguous()

    @torch.no_grad()
    def score(d) -> int:
        model.eval()
        hits = 0
        for i in range(0, len(d["subtask"]), 64):
            sl = slice(i, i + 64)
            fr = frames(d["images"][sl], False)
            if objective == "rf":
                ctx, pad = context(d["instruction"][sl], fr)
                gen = torch.Generator().manual_seed(i)
                a = head.sample(ctx, pad, noise=torch.randn((ctx.shape[0], 4, 2), generator=gen))
                said_right = (a[..., 0] - a[..., 1]).mean(1) > 0
                hits += int((said_right == (chunk(d["subtask"][sl])[:, 0, 0] > 0)).sum())
                continue
            enc, logits = forward(d["images"][sl], d["instruction"][sl], d["subtask"][sl], fr)
            labels = enc.inputs["input_ids"][:, 1:][enc.target_mask[:, 1:]]
            counts = enc.target_mask[:, 1:].sum(1)
            at = torch.cumsum(counts, 0) - counts + arm_at  # each row's arm byte among the scored positions
            if not bool(((labels[at] == right) | (labels[at] == left)).all()):
                raise RuntimeError("binding_probe: the arm byte is not where the subtask format puts it")
            hits += int(((logits[at, right] > logits[at, left]) == (labels[at] == right)).sum())
        model.train()
        return hits

    curve, t0 = [], time.monotonic()
    for step in range(steps):
        scale = min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = 1e-3 * scale
        idx = rng.integers(0, len(train["subtask"]), batch)
        fr = frames(train["images"][idx], True)
        if objective == "rf":
            ctx, pad = context(train["instruction"][idx], fr)
            loss = head.rf_loss(chunk(train["subtask"][idx]), ctx, pad)
        else:
            enc, logits = forward(train["images"][idx], train["instruction"][idx], train["subtask"][idx], fr)
            loss = target_loss(logits, enc)
        if weight > 0:
            loss = loss + weight * model.aux.loss(fr)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            row = {"step": step + 1, "samples": (step + 1) * batch, "loss": round(loss.item(), 4),
                   **{k: score(d) for k, d in tests.items()}, "s": round(time.monotonic() - t0)}
            curve.append(row)
            print(name, seed, row, flush=True)
    # the trained backbone, loadable as a policy-stage init (`--set init=OUT/NAME_sSEED`)
    tag = f"{name}_s{seed}" + ("" if init is None else f"_from_{init.name}")
    vlm.save_pretrained(OUT / tag / "vlm")
    processor.save_pretrained(OUT / tag / "vlm")
    right_share = float(np.mean(["right" in s for s in tests["heldout"]["subtask"]]))
    return {"run": name, "seed": seed, "init": None if init is None else init.name, "objective": objective,
            "vision_aux": weight, "image_size": size, "patch_size": patch,
            "train_scenes": train_n, "batch": batch, "steps": steps, "heldout_scenes": 300,
            "heldout_right_share": right_share, "final_heldout": curve[-1]["heldout"], "curve": curve}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=["plain:0", "aux:0"], help="NAME:SEED, NAME in " + ", ".join(RUNS))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train-scenes", type=int, default=4000)
    p.add_argument("--results", type=pathlib.Path, default=RESULTS)
    p.add_argument("--init", type=pathlib.Path, default=None, help="start from this saved backbone (DIR/vlm)")
    args = p.parse_args(argv)
    doc = json.loads(args.results.read_text()) if args.results.is_file() else {}
    done = doc.get("runs", [])
    for spec in args.runs:
        name, _, seed = spec.partition(":")
        if name not in RUNS:
            p.error(f"unknown run {name!r}; choose from {', '.join(RUNS)}")
        row = probe(name, int(seed or 0), args.steps, args.train_scenes, args.batch, init=args.init)
        key = (row["run"], row["seed"], row["init"])
        done = [r for r in done if (r["run"], r["seed"], r.get("init")) != key] + [row]
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({**doc, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                            "runs": done}, indent=1) + "\n")
    for r in done:
        print(f"{r['run']:>10} seed {r['seed']} from {r.get('init')}: held-out arm {r['final_heldout']}/300 "
              f"(always 'right': {round(300 * r['heldout_right_share'])}/300)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
