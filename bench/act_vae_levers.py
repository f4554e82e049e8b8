"""Issue 21 item 1: the Act-VAE's levers, one at a time, in dB and in robot units (bench/act_vae_sim_psnr.py).

Every run starts from the best known recipe (per arm, relative actions, Nq 16, K 1024) and changes
one thing: the authors' low-pass on the training chunks, position weighting in the loss, K, the
model's size (``d128``: the large tier's shape at this tier's budget), per arm vs joint, relative vs
absolute; ``pw4_k4096`` then combines the two levers the small tier kept. Two tiers: ``small`` (d_model 64, 1+1
layers, batch 64, 2500 steps: a few CPU minutes a run, the Table V sweep's size) and ``large``
(d_model 128, 2+2 layers, batch 128, 4000 steps: the 36.1 dB run of bench/RESULTS.md, ~71 CPU
minutes). Each run uses one thread (``nice -n 19`` when run by hand); ``--lanes 2`` runs two at a
time. A finished run is reused, a stopped one resumes from its last checkpoint.

    python bench/act_vae_sim_psnr.py --write-episodes bench/out/sim_episodes.npz      # once
    python bench/act_vae_levers.py --tier small --lanes 2          # runs what is missing, then collects
    python bench/act_vae_levers.py --collect                       # only rewrites the tables

Beside the errors, each run's Act-VAE is judged by what CLAP-NTP needs of it: the scripted plans of
``--replay`` held-out seeds per task (from 10,000, the held-out block of act_vae_sim_psnr) replayed
in lock-step through its tokens (``clap_sim.token_replay``: NTP mode with every token right,
temporal ensembling, the node's control path), each chunk encoded at the plan's previous command,
the state these Act-VAEs were trained with (``state="plan"``). Kept in the run's replay.json.

Writes bench/results/act_vae_levers.json (every finished run: held-out dB against the learned
target and against the raw chunk, the robot-unit errors against the raw chunk, CPU minutes, the
curve over checkpoints) and bench/results/act_vae_levers.md. Verdict rule: a lever is ``kept``
when it lowers the position error (mm, the limiting figure) by >= 5 % against its tier's base
without losing more than 0.3 dB; otherwise ``dropped``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "levers"
RESULTS = ROOT / "bench" / "results"
EPISODES = ROOT / "bench" / "out" / "sim_episodes.npz"
REPLAY_TASKS = ("transfer_cube", "insertion", "coloured_cubes")
REPLAY_SEED = 10_000

TIERS = {
    "small": ["--d-model", "64", "--layers", "1", "--batch-size", "64", "--steps", "2500", "--curve-every", "500"],
    "large": ["--d-model", "128", "--layers", "2", "--batch-size", "128", "--steps", "4000", "--curve-every", "1000"],
}
BASE = ["--arms", "2", "--actions", "relative", "--nq", "16", "--k", "1024"]
# name -> (lever, flags that replace the base's); the run directory is bench/out/levers/{tier prefix}_{name}
LEVERS = {
    "base": ("best known recipe: per arm, relative, K 1024", []),
    "lp8": ("authors' low-pass, 8 Hz, 19 taps", ["--lowpass-hz", "8"]),
    "pw4": ("position weight 4 in the loss", ["--position-weight", "4"]),
    "k4096": ("K 4096", ["--k", "4096"]),
    "joint": ("joint 14-D instead of per arm", ["--arms", "1"]),
    "abs": ("absolute instead of relative", ["--actions", "absolute"]),
    "d128": ("model size: d_model 128, 2 + 2 layers", ["--d-model", "128", "--layers", "2"]),
    "pw4_k4096": ("the kept levers together: position weight 4 and K 4096", ["--position-weight", "4", "--k", "4096"]),
}


def flags(tier: str, name: str) -> list[str]:
    merged = dict(zip(BASE[::2], BASE[1::2]))
    merged.update(zip(TIERS[tier][::2], TIERS[tier][1::2]))
    extra = LEVERS[name][1]
    merged.update(zip(extra[::2], extra[1::2]))
    return [x for kv in merged.items() for x in kv]


def run_dir(tier: str, name: str) -> pathlib.Path:
    return OUT / f"{tier[0]}_{name}"


def result_of(tier: str, name: str) -> dict | None:
    found = sorted(run_dir(tier, name).glob("nq*_k*/result.json"))
    return json.loads(found[0].read_text()) if found else None


def train(tier: str, name: str) -> int:
    out = run_dir(tier, name)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "bench" / "act_vae_sim_psnr.py"), "--episodes", str(EPISODES), "--out", str(out),
           *flags(tier, name)]
    with open(out.with_suffix(".log"), "w") as log:
        return subprocess.run(["nice", "-n", "19", *cmd], stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, OMP_NUM_THREADS="1")).returncode


def replay(tier: str, name: str, episodes: int, through_tokens: bool = True) -> dict[str, list[dict]]:
    """Token replay of ``episodes`` held-out seeds per task (cached in the run's replay.json).

    ``through_tokens`` False: the raw plans replayed the same way (the control; OUT/replay_raw.json).
    """
    from clap_sim.tasks import TASKS
    from clap_sim.token_replay import token_replay

    export = sorted(run_dir(tier, name).glob("nq*_k*/act_vae"))[0]
    cache = run_dir(tier, name) / "replay.json" if through_tokens else OUT / "replay_raw.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    for task in REPLAY_TASKS:
        if len(done.get(task, [])) < episodes:
            seeds = list(range(REPLAY_SEED, REPLAY_SEED + episodes))
            done[task] = token_replay(export, TASKS[task](), seeds, through_tokens=through_tokens, state="plan")
            cache.write_text(json.dumps(done, indent=1) + "\n")
    return {task: runs[:episodes] for task, runs in done.items()}


def row(tier: str, name: str, r: dict, episodes: int) -> dict:
    e = r["heldout_errors"]
    replays = replay(tier, name, episodes) if episodes else {}
    return {"tier": tier, "name": name, "lever": LEVERS[name][0], "flags": flags(tier, name),
            "heldout_psnr_db": r["heldout_psnr_db"], "heldout_psnr_raw_db": r["heldout_psnr_raw_db"],
            "psnr_by_group_db": r["heldout_psnr_by_group_db"], "position_mm": e["position mm"],
            "rotation_deg": e["rotation deg"], "gripper_pct": e["gripper %"], "errors": e,
            "cpu_min": r.get("train_cpu_s", float("nan")) / 60, "perplexity": r["perplexity"], "curve": r["curve"],
            "token_replay": {t: sum(x["success"] for x in v) for t, v in replays.items()}, "replay_episodes": episodes,
            "replay_runs": replays}


def verdict(r: dict, base: dict | None) -> str:
    if r["name"] == "base" or base is None:
        return "base" if r["name"] == "base" else "-"
    better = r["position_mm"] <= 0.95 * base["position_mm"]
    return "kept" if better and r["heldout_psnr_raw_db"] >= base["heldout_psnr_raw_db"] - 0.3 else "dropped"


def collect(episodes: int) -> list[dict]:
    rows = [row(t, n, r, episodes) for t in TIERS for n in LEVERS if (r := result_of(t, n)) is not None]
    bases = {r["tier"]: r for r in rows if r["name"] == "base"}
    for r in rows:
        r["verdict"] = verdict(r, bases.get(r["tier"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "act_vae_levers.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| tier | lever | held-out dB (raw chunk) | position / Euler / gripper dB | position mm | rotation deg "
             "| gripper % | token replay (TC / ins / CC) | CPU min | verdict |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        g = r["psnr_by_group_db"]
        lowpassed = abs(r["heldout_psnr_raw_db"] - r["heldout_psnr_db"]) > 0.005
        raw = f" ({r['heldout_psnr_raw_db']:.2f})" if lowpassed else ""
        lines.append(f"| {r['tier']} | {r['lever']} | {r['heldout_psnr_db']:.2f}{raw} | {g['position']:.1f} / "
                     f"{g['euler']:.1f} / {g['gripper']:.1f} | {r['position_mm']:.2f} | {r['rotation_deg']:.2f} | "
                     f"{r['gripper_pct']:.2f} | {replayed(r)} | {r['cpu_min']:.0f} | {r['verdict']} |")
    if episodes and rows:
        raw = replay(rows[0]["tier"], rows[0]["name"], episodes, through_tokens=False)
        lines += ["", "Control: the raw plans replayed the same way, no tokens: " + " / ".join(
            f"{sum(x['success'] for x in raw[t])}/{episodes}" for t in REPLAY_TASKS) + " (TC / ins / CC)."]
    curves = ["", "Curves (held-out dB / position mm / rotation deg / gripper % at each kept checkpoint):", ""]
    for r in rows:
        pts = "; ".join(f"{c['step']}: {c['heldout_psnr_db']:.1f} / {c['position mm']:.2f} / {c['rotation deg']:.2f}"
                        f" / {c['gripper %']:.2f}" for c in r["curve"])
        curves.append(f"- {r['tier']} {r['name']}: {pts}")
    (RESULTS / "act_vae_levers.md").write_text("\n".join(lines + curves) + "\n")
    return rows


def replayed(r: dict) -> str:
    n = r["replay_episodes"]
    return " / ".join(f"{r['token_replay'][t]}/{n}" for t in REPLAY_TASKS) if n else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tier", choices=list(TIERS), default="small")
    p.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    p.add_argument("--lanes", type=int, default=1, help="runs at a time (one thread each)")
    p.add_argument("--collect", action="store_true", help="only collect finished runs into bench/results/")
    p.add_argument("--replay", type=int, default=10, metavar="N",
                   help="token replay of N held-out seeds per task for every run (0: none)")
    a = p.parse_args()
    if not a.collect:
        todo = [n for n in a.levers if result_of(a.tier, n) is None]
        with ThreadPoolExecutor(a.lanes) as pool:
            for name, rc in zip(todo, pool.map(lambda n: train(a.tier, n), todo)):
                print(f"{a.tier} {name}: {'done' if rc == 0 else f'failed ({rc}), see its .log'}", flush=True)
    for r in collect(a.replay):
        print(f"{r['tier']:5} {r['name']:6} {r['heldout_psnr_db']:.2f} dB ({r['heldout_psnr_raw_db']:.2f} raw), "
              f"{r['position_mm']:.2f} mm, {r['rotation_deg']:.2f} deg, {r['gripper_pct']:.2f} %, "
              f"token replay {replayed(r)}, {r['cpu_min']:.0f} CPU min: {r['verdict']}")


if __name__ == "__main__":
    main()
