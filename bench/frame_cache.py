#!/usr/bin/env python3
"""Training input speed: samples/s from the frame cache against decoding H.264 per sample.

    python bench/frame_cache.py                          # records 3 scripted episodes first
    python bench/frame_cache.py --dataset DIR --image-size 64

Reads random samples (three cameras + the future head frame + the action chunk, exactly what a
training step gets) from one process, as the training loop does with ``num_workers: 0``, once
with ``frame_cache=False`` (seek and decode per sample) and once from the cache. Prints both
rates, their ratio measured in this run, and the one-off cache build time, one video file at a
time and one file per usable CPU (their ratio). Goal (issue 12):
>= 2,000 samples/s from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def rate(dataset, n: int, seed: int = 0) -> float:
    idx = np.random.default_rng(seed).integers(0, len(dataset), n)
    dataset[int(idx[0])]  # open readers / map the cache outside the timing
    t0 = time.perf_counter()
    for i in idx:
        dataset[int(i)]
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    from clap_train.cpus import available_cpus
    from clap_train.data.samples.dataset import ClapDataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=pathlib.Path, default=None, help="default: record and convert 3 demos")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--decode-samples", type=int, default=100)
    p.add_argument("--cache-samples", type=int, default=5000)
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "out" / "frame_cache")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ds_root = args.dataset
    if ds_root is None:
        ds_root = args.out / "dataset"
        if not (ds_root / "meta" / "info.json").is_file():
            bags = args.out / "bags"
            shutil.rmtree(bags, ignore_errors=True)
            subprocess.run(["clap", "sim", "record", "--task", "transfer_cube", "--episodes", "3", "--out", str(bags)],
                           check=True)
            subprocess.run(["clap", "convert", str(bags), "--out", str(ds_root)], check=True)
    decoded = ClapDataset(ds_root, image_size=args.image_size, frame_cache=False)
    decode_rate = rate(decoded, args.decode_samples)
    # the build, one video file at a time and then one file per usable CPU, each into a cache of the
    # bench's own, built from scratch (a user's dataset keeps its cache)
    builds = {}
    for threads in (1, available_cpus()):
        os.environ["CLAP_CACHE_DIR"] = str(args.out / f"cache-{threads}")
        shutil.rmtree(args.out / f"cache-{threads}", ignore_errors=True)
        cached = ClapDataset(ds_root, image_size=args.image_size, frame_cache=True, progress=False)
        t0 = time.perf_counter()
        cache = cached.frame_cache(threads=threads)
        builds[threads] = time.perf_counter() - t0
    build_s = builds[max(builds)]
    cache_rate = rate(cached, args.cache_samples)
    result = {"dataset": str(ds_root), "rows": len(cached), "cameras": len(cache.cameras),
              "image_size": args.image_size, "decode_samples_per_s": round(decode_rate, 1),
              "cache_samples_per_s": round(cache_rate, 1), "ratio": round(cache_rate / decode_rate, 1),
              "cache_build_s": round(build_s, 2), "cache_build_frames_per_s":
                  round(len(cached) * len(cache.cameras) / build_s, 1), "goal_samples_per_s": 2000,
              "cache_build_threads": max(builds), "cache_build_one_thread_s": round(builds[1], 2),
              "cache_build_speedup": round(builds[1] / build_s, 2)}
    print(json.dumps(result, indent=1))
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
