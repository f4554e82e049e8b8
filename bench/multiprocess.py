"""Samples/s of one training stage with 1 and 2 processes on this machine's CPU (torchrun, gloo).

The same job at the same global batch runs once as 1 process and once as 2 (each then computes
half of every batch); the figure is training samples per second after a warm-up, from the loop's
own ``elapsed_s`` history, and the ratio 2-process / 1-process. On a 2-core machine the ideal is
2.0 (with one torch thread per process). Usage (RESULTS.md has the figures):

    OMP_NUM_THREADS=1 python bench/multiprocess.py                       # act-vae, tiny, batch 64
    python bench/multiprocess.py --stage ntp --config config/train/tiny/ntp.yaml --batch 8 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def samples_per_s(run: pathlib.Path, batch: int, warmup: int) -> float:
    from clap_train.train.checkpoint import latest_checkpoint

    hist = json.loads((latest_checkpoint(run) / "state.json").read_text())["history"]
    a, b = hist[warmup - 1], hist[-1]
    return (b["step"] - a["step"]) * batch / (b["elapsed_s"] - a["elapsed_s"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", default="act-vae")
    p.add_argument("--config", type=pathlib.Path, default=ROOT / "config" / "train" / "tiny" / "act_vae.yaml")
    p.add_argument("--batch", type=int, default=64, help="global batch")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    p.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    p.add_argument("--json", type=pathlib.Path, default=ROOT / "bench" / "out" / "multiprocess.json")
    a = p.parse_args(argv)
    loop = "stage2" if a.stage in ("rf", "post") else "loop"
    result = {"stage": a.stage, "config": str(a.config), "global_batch": a.batch, "steps": a.steps,
              "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            run = pathlib.Path(tmp) / f"p{n}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "clap_train.cli", "train", a.stage, "--config", str(a.config), "--synthetic", "4",
                   "--run-dir", str(run), "--no-progress", "--set", f"{loop}.steps={a.steps}",
                   f"{loop}.batch_size={a.batch}", f"{loop}.save_every={a.steps}", f"{loop}.warmup_steps=0",
                   "synthetic_episode_len=150", *a.set]
            env = dict(os.environ, OMP_NUM_THREADS="1")
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            result[f"samples_per_s_{n}proc"] = samples_per_s(run / ("stage2" if loop == "stage2" else ""), a.batch,
                                                             a.warmup)
    result["ratio"] = result["samples_per_s_2proc"] / result["samples_per_s_1proc"]
    print(f"{a.stage}, global batch {a.batch}: {result['samples_per_s_1proc']:.0f} samples/s with 1 process, "
          f"{result['samples_per_s_2proc']:.0f} with 2; ratio {result['ratio']:.2f} (ideal 2.0 on 2 free cores)")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
