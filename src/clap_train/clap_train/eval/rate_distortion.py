"""``clap eval rate-distortion``: the Act-VAE's Table V (paper section V-C1, Eq. 8) and Fig. 5.

For every (Nq, K) of a grid an Act-VAE is trained with the same recipe (``clap train act-vae``'s
config, with ``model.num_queries`` / ``model.codebook_size`` overridden) and measured on held-out
chunks: MSE in normalised units, PSNR = 20 log10(R / sqrt(MSE)) with R = 2 (the range of [-1, 1]),
and the rate of Eq. 8, r = Nq log2 K / (Na Da log2(R / sqrt(MSE))). The paper's Table V numbers are
reproduced with Na = 32 and Da = 7 (per-arm action dimension: e.g. Nq 16, K 256, MSE 0.0004 gives
r = 0.086), so Da defaults to 7; pass ``--rate-dim 14`` for the full action vector.

Beside the dB, ``decoded_errors`` says what a PSNR means on the robot: chunks decoded through the
tokens, denormalised and turned back into robot units by the action space (with each chunk's
state), against the raw recorded chunks: per arm, the RMS of the 3-D position error in mm, the RMS
of the geodesic rotation angle (the angle of R_decoded R_recorded^T, not per Euler angle) in
degrees, and the RMS gripper error in % of the gripper's range (its q01..q99 in the action space's
statistics unless given).

Writes OUT/rate_distortion.md (a Table-V-style markdown table, the chosen row in bold),
OUT/rate_distortion.json and OUT/rate_distortion.png (PSNR against rate, chosen point marked).
Already trained runs are reused (``OUT/runs/nq{Nq}_k{K}/act_vae``), so an interrupted sweep
continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from clap_train.config import ConfigError
from clap_train.data.layout import ARM_WIDTH, ActionLayout
from clap_train.io import atomic_path, atomic_write_text
from clap_train.models.act_vae import ActVAE


@dataclasses.dataclass(frozen=True)
class RDPoint:
    num_queries: int
    codebook_size: int
    mse: float
    psnr: float
    rate: float
    perplexity: float


def psnr_of(mse: float, dynamic_range: float = 2.0) -> float:
    return 20.0 * math.log10(dynamic_range / math.sqrt(max(mse, 1e-20)))


def rate_of(num_queries: int, codebook_size: int, mse: float, chunk_len: int = 32, rate_dim: int = ARM_WIDTH,
            dynamic_range: float = 2.0) -> float:
    """Eq. 8: r = Nq log2 K / (Na Da log2(R / sqrt(MSE)))."""
    return num_queries * math.log2(codebook_size) / (
        chunk_len * rate_dim * math.log2(dynamic_range / math.sqrt(max(mse, 1e-20)))
    )


@torch.no_grad()
def evaluate_per_dim(model: ActVAE, chunks: torch.Tensor, pads: torch.Tensor | None = None,
                     batch_size: int = 512, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Masked reconstruction MSE through the tokens per action dimension [action_dim], and code perplexity.

    ``targets``: what the decoded chunks are compared with, when not the encoded ``chunks`` themselves
    (e.g. the raw chunks of low-passed ones).
    """
    from clap_train.models.quantizer import perplexity_of

    model.eval()
    err_sum = torch.zeros(chunks.shape[-1], device=chunks.device)
    steps, tokens_all = 0.0, []
    for i in range(0, chunks.shape[0], batch_size):
        c = chunks[i : i + batch_size]
        tokens = model.tokenize(c)
        target = c if targets is None else targets[i : i + batch_size]
        err = (model.decode_tokens(tokens) - target).pow(2)
        w = (~pads[i : i + batch_size]).float()[..., None] if pads is not None else torch.ones_like(err[..., :1])
        err_sum += (err * w).sum(dim=(0, 1))
        steps += float(w.sum())
        tokens_all.append(tokens)
    ppl = float(perplexity_of(torch.cat(tokens_all), model.config.codebook_size))
    return err_sum / max(steps, 1.0), ppl


def evaluate(model: ActVAE, chunks: torch.Tensor, pads: torch.Tensor | None = None,
             batch_size: int = 512) -> tuple[float, float]:
    """Masked reconstruction MSE (normalised units) through the tokens, and code perplexity."""
    per_dim, ppl = evaluate_per_dim(model, chunks, pads, batch_size)
    return float(per_dim.mean()), ppl


def decoded_errors(pred: np.ndarray, true: np.ndarray, pad: np.ndarray | None, layout: ActionLayout,
                   gripper_range: float | Sequence[float]) -> dict[str, float]:
    """RMS errors of robot-unit chunks ``pred`` against ``true`` [N, H, D] over unpadded rows.

    Per arm of ``layout`` (``"{arm} position mm"``, ``"{arm} rotation deg"``, ``"{arm} gripper %"``)
    and pooled over the arms (``"position mm"``, ...): position as the 3-D distance, rotation as the
    geodesic angle, gripper in % of ``gripper_range`` (one per arm, or one for all).
    """
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    keep = np.ones(p.shape[:-1], dtype=bool) if pad is None else ~np.asarray(pad, dtype=bool)
    p, t = p[keep], t[keep]
    ranges = np.broadcast_to(np.asarray(gripper_range, dtype=np.float64), (len(layout.arms),))
    sq: dict[str, list[np.ndarray]] = {"position mm": [], "rotation deg": [], "gripper %": []}
    out = {}
    for arm, g_range in zip(layout.arm_slices, ranges):
        rel = Rotation.from_euler("xyz", p[:, arm.euler]) * Rotation.from_euler("xyz", t[:, arm.euler]).inv()
        errs = {"position mm": np.linalg.norm(p[:, arm.position] - t[:, arm.position], axis=1) * 1e3,
                "rotation deg": np.degrees(rel.magnitude()),
                "gripper %": np.abs(p[:, arm.gripper] - t[:, arm.gripper]) / max(float(g_range), 1e-9) * 100}
        for name, e in errs.items():
            out[f"{arm.name} {name}"] = float(np.sqrt(np.mean(e ** 2)))
            sq[name].append(e ** 2)
    out.update({name: float(np.sqrt(np.mean(np.concatenate(v)))) for name, v in sq.items()})
    return out


def gripper_range_of(space) -> list[float]:
    """Each arm's gripper range in an action space's statistics (q99 - q01; grippers are not made relative)."""
    return [float(space.normalizer.high["action"][g] - space.normalizer.low["action"][g]) for _p, _e, g in space.blocks]


@torch.no_grad()
def decode_to_robot(model: ActVAE, space, chunks: torch.Tensor, states: np.ndarray,
                    batch_size: int = 512) -> np.ndarray:
    """Normalised chunks [N, H, D] through the tokens, decoded to robot units at their ``states`` [N, D]."""
    model.eval()
    out = []
    for i in range(0, chunks.shape[0], batch_size):
        c = chunks[i : i + batch_size]
        dec = space.normalizer.unnormalize("action", model.decode_tokens(model.tokenize(c)).double().cpu().numpy())
        out.extend(space.to_robot(d, s) for d, s in zip(dec, states[i : i + batch_size]))
    return np.stack(out)


def heldout_chunks(dataset, limit: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack up to ``limit`` evenly spaced (action, action_pad) items of a contract-3 dataset."""
    from clap_train.data.samples.sources import ActionChunks

    items = ActionChunks(dataset)
    step = max(1, len(items) // limit)
    picked = [items[i] for i in range(0, len(items), step)][:limit]
    return torch.stack([p["action"] for p in picked]), torch.stack([p["action_pad"] for p in picked])


def parse_grid(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        try:
            nq, k = item.lower().split("x")
            out.append((int(nq), int(k)))
        except ValueError:
            raise ConfigError(f"--grid item {item!r}: expected NQxK, e.g. 16x256") from None
    return out


def markdown_table(points: Sequence[RDPoint], chosen: tuple[int, int] | None) -> str:
    lines = ["| Nq | K | MSE | PSNR (dB) | Rate (r) | perplexity |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in points:
        cells = [str(p.num_queries), str(p.codebook_size), f"{p.mse:.5f}", f"{p.psnr:.2f}", f"{p.rate:.3f}",
                 f"{p.perplexity:.1f}"]
        if chosen == (p.num_queries, p.codebook_size):
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(points: Sequence[RDPoint], chosen: tuple[int, int] | None, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([p.rate for p in points], [p.psnr for p in points], color="tab:blue", zorder=2)
    for p in points:
        ax.annotate(f"({p.num_queries},{p.codebook_size})", (p.rate, p.psnr), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
    sel = [p for p in points if chosen == (p.num_queries, p.codebook_size)]
    if sel:
        ax.scatter([sel[0].rate], [sel[0].psnr], s=220, facecolors="none", edgecolors="tab:red", linewidths=2,
                   zorder=3, label=f"chosen Nq={sel[0].num_queries}, K={sel[0].codebook_size}")
        ax.legend(loc="lower right")
    ax.set_xlabel("rate r (Eq. 8)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Act-VAE rate-distortion")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def sweep(grid: Sequence[tuple[int, int]], config: pathlib.Path | None, out: pathlib.Path, dataset: str | None,
          synthetic: int | None, overrides: Sequence[str], chosen: tuple[int, int] | None, rate_dim: int = ARM_WIDTH,
          heldout: int = 16, progress: bool = False) -> list[RDPoint]:
    from clap_train.cli import main as clap
    from clap_train.config import read_yaml
    from clap_train.data.recording.synthetic import synthetic_dataset
    from clap_train.data.samples.sources import open_dataset

    points = []
    eval_chunks = None
    for nq, k in grid:
        run_dir = out / "runs" / f"nq{nq}_k{k}"
        if not (run_dir / "act_vae" / "model.safetensors").is_file():
            # through the command, like a user: eval imports no training module
            argv = ["train", "act-vae", "--run-dir", str(run_dir), "--resume",
                    *(["--config", str(config)] if config is not None else []),
                    *(["--dataset", str(dataset)] if dataset is not None else ["--synthetic", str(synthetic)]),
                    "--set", *overrides, f"model.num_queries={nq}", f"model.codebook_size={k}",
                    *([] if progress else ["--no-progress"])]
            if clap(argv) != 0:
                raise RuntimeError(f"training Nq={nq}, K={k} failed (see {run_dir})")
        model = ActVAE.from_pretrained(run_dir / "act_vae")
        ran = read_yaml(run_dir / "config.yaml")  # the training config as it ran
        chunk_len = int(ran["model"]["chunk_len"])
        if eval_chunks is None:
            from clap_train.data.samples.action_space import load_action_space

            stats = json.loads((run_dir / "act_vae" / "stats.json").read_text())
            space = load_action_space(run_dir / "act_vae")
            if synthetic is not None:  # held-out episodes: another seed, the training normalisation
                path = synthetic_dataset(heldout, seed=int(ran["synthetic_seed"]) + 9_973,
                                         episode_len=ran["synthetic_episode_len"], image_size=None)
                ds = open_dataset(path, chunk_len, images=False, stats=stats, action_space=space)
            else:
                ds = open_dataset(dataset, chunk_len, images=False, action_space=space)
            eval_chunks = heldout_chunks(ds)
        mse, ppl = evaluate(model, *eval_chunks)
        points.append(RDPoint(nq, k, mse, psnr_of(mse), rate_of(nq, k, mse, chunk_len, rate_dim), ppl))
        print(f"Nq={nq} K={k}: MSE {mse:.5f}, PSNR {points[-1].psnr:.2f} dB, r {points[-1].rate:.3f}, "
              f"perplexity {ppl:.1f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "rate_distortion.md", markdown_table(points, chosen))
    atomic_write_text(out / "rate_distortion.json", json.dumps([dataclasses.asdict(p) for p in points], indent=1))
    plot(points, chosen, out / "rate_distortion.png")
    return points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=pathlib.Path, help="Act-VAE training config (YAML)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output folder (table, plot, runs)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="unified LeRobot dataset (evaluated on the same data; use a held-out split)")
    src.add_argument("--synthetic", type=int, metavar="N", help="train on N synthetic episodes, test on held-out ones")
    parser.add_argument("--grid", default="4x256,8x256,12x128,12x256,16x256,20x256",
                        help="comma-separated NQxK points (default: Table V's)")
    parser.add_argument("--chosen", default="16x256", help="the point to highlight (NQxK)")
    parser.add_argument("--rate-dim", type=int, default=ARM_WIDTH,
                        help="Da of Eq. 8 (one arm's values, 7, reproduces Table V)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="training config overrides")
    parser.add_argument("--progress", action="store_true", help="show each training's progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        grid = parse_grid(args.grid)
        chosen = parse_grid(args.chosen)[0] if args.chosen else None
        points = sweep(grid, args.config, args.out, args.dataset, args.synthetic, args.set, chosen, args.rate_dim,
                       progress=args.progress)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"clap eval rate-distortion: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(points, chosen))
    print(f"wrote {args.out / 'rate_distortion.md'} and {args.out / 'rate_distortion.png'}")
    return 0
