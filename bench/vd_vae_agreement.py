"""VD-VAE token agreement with the Act-VAE, with and without the contrastive loss (issue 4).

Trains two VD-VAEs that differ only in lambda_con (0.1, the paper's, and 0.0) on synthetic robot +
human episodes, on top of one trained Act-VAE, and measures on held-out synthetic robot episodes
how often the VD-VAE's pseudo token at each position equals the Act-VAE token of the true chunk.

    python bench/vd_vae_agreement.py --act-vae bench/out/act_vae_rd/runs/nq16_k256/act_vae
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from clap_train.eval.token_agreement import token_agreement
from clap_train.models.vd_vae import VDVAE
from clap_train.train import runner, vd_vae as trainer
from clap_train.data.action_space import load_action_space
from clap_train.data.sources import open_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--act-vae", type=pathlib.Path, required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--heldout", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--lambdas", default="0.1,0.0")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra VD-VAE config overrides")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "out" / "vd_vae_agreement")
    a = p.parse_args()
    stats = json.loads((a.act_vae / "stats.json").read_text())
    results = {}
    for lam in [float(x) for x in a.lambdas.split(",")]:
        run_dir = a.out / f"lcon_{lam:g}"
        overrides = [
            f"loop.steps={a.steps}", "loop.batch_size=32", "loop.lr=1e-3",
            f"loop.warmup_steps={min(100, a.steps // 10)}",
            "loop.save_every=500", "loop.log_every=20", f"model.image_size={a.image_size}", "model.patch_size=8",
            "model.backbone_hidden=64", "model.backbone_layers=2", "model.backbone_heads=4", "model.d_model=64",
            "model.layers=2", "model.decoder_layers=2", "model.heads=4", f"model.lambda_con={lam}",
            "feature_cache=true", *a.set,
        ]
        t0 = time.time()
        if not (run_dir / "vd_vae" / "model.safetensors").is_file():
            assert runner.main(trainer.SPEC, [
                "--config", str(ROOT / "config" / "train" / "vd_vae.yaml"), "--run-dir", str(run_dir),
                "--synthetic", str(a.episodes), "--resume", "--set", f"act_vae={a.act_vae}", *overrides]) == 0
        model = VDVAE.from_pretrained(run_dir / "vd_vae")
        ds, _ = open_dataset(None, a.heldout, 32, 32, a.image_size, seed=31_337, stats=stats,
                             action_space=load_action_space(a.act_vae))
        r = token_agreement(model, ds)
        (run_dir / "agreement.json").write_text(json.dumps(r, indent=1))
        results[lam] = r
        print(f"lambda_con={lam:g}: agreement {r['agreement']:.3f} (chance {r['chance']:.3f}, {r['samples']} samples, "
              f"{time.time() - t0:.0f} s)")
        print("  per position: " + " ".join(f"{v:.2f}" for v in r["per_position"]), flush=True)
        print(f"  retrieval top-1 {r['retrieval_top1']:.3f} among {r['retrieval_pool']}", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "agreement.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
