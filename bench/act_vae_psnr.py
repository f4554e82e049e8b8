"""Act-VAE reconstruction quality at (Nq, K) on scripted synthetic episodes (goal: >= 40 dB, Table V).

Trains Act-VAEs with config/train/act_vae.yaml sized down for a CPU (overrides below), evaluates
PSNR on held-out episodes (another seed) and writes a Table-V-style table + plot to
bench/out/act_vae_rd/. Usage:

    python bench/act_vae_psnr.py                     # the chosen point only: 16x256
    python bench/act_vae_psnr.py --grid 8x256,16x256,16x128 --steps 3000
"""

from __future__ import annotations

import argparse
import pathlib
import time

from clap_train.eval.rate_distortion import parse_grid, sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="16x256")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--code-dim", type=int, default=32)
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "out" / "act_vae_rd")
    a = p.parse_args()
    overrides = [
        f"loop.steps={a.steps}", f"loop.batch_size={a.batch_size}", "loop.lr=1e-3",
        f"loop.warmup_steps={min(200, a.steps // 10)}",
        "loop.min_lr=2e-5", "loop.save_every=500", f"model.d_model={a.d_model}", f"model.layers={a.layers}",
        f"model.decoder_layers={a.layers}", "model.heads=4",
        f"model.code_dim={a.code_dim}",
    ]
    t0 = time.time()
    points = sweep(parse_grid(a.grid), ROOT / "config" / "train" / "act_vae.yaml", a.out, None, a.episodes,
                   overrides, (16, 256), progress=True)
    print(f"{len(points)} point(s) in {time.time() - t0:.0f} s; table: {a.out / 'rate_distortion.md'}")


if __name__ == "__main__":
    main()
