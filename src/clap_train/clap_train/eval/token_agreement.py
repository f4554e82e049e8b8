"""``clap eval token-agreement``: VD-VAE tokens of robot transitions against the Act-VAE's.

For robot samples (o_t, o_{t+H}, a_t..a_{t+H-1}) the VD-VAE's pseudo tokens of the images are
compared, position by position, with the Act-VAE tokens of the true chunk (``agreement_stats``).
Only chunks without padding are counted. Against what:

- ``baseline``: a predictor that ignores its input but keeps the VD-VAE's own token distribution
  q_j at position j agrees with the true tokens (distribution p_j) with probability
  sum_k p_jk q_jk. That is the level to beat, not sum_k p_jk^2 (the rate at which two Act-VAE
  tokens collide, reported as ``collision`` for reference): a VD-VAE that always says the same
  token scores p_j(that token), which can sit far above or below sum p^2.
- ``permutation``: the VD-VAE's tokens shuffled across samples, per position (the same
  distribution, the link to the sample broken), averaged over ``permutations`` shuffles; it
  estimates ``baseline`` from the data and shows its spread.

Also reports what the contrastive loss optimises: top-1 retrieval of a transition's true chunk
among a pool of ``retrieval_pool`` samples (``retrieval_chance``: the hit rate of a random
pick), by cosine between the VD-VAE's quantised latents and the Act-VAE's quantised encodings
of the pool, per arm with a per-arm Act-VAE, and the mean cosine of the positives.
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


def agreement_stats(predicted: torch.Tensor, true: torch.Tensor, num_codes: int, permutations: int = 20,
                    seed: int = 0) -> dict[str, object]:
    """Agreement of ``predicted`` with ``true`` tokens [N, Nq] and the two baselines of the module doc."""
    if predicted.shape != true.shape or predicted.dim() != 2 or predicted.shape[0] == 0:
        raise ValueError(f"need two non-empty [N, Nq] token tensors of one shape, got {tuple(predicted.shape)} "
                         f"and {tuple(true.shape)}")
    n, nq = true.shape
    per_pos = (predicted == true).float().mean(0)
    baseline, collision = torch.zeros(nq), torch.zeros(nq)
    for j in range(nq):
        p = torch.bincount(true[:, j], minlength=num_codes).float() / n
        q = torch.bincount(predicted[:, j], minlength=num_codes).float() / n
        baseline[j], collision[j] = (p * q).sum(), (p * p).sum()
    g = torch.Generator().manual_seed(seed)
    perm = []
    for _ in range(permutations):
        idx = torch.argsort(torch.rand(n, nq, generator=g), dim=0)  # one shuffle per position
        perm.append(float((torch.gather(predicted, 0, idx) == true).float().mean()))
    perm_t = torch.tensor(perm)
    return {"agreement": float(per_pos.mean()), "per_position": per_pos.tolist(), "baseline": float(baseline.mean()),
            "baseline_per_position": baseline.tolist(), "permutation": float(perm_t.mean()),
            "permutation_std": float(perm_t.std()) if permutations > 1 else 0.0,
            "collision": float(collision.mean()), "samples": n}


def retrieval_stats(anchors: torch.Tensor, positives: torch.Tensor, groups: int = 1, pool: int = 256) -> dict:
    """Top-1 retrieval of each anchor's own positive among ``pool`` evenly spaced samples, per group of positions.

    Neighbouring frames have near-identical chunks: the pool is drawn evenly across all samples. Quantised
    positives repeat; a retrieval counts when the retrieved positive equals the anchor's own, and
    ``retrieval_chance`` is the hit rate of picking a pool member at random (1 / pool without repeats).
    """
    n = anchors.shape[0]
    pick = torch.linspace(0, n - 1, min(pool, n)).round().long().unique()
    a = F.normalize(anchors[pick].reshape(len(pick), groups, -1).float(), dim=-1).transpose(0, 1)
    p = F.normalize(positives[pick].reshape(len(pick), groups, -1).float(), dim=-1).transpose(0, 1)
    sim = a @ p.transpose(1, 2)  # [G, pool, pool]
    same = (p[:, :, None, :] - p[:, None, :, :]).abs().amax(dim=-1) < 1e-6  # [G, pool, pool]: equal positives
    best = sim.argmax(dim=2)  # [G, pool]
    top1 = torch.gather(same, 2, best[..., None])[..., 0].float().mean(dim=1)
    return {"retrieval_top1": float(top1.mean()), "retrieval_top1_per_group": top1.tolist(),
            "retrieval_chance": float(same.float().mean()),
            "cosine_positive": float(sim.diagonal(dim1=1, dim2=2).mean()), "retrieval_pool": int(len(pick))}


@torch.no_grad()
def vd_and_true_latents(model, dataset, batch_size: int = 64, limit: int | None = None):
    """(VD-VAE latents z_v,a, Act-VAE latents E_act(a)) [N, Nq, D] of the unpadded robot samples of ``dataset``."""
    from clap_train.data.samples.dataset import collate_samples

    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_samples)
    z_vs, z_es, count = [], [], 0
    for batch in loader:
        keep = ~batch["action_pad"].any(dim=1) & batch["is_robot"].bool()
        if not bool(keep.any()):
            continue
        f_t, f_h = model.features(batch["images"]["head"][keep]), model.features(batch["future_head"][keep])
        z_vs.append(model.inverse(f_t, f_h)[0])
        z_es.append(model.act_vae.encode(batch["action"][keep]))
        count += int(keep.sum())
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise ValueError("no unpadded robot samples to compare")
    return torch.cat(z_vs), torch.cat(z_es)


def compare_latents(act_vae, z_v: torch.Tensor, z_e: torch.Tensor, retrieval_pool: int = 256) -> dict[str, object]:
    """Token agreement (with its baselines) and retrieval of VD-VAE latents against true Act-VAE latents."""
    codebook = act_vae.codebook.weight
    vd, true = nearest_codes(z_v, codebook), nearest_codes(z_e, codebook)
    out = agreement_stats(vd, true, act_vae.config.codebook_size)
    out.update(retrieval_stats(F.embedding(vd, codebook), F.embedding(true, codebook), act_vae.config.arms,
                               retrieval_pool))
    return out


def token_agreement(model, dataset, batch_size: int = 64, limit: int | None = None,
                    retrieval_pool: int = 256) -> dict[str, object]:
    """``compare_latents`` of a VD-VAE on the robot samples of ``dataset``."""
    z_v, z_e = vd_and_true_latents(model, dataset, batch_size, limit)
    return compare_latents(model.act_vae, z_v, z_e, retrieval_pool)


def format_result(r: dict) -> str:
    ratio = r["agreement"] / max(r["baseline"], 1e-9)
    return (f"agreement {r['agreement']:.3f} = {ratio:.2f}x the independent baseline {r['baseline']:.3f} "
            f"(permutation {r['permutation']:.3f} +- {r['permutation_std']:.3f}; Act-VAE collision "
            f"{r['collision']:.3f}) over {r['samples']} samples\n"
            f"per position: {' '.join(f'{v:.2f}' for v in r['per_position'])}\n"
            f"retrieval top-1 {r['retrieval_top1']:.3f} among {r['retrieval_pool']} (chance "
            f"{r['retrieval_chance']:.3f}); cosine of positives {r['cosine_positive']:.3f}")


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
    from clap_train.data.recording.synthetic import synthetic_dataset
    from clap_train.data.samples.action_space import load_action_space
    from clap_train.data.samples.sources import open_dataset
    from clap_train.models.vd_vae import VDVAE

    try:
        model = VDVAE.from_pretrained(args.vd_vae)
        act = model.act_vae.config
        stats_path = args.stats or (args.vd_vae / "stats.json")
        stats = json.loads(stats_path.read_text()) if stats_path.is_file() else None
        path = args.dataset
        if args.synthetic is not None:  # held-out episodes, normalised as the Act-VAE's training data
            path = synthetic_dataset(args.synthetic, seed=args.seed, episode_len=args.episode_len,
                                     image_size=model.config.image_size)
        ds = open_dataset(path, act.chunk_len, act.chunk_len, model.config.image_size,
                          stats=stats if args.synthetic is not None else None,
                          action_space=load_action_space(args.vd_vae))
        result = token_agreement(model, ds, limit=args.limit)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"clap eval token-agreement: {exc}", file=sys.stderr)
        return 2
    print(format_result(result))
    if args.json:
        from clap_train.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0
