#!/usr/bin/env python3
"""Training speed of every CLAP stage against this machine's measured peak, old code beside new.

    python bench/train_speed.py                          # this tree, configs closed_loop + demo, 1 and 2 threads
    python bench/train_speed.py --baseline bc66c9c       # the same measurements for a git revision, side by side

For each stage (Act-VAE, VD-VAE, CLAP-NTP, CLAP-RF stage 1 and stage 2), config folder and thread
count, a child process builds the stage exactly as ``clap train`` does (the stage's own prepare and
train code, stopped where it hands the Stage to the shared loop) and times ``--steps`` optimiser
steps after ``--warmup``, with the loop's own sampler, collate, loss, backward, gradient clipping
and AdamW. It reports:

- samples/s, and the per-step split: data (dataset + collate), forward (the stage's loss), backward,
  optimiser; inside the forward, the stages' profiler labels (encode, policy_vlm, flow_head,
  km_reference) from ``torch.profiler``; one checkpoint write, amortised over the config's
  ``save_every``;
- FLOPs per sample, counted by ``torch.utils.flop_counter`` over one step (forward + backward);
- the share of the machine's peak: a float32 matmul benchmark (1024 x 1024) at the same thread
  count, run in the same child, so every figure is a ratio within one run;
- why a step is far from that peak: the operator calls per step (``torch.profiler``, nested calls
  included) and the time per call, and what a matmul at the model's own width reaches.

``--baseline REV`` checks REV out into a temporary git worktree and runs every child for it too,
with its ``clap_train`` first on the path (the same data, configs and machine, alternating old and
new), and adds the speed-ups new / old. The data world (4 scripted demonstrations, 4 human-look
videos, converted; a short Act-VAE, VD-VAE, pseudo labels and NTP policy, which the later stages
need) is built once into ``--data``. Results: ``--out`` (JSON) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# stage -> (module of clap_train.train, config file, the Stage's name in the loop)
STAGES = {
    "act_vae": ("act_vae", "act_vae.yaml", "act_vae"),
    "vd_vae": ("vd_vae", "vd_vae.yaml", "vd_vae"),
    "ntp": ("ntp", "ntp.yaml", "ntp"),
    "rf_stage1": ("rf", "rf.yaml", "rf_stage1"),
    "rf_stage2": ("rf", "rf.yaml", "rf_stage2"),
}
LABELS = ("encode", "policy_vlm", "flow_head", "km_reference")


# ------------------------------------------------------------------------------------------- data
def build_data(data: pathlib.Path) -> dict[str, pathlib.Path]:
    """Record, convert and train the inputs every stage needs (once; a finished step is skipped)."""
    tiny = ROOT / "config" / "train" / "tiny"
    paths = {"dataset": data / "dataset", "human": data / "human_dataset", "act_vae": data / "act_vae" / "act_vae",
             "vd_vae": data / "vd_vae" / "vd_vae", "ntp": data / "ntp" / "policy"}
    steps = [
        (data / "bags" / ".done", ["clap", "sim", "record", "--task", "transfer_cube", "--episodes", "4",
                                   "--seed", "0", "--out", str(data / "bags")]),
        (data / "videos" / ".done", ["clap", "sim", "human-videos", "--task", "transfer_cube", "--episodes", "4",
                                     "--seed", "500", "--out", str(data / "videos")]),
        (paths["dataset"] / ".done", ["clap", "convert", str(data / "bags"), "--out", str(paths["dataset"])]),
        (paths["human"] / ".done", ["clap", "convert-videos", str(data / "videos"), "--out", str(paths["human"])]),
        (paths["act_vae"] / "config.json", ["clap", "train", "act-vae", "--config", str(tiny / "act_vae.yaml"),
                                            "--dataset", str(paths["dataset"]), "--run-dir", str(data / "act_vae"),
                                            "--no-progress", "--set", "actions=absolute"]),
        (paths["vd_vae"] / "config.json", ["clap", "train", "vd-vae", "--config", str(tiny / "vd_vae.yaml"),
                                           "--dataset", str(paths["dataset"]), "--human-dataset", str(paths["human"]),
                                           "--run-dir", str(data / "vd_vae"), "--no-progress",
                                           "--set", f"act_vae={paths['act_vae']}"]),
        (paths["human"] / ".labelled", ["clap", "label-videos", "--vd-vae", str(paths["vd_vae"]),
                                        "--dataset", str(paths["human"])]),
        (paths["ntp"] / "policy.json", ["clap", "train", "ntp", "--config", str(tiny / "ntp.yaml"),
                                        "--dataset", str(paths["dataset"]), "--human-dataset", str(paths["human"]),
                                        "--run-dir", str(data / "ntp"), "--no-progress",
                                        "--set", f"act_vae={paths['act_vae']}"]),
    ]
    for marker, cmd in steps:
        if marker.exists():
            continue
        print(f"train_speed: data: {' '.join(cmd[:3])}", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if marker.name in (".done", ".labelled"):
            marker.write_text(f"{time.time()}\n")
    return paths


def stage_argv(stage: str, config: pathlib.Path, paths: dict, run_dir: pathlib.Path,
               sets: list[str] = ()) -> list[str]:
    """The ``clap train`` arguments of ``stage`` on the bench's data (RF starts from its NTP policy)."""
    argv = ["--config", str(config / STAGES[stage][1]), "--dataset", str(paths["dataset"]),
            "--run-dir", str(run_dir), "--no-progress"]
    if stage == "act_vae":
        return argv + ["--set", "actions=absolute", *sets]
    argv += ["--human-dataset", str(paths["human"])]
    if stage == "rf_stage1":
        return argv + ["--set", f"init={paths['ntp']}", *sets]
    if stage == "rf_stage2":
        return argv + ["--set", f"init={paths['ntp']}", "stage1.steps=1", "stage1.warmup_steps=0", *sets]
    return argv + ["--set", f"act_vae={paths['act_vae']}", *sets]


# ------------------------------------------------------------------------------------ measurement
def peak_gflops(threads: int, n: int = 1024, repeats: int = 10, k: int | None = None) -> float:
    """GFLOP/s of an [n, k] x [k, k] float32 matmul (k = n: the machine's peak; small k: a model layer's)."""
    import torch

    torch.set_num_threads(threads)
    k = k or n
    a, b = torch.randn(n, k), torch.randn(k, k)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n * k * k / best / 1e9


def model_width(model) -> int:
    """The most common input width of the model's linear layers (what its matmuls run at)."""
    import collections

    import torch

    widths = collections.Counter(m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    return widths.most_common(1)[0][0] if widths else 0


class _Captured(Exception):
    pass


def capture_stage(stage: str, argv: list[str]):
    """The Stage and LoopConfig that ``clap train`` would hand to the shared loop for ``stage``."""
    from clap_train.train import runner

    module_name, _, name = STAGES[stage]
    mod = importlib.import_module(f"clap_train.train.{module_name}")
    real = mod.run_loop
    got = {}

    def fake(st, config, run_dir, **kw):
        if st.name != name:
            return real(st, config, run_dir, **kw)
        got["stage"], got["config"] = st, config
        raise _Captured

    mod.run_loop = fake
    try:
        with contextlib.suppress(_Captured):
            runner.run(mod.SPEC, runner.parse_args(mod.SPEC, argv))
    finally:
        mod.run_loop = real
    if "stage" not in got:
        raise RuntimeError(f"train_speed: {stage} never reached the training loop")
    return got["stage"], got["config"]


def measure(stage: str, config: pathlib.Path, paths: dict, threads: int, steps: int, warmup: int,
            sets: list[str] = ()) -> dict:
    """Time one stage in this process (see the module docstring)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from clap_train.train.checkpoint import save_checkpoint
    from clap_train.train.loop import StepBatchSampler

    torch.set_num_threads(threads)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="train_speed-"))
    st, lc = capture_stage(stage, stage_argv(stage, config, paths, tmp / "run", sets))
    model = st.model
    model.train()
    groups = st.param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lc.lr, betas=lc.betas)
    batches = iter(StepBatchSampler(len(st.dataset), lc.batch_size, lc.seed, 0, 10 ** 9))
    collate = st.collate_fn or torch.utils.data.default_collate  # the loop's DataLoader default

    def step(i: int) -> list[float]:
        torch.manual_seed(lc.seed * 7_919 + i)
        t0 = time.perf_counter()
        batch = collate([st.dataset[j] for j in next(batches)])
        t1 = time.perf_counter()
        loss, _ = st.loss_fn(model, batch, i)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if lc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), lc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if st.after_step is not None:
            st.after_step(model, i + 1)
        return [t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3]

    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    phases = [step(warmup + i) for i in range(steps)]
    wall = time.perf_counter() - t0
    mean = [sum(p) / steps for p in zip(*phases)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(max(3, steps // 3)):
            step(warmup + steps + i)
    n_prof = max(3, steps // 3)
    events = prof.key_averages()
    labels = {e.key: e.cpu_time_total / n_prof / 1e3 for e in events if e.key in LABELS}
    ops = sum(e.count for e in events if e.key.startswith("aten::")) / n_prof  # operator calls, nested included
    with FlopCounterMode(display=False) as flops:
        step(warmup + steps + n_prof)
    t_ckpt = time.perf_counter()
    save_checkpoint(tmp / "ckpt", 1, model, opt, None, {})
    ckpt_s = time.perf_counter() - t_ckpt
    sps = lc.batch_size * steps / wall
    flops_per_sample = flops.get_total_flops() / lc.batch_size
    peak = peak_gflops(threads)
    width = model_width(model)
    return {
        "stage": stage, "config": config.name, "sets": list(sets), "threads": threads, "batch_size": lc.batch_size,
        "samples_per_s": round(sps, 1), "ms_per_step": round(1e3 * wall / steps, 1),
        "phase_ms": dict(zip(("data", "forward", "backward", "optimizer"), (round(1e3 * m, 2) for m in mean))),
        "label_ms": {k: round(v, 2) for k, v in labels.items()},
        "checkpoint_ms_per_step": round(1e3 * ckpt_s / lc.save_every, 3),
        "gflop_per_sample": round(flops_per_sample / 1e9, 5), "peak_gflops": round(peak, 1),
        "share_of_peak": round(flops_per_sample * sps / 1e9 / peak, 4),
        # why a step is far from the peak: how many operator calls it makes, and what a matmul at the
        # model's own width reaches ([1024, w] x [w, w])
        "aten_ops_per_step": round(ops), "us_per_op": round(1e6 * wall / steps / ops, 1) if ops else None,
        "model_width": width,
        "matmul_gflops_at_model_width": round(peak_gflops(threads, k=width), 1) if width else None,
    }


# ------------------------------------------------------------------------------------------ runs
def child(tree: pathlib.Path | None, args, stage: str, config: pathlib.Path, threads: int, paths: dict) -> dict:
    """One measurement in a fresh process (``tree``: another checkout's clap_train first on the path)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "src" / "clap_train"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--child", stage, "--child-config", str(config), "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--data", str(args.data),
           "--set", *args.set]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"train_speed: {stage} ({config.name}, {threads} threads, "
                           f"{'baseline' if tree else 'this tree'}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


@contextlib.contextmanager
def worktree(rev: str | None):
    if rev is None:
        yield None
        return
    path = pathlib.Path(tempfile.mkdtemp(prefix="train_speed-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


def table(rows: list[dict]) -> str:
    out = ["| stage | config | threads | batch | samples/s | base | speed-up | GFLOP/sample | share of peak | "
           "data / fwd / bwd / opt ms | in fwd: encode / vlm / head / KM ref ms |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        base = r.get("baseline")
        ph, lab = r["phase_ms"], r["label_ms"]
        out.append(
            f"| {r['stage']} | {r['config']} | {r['threads']} | {r['batch_size']} | {r['samples_per_s']:.0f} | "
            f"{base['samples_per_s']:.0f} | {r['samples_per_s'] / base['samples_per_s']:.2f}x | " if base else
            f"| {r['stage']} | {r['config']} | {r['threads']} | {r['batch_size']} | {r['samples_per_s']:.0f} | - | - "
            "| ")
        out[-1] += (f"{r['gflop_per_sample']:.4f} | {100 * r['share_of_peak']:.1f} % of {r['peak_gflops']:.0f} | "
                    f"{ph['data']:.0f} / {ph['forward']:.0f} / {ph['backward']:.0f} / {ph['optimizer']:.0f} | "
                    + " / ".join(f"{lab.get(k, 0):.0f}" for k in LABELS) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--configs", nargs="+", type=pathlib.Path,
                   default=[ROOT / "config" / "train" / "closed_loop", ROOT / "config" / "train" / "demo"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--baseline", default=None, help="git revision to measure beside this tree")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every stage measured (e.g. stage2.batch_size=64)")
    p.add_argument("--data", type=pathlib.Path, default=ROOT / "bench" / "out" / "train_speed" / "data")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results" / "train_speed.json")
    p.add_argument("--child", choices=list(STAGES), help=argparse.SUPPRESS)
    p.add_argument("--child-config", type=pathlib.Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.data = args.data.resolve()
    paths = build_data(args.data)
    if args.child:
        result = measure(args.child, args.child_config, paths, args.threads[0], args.steps, args.warmup, args.set)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    rows = []
    with worktree(args.baseline) as base_tree:
        for config in args.configs:
            for stage in args.stages:
                for threads in args.threads:
                    row = child(None, args, stage, config.resolve(), threads, paths)
                    if base_tree is not None:
                        row["baseline"] = child(base_tree, args, stage, config.resolve(), threads, paths)
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "baseline": args.baseline,
              "load_average_end": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n" + table(rows) + f"\n\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
