#!/usr/bin/env python3
"""Torch CPU training beside busy processes: OpenMP's wait policy, measured.

    python bench/busy_machine.py [--steps 300] [--hogs 2] [--out bench/results/busy_machine.json]

A small model's training steps (a 3-layer MLP at the Act-VAE's width, batch 64: operator-bound as
every CLAP stage here is) run in a fresh process per setting, so that OpenMP reads the setting at
start: torch's threads = the usable CPUs, with ``OMP_WAIT_POLICY`` ACTIVE (threads spin while they
wait, what libgomp does first by default), unset (libgomp's default) and PASSIVE (threads sleep);
and one thread. Each runs on a quiet machine and beside ``--hogs``
busy-looping processes (what ``make test`` or a second training is to the demo). Prints steps/s per
setting and each setting's ratio to PASSIVE, measured in this run; writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

STEPS = r"""
import sys, time, torch
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(448, 256), torch.nn.GELU(), torch.nn.Linear(256, 256), torch.nn.GELU(),
                        torch.nn.Linear(256, 448))
opt = torch.optim.AdamW(m.parameters(), 1e-3)
x = torch.randn(64, 448)
def run(n):
    for _ in range(n):
        loss = (m(x) - x).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
run(20)
t = time.perf_counter(); run(int(sys.argv[1])); print(int(sys.argv[1]) / (time.perf_counter() - t))
"""


def rate(steps: int, threads: int, policy: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_NUM_THREADS"] = str(threads)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", STEPS, str(steps)], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    from clap_train.cpus import available_cpus

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--hogs", type=int, default=available_cpus(), help="busy processes beside the training")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results" / "busy_machine.json")
    args = p.parse_args(argv)
    cpus = available_cpus()
    settings = {"ACTIVE": (cpus, "ACTIVE"), "unset": (cpus, None), "PASSIVE": (cpus, "PASSIVE"),
                "one thread": (1, None)}
    result = {"cpus": cpus, "hogs": args.hogs, "steps": args.steps, "steps_per_s": {}}
    for load in ("quiet", "busy"):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)] \
            if load == "busy" else []
        try:
            result["steps_per_s"][load] = {name: round(rate(args.steps, *s), 1) for name, s in settings.items()}
        finally:
            for h in hogs:
                h.kill()
        rates = result["steps_per_s"][load]
        print(f"{load}: " + ", ".join(f"{k} {v:.0f}/s ({v / rates['PASSIVE']:.2f}x PASSIVE)" for k, v in rates.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
