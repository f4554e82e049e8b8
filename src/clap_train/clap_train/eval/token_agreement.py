"""``clap eval token-agreement``: VD-VAE tokens of robot transitions against the Act-VAE's.

For robot samples (o_t, o_{t+H}, a_t..a_{t+H-1}) the VD-VAE's pseudo tokens of the images are
compared, position by position, with the Act-VAE tokens of the true chunk. Reports the mean
agreement, the agreement per position and chance level (the probability that two independent
draws from the Act-VAE's token distribution coincide). Only chunks without padding are counted.
Also reports what the contrastive loss itself optimises: the mean cosine between z_v,a and the
Act-VAE encoding of the true chunk, and top-1 retrieval of the true chunk among a pool of
``retrieval_pool`` held-out samples (chance = 1 / pool).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from clap_train.models.quantizer import nearest_codes


@torch.no_grad()
def token_agreement(model, dataset, batch_size: int = 64, limit: int | None = None,
                    retrieval_pool: int = 256) -> dict[str, object]:
    from clap_train.data.dataset import collate_samples

    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_samples)
    hits, count, act_tokens, z_vis, z_acts = None, 0, [], [], []
    for batch in loader:
        keep = ~batch["action_pad"].any(dim=1) & batch["is_robot"].bool()
        if not bool(keep.any()):
            continue
        f_t, f_h = model.features(batch["images"]["head"][keep]), model.features(batch["future_head"][keep])
        z_v, _ = model.inverse(f_t, f_h)
        z_e = model.act_vae.encode(batch["action"][keep])
        vd = nearest_codes(z_v, model.act_vae.codebook.weight)
        true = nearest_codes(z_e, model.act_vae.codebook.weight)
        z_vis.append(F.normalize(z_v.flatten(1), dim=1))
        z_acts.append(F.normalize(z_e.flatten(1), dim=1))
        eq = (vd == true).float().sum(0)
        hits = eq if hits is None else hits + eq
        count += int(keep.sum())
        act_tokens.append(true)
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise ValueError("no unpadded robot samples to compare")
    per_pos = (hits / count).tolist()
    toks = torch.cat(act_tokens)
    k = model.act_vae.config.codebook_size
    chance = sum(float((torch.bincount(toks[:, j], minlength=k).float() / toks.shape[0]).pow(2).sum())
                 for j in range(toks.shape[1])) / toks.shape[1]
    # what the contrastive loss optimises: is a transition's z_v,a closest (cosine) to its own chunk's z_e?
    # neighbouring frames have near-identical chunks: draw the pool evenly across all samples
    zv, za = torch.cat(z_vis), torch.cat(z_acts)
    pick = torch.linspace(0, zv.shape[0] - 1, min(retrieval_pool, zv.shape[0])).round().long().unique()
    zv, za = zv[pick], za[pick]
    sim = zv @ za.t()
    top1 = float((sim.argmax(dim=1) == torch.arange(sim.shape[0])).float().mean())
    return {"agreement": sum(per_pos) / len(per_pos), "per_position": per_pos, "chance": chance, "samples": count,
            "cosine_positive": float(sim.diag().mean()), "retrieval_top1": top1,
            "retrieval_pool": int(sim.shape[0])}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vd-vae", required=True, type=pathlib.Path, help="trained VD-VAE folder")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="robot LeRobot dataset (use held-out episodes)")
    src.add_argument("--synthetic", type=int, metavar="N", help="N held-out synthetic robot episodes")
    parser.add_argument("--stats", type=pathlib.Path,
                        help="stats.json for synthetic actions (default: VD_VAE/stats.json, the Act-VAE's)")
    parser.add_argument("--seed", type=int, default=31_337, help="seed of the held-out synthetic episodes")
    parser.add_argument("--episode-len", type=int, default=150)
    parser.add_argument("--limit", type=int, help="stop after this many samples")
    parser.add_argument("--json", type=pathlib.Path, help="also write the result here")


def run(args: argparse.Namespace) -> int:
    from clap_train.models.vd_vae import VDVAE
    from clap_train.data.sources import open_dataset

    try:
        model = VDVAE.from_pretrained(args.vd_vae)
        act = model.act_vae.config
        stats_path = args.stats or (args.vd_vae / "stats.json")
        stats = json.loads(stats_path.read_text()) if stats_path.is_file() else None
        from clap_train.data.action_space import load_action_space

        ds, _ = open_dataset(args.dataset, args.synthetic, act.chunk_len, act.chunk_len, model.config.image_size,
                             seed=args.seed, episode_len=args.episode_len, stats=stats,
                             action_space=load_action_space(args.vd_vae))
        result = token_agreement(model, ds, limit=args.limit)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"clap eval token-agreement: {exc}", file=sys.stderr)
        return 2
    print(f"agreement {result['agreement']:.3f} (chance {result['chance']:.3f}) over {result['samples']} samples")
    print("per position: " + " ".join(f"{v:.2f}" for v in result["per_position"]))
    print(f"cosine(z_v,a, E_act(a)) {result['cosine_positive']:.3f}; retrieval top-1 {result['retrieval_top1']:.3f} "
          f"among {result['retrieval_pool']} (chance {1 / result['retrieval_pool']:.3f})")
    if args.json:
        from clap_train.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0
