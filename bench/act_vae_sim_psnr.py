"""Act-VAE reconstruction quality on the simulation's scripted demonstrations (issue 4's PSNR goal).

The paper's 40 dB at (Nq, K) = (16, 256) is measured on real teleoperation data, whose chunks
repeat a few motion patterns; bench/act_vae_psnr.py's random synthetic episodes are far richer
per chunk than 128 bits can describe. This benchmark uses the data the project's `make demo` and
robot users actually train on: the scripted bimanual demonstrations of clap_sim (transfer cube,
insertion, coloured cubes; the action plans only, no rendering), normalised with q01/q99 like
`clap convert`'s stats. Train seeds 0..N-1, held-out seeds 10_000.. (other cube poses).

    python bench/act_vae_sim_psnr.py --steps 3000
    python bench/act_vae_sim_psnr.py --arms 2 --actions relative --steps 3000   # the authors' per-arm Act-VAE

``--actions relative`` encodes each chunk as OpenCLAP does (data/samples/action_space.py): per arm, the
position as a delta to the state, the rotation relative to the state's, the gripper as it is. The
scripted plans have no measured state, so the state of a chunk starting at t is the command of t-1
(what the robot was last asked to reach). ``--arms 2`` encodes each arm's chunk on its own into
Nq / 2 codes of the shared codebook. ``--grid 4x64,16x256,...`` trains one Act-VAE per point
(Table V) and writes OUT/rate_distortion.{md,json,png}; every point is exported to
OUT/nq{Nq}_k{K}/act_vae, with its result.json, and a finished point is reused.

Beside the dB, every result gives the decoded chunk error in robot units (eval/rate_distortion.py
``decoded_errors``): held-out chunks through the tokens, denormalised and moved back to robot units
at their state, against the RAW demonstrated chunk: RMS position error (mm, 3-D), RMS geodesic
rotation angle (deg), RMS gripper error (% of its range). ``--lowpass-hz 8`` trains on the authors'
low-passed chunks (a zero-phase FIR on the pose dims); its dB are given against both the filtered
chunk it learned and the raw one, its physical errors against the raw one only (what the robot
must do). ``--position-weight W`` weights the position dims' reconstruction error. A checkpoint is
kept and measured every ``--curve-every`` steps (the lever's curve, ``curve`` in result.json), and
``train_cpu_s`` is the process's CPU time spent training (one thread: its core time).

The demonstrations need clap_sim (MuJoCo). For a machine without it (a lent GPU box), write them
to a small file here and train there from it:

    python bench/act_vae_sim_psnr.py --write-episodes bench/out/sim_episodes.npz     # here
    python bench/act_vae_sim_psnr.py --episodes bench/out/sim_episodes.npz --device cuda \
        --steps 20000 --batch-size 1024 --d-model 256 --layers 4                    # there
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import time
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import Dataset

from clap_train.config import load_config
from clap_train.data.samples.action_space import REPRESENTATIONS, ActionSpace, lowpass_chunks
from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.eval.rate_distortion import (RDPoint, decode_to_robot, decoded_errors, evaluate_per_dim,
                                             gripper_range_of, markdown_table, parse_grid, plot, psnr_of, rate_of)
from clap_train.models.act_vae import ActVAE
from clap_train.train import act_vae as trainer
from clap_train.train.checkpoint import load_checkpoint
from clap_train.train.loop import run_loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHUNK = 32


def episodes(task_names: list[str], seeds: range) -> list[np.ndarray]:
    from clap_sim.scripted import scripted_trajectory  # MuJoCo: only where the episodes are made
    from clap_sim.tasks import TASKS

    out = []
    for name in task_names:
        task = TASKS[name]()
        for seed in seeds:
            out.append(scripted_trajectory(task.sample(seed)).actions14().astype(np.float64))
    return out


def save_episodes(path: pathlib.Path, sets: dict[str, list[np.ndarray]], tasks: list[str]) -> None:
    """Episodes of each set as one [sum T, 14] array plus their lengths (a few MB for 330 episodes)."""
    arrays = {"tasks": np.array(tasks)}
    for name, eps in sets.items():
        arrays[name] = np.concatenate(eps).astype(np.float32)
        arrays[f"{name}_lengths"] = np.array([len(e) for e in eps])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_episodes(path: pathlib.Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(task names, training episodes, held-out episodes) of a --write-episodes file."""
    sets = []
    with np.load(path) as f:
        for name in ("train", "heldout"):
            if name not in f:
                raise SystemExit(f"{path}: no '{name}' episodes in this file (written by --write-episodes?)")
            flat, lengths = f[name].astype(np.float64), f[f"{name}_lengths"]
            sets.append(np.split(flat, np.cumsum(lengths)[:-1]))
        names = [str(t) for t in f["tasks"]]
    return names, sets[0], sets[1]


def chunks(eps: list[np.ndarray], lowpass_hz: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (t, t+32) window of every episode, with its state.

    Windows are padded past the end by repeating the last action; the state is the command of t-1
    (the first command at t = 0). ``lowpass_hz`` > 0: the chunks low-passed as the authors do.
    """
    acts, pads, states = [], [], []
    for a in eps:
        n = len(a)
        if lowpass_hz:
            acts.append(lowpass_chunks(a, CHUNK, DEFAULT_LAYOUT.euler_indices, cutoff_hz=lowpass_hz))
        else:
            acts.append(a[np.minimum(np.arange(n)[:, None] + np.arange(CHUNK)[None, :], n - 1)])
        pads.append(np.arange(n)[:, None] + np.arange(CHUNK)[None, :] > n - 1)
        states.append(a[np.maximum(np.arange(n) - 1, 0)])
    return np.concatenate(acts), np.concatenate(pads), np.concatenate(states)


class Chunks(Dataset):
    def __init__(self, actions: np.ndarray, pads: np.ndarray):
        self.actions = torch.as_tensor(actions, dtype=torch.float32)
        self.pads = torch.as_tensor(pads)

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"action": self.actions[i], "action_pad": self.pads[i]}


GROUPS = {"position": DEFAULT_LAYOUT.indices("x", "y", "z"), "euler": DEFAULT_LAYOUT.euler_indices,
          "gripper": DEFAULT_LAYOUT.gripper_indices}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="transfer_cube,insertion,coloured_cubes")
    p.add_argument("--train-seeds", type=int, default=100, help="episodes per task for training")
    p.add_argument("--heldout-seeds", type=int, default=10, help="episodes per task held out")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--nq", type=int, default=16)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--grid", help="NQxK,... (e.g. 4x64,16x256): a Table V sweep with its plot, instead of --nq/--k")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--code-dim", type=int, default=32)
    p.add_argument("--arms", type=int, default=1, help="2: encode each arm's chunk on its own (Nq / 2 codes each)")
    p.add_argument("--actions", choices=REPRESENTATIONS, default="absolute", help="action representation")
    p.add_argument("--lowpass-hz", type=float, default=0.0,
                   help="train on chunks low-passed at this cut-off (the authors': 8; 0: raw chunks)")
    p.add_argument("--position-weight", type=float, default=1.0, help="weight of the position dims in the loss")
    p.add_argument("--curve-every", type=int, default=1000, help="keep and measure a checkpoint every N steps")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: leaves a core to other jobs)")
    p.add_argument("--episodes", type=pathlib.Path, help="train from this file instead of running clap_sim")
    p.add_argument("--write-episodes", type=pathlib.Path, help="write the episodes to this file and stop")
    p.add_argument("--checkpoint", type=int, metavar="STEP",
                   help="measure the run's stored checkpoint of this step instead of training (same flags as the run)")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "out" / "act_vae_sim")
    a = p.parse_args()
    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    names = a.tasks.split(",")
    t0 = time.time()
    if a.episodes:
        names, train_eps, test_eps = load_episodes(a.episodes)
    else:
        train_eps = episodes(names, range(a.train_seeds))
        test_eps = episodes(names, range(10_000, 10_000 + a.heldout_seeds))
    if a.write_episodes:
        save_episodes(a.write_episodes, {"train": train_eps, "heldout": test_eps}, names)
        print(f"{len(train_eps)} + {len(test_eps)} episodes -> {a.write_episodes}")
        return
    train_a, train_p, train_s = chunks(train_eps, a.lowpass_hz)
    test_a, test_p, test_s = chunks(test_eps, a.lowpass_hz)
    test_raw = chunks(test_eps)[0]  # what the robot must do, whatever the Act-VAE learned
    space = ActionSpace.fit(a.actions, train_s, train_a, train_p, DEFAULT_LAYOUT.euler_indices)
    train_a, test_a = space.to_model(train_a, train_s), space.to_model(test_a, test_s)

    def norm(x):
        return np.clip(space.normalizer.normalize("action", x), -1.5, 1.5)

    heldout = SimpleNamespace(chunks=norm(test_a), pads=test_p, states=test_s, raw=test_raw,
                              raw_norm=norm(space.to_model(test_raw, test_s)))

    print(f"{len(train_a)} training chunks, {len(test_a)} held-out chunks ({time.time() - t0:.1f} s)", flush=True)
    grid = parse_grid(a.grid) if a.grid else [(a.nq, a.k)]
    points = []
    for nq, k in grid:
        figures = train_point(a, nq, k, space, norm(train_a), train_p, heldout)
        figures["tasks"] = names
        points.append(RDPoint(nq, k, figures["heldout_mse"], figures["heldout_psnr_db"], figures["rate"],
                              figures["perplexity"]))
        print(json.dumps(figures, indent=1))
        print(f"Act-VAE ({nq}, {k}) on scripted sim demonstrations: held-out PSNR {figures['heldout_psnr_db']:.2f} dB "
              f"(goal >= 40 dB), MSE {figures['heldout_mse']:.6f}, rate {figures['rate']:.3f}; "
              f"decoded vs raw: {summary(figures['heldout_errors'])} (goal <= 3 mm, 1 deg, 2 %); "
              f"{math.ceil(figures['train_seconds'])} s training", flush=True)
    if len(points) > 1:  # Table V and its elbow plot
        chosen = (16, 256) if (16, 256) in grid else None
        (a.out / "rate_distortion.md").write_text(markdown_table(points, chosen))
        (a.out / "rate_distortion.json").write_text(json.dumps([dataclasses.asdict(p) for p in points], indent=1))
        plot(points, chosen, a.out / "rate_distortion.png")
        print(markdown_table(points, chosen))


def summary(errors: dict[str, float]) -> str:
    return f"{errors['position mm']:.2f} mm, {errors['rotation deg']:.2f} deg, gripper {errors['gripper %']:.2f} %"


def measure(model: ActVAE, space: ActionSpace, heldout, nq: int, k: int) -> dict:
    """Held-out figures of the model as it is: dB (against its target and the raw chunk) and robot-unit errors."""
    device = next(model.parameters()).device
    test_chunks = torch.as_tensor(heldout.chunks, dtype=torch.float32, device=device)
    test_pads = torch.as_tensor(heldout.pads, device=device)
    per_dim, ppl = evaluate_per_dim(model, test_chunks, test_pads)
    mse = float(per_dim.mean())
    by_group = {name: float(per_dim[idx].mean()) for name, idx in GROUPS.items()}  # what limits the PSNR
    raw = torch.as_tensor(heldout.raw_norm, dtype=torch.float32, device=device)
    raw_mse = float(evaluate_per_dim(model, test_chunks, test_pads, targets=raw)[0].mean())
    decoded = decode_to_robot(model, space, test_chunks, heldout.states)
    return {"heldout_mse": mse, "heldout_psnr_db": psnr_of(mse), "heldout_psnr_raw_db": psnr_of(raw_mse),
            "rate": rate_of(nq, k, mse), "perplexity": ppl,
            "heldout_mse_by_group": by_group, "heldout_psnr_by_group_db": {g: psnr_of(v) for g, v in by_group.items()},
            "heldout_errors": decoded_errors(decoded, heldout.raw, heldout.pads, DEFAULT_LAYOUT,
                                             gripper_range_of(space))}


def train_point(a, nq: int, k: int, space: ActionSpace, train_a, train_p, heldout) -> dict:
    """Train (or resume) the Act-VAE (Nq, K) in OUT/nq{Nq}_k{K}, export it there (act_vae/) and measure it."""
    cfg = load_config(trainer.ActVAETrainConfig, ROOT / "config" / "train" / "act_vae.yaml", [
        f"loop.steps={a.steps}", f"loop.batch_size={a.batch_size}", f"loop.lr={a.lr}", f"model.code_dim={a.code_dim}",
        f"loop.warmup_steps={min(200, a.steps // 10)}", "loop.min_lr=2e-5", f"loop.save_every={a.curve_every}",
        "loop.keep_last=0",
        f"model.d_model={a.d_model}", f"model.layers={a.layers}", f"model.decoder_layers={a.layers}",
        "model.heads=4", f"model.num_queries={nq}", f"model.codebook_size={k}", f"loop.device={a.device}",
        f"model.arms={a.arms}", f"actions={a.actions}", f"model.position_weight={a.position_weight}",
    ])
    model = ActVAE(cfg.model)
    stage = trainer.make_stage(model, Chunks(train_a, train_p), cfg)
    run_dir = a.out / f"nq{nq}_k{k}"
    run_dir.mkdir(parents=True, exist_ok=True)
    space.save(run_dir)
    t1, c1 = time.time(), time.process_time()
    if a.checkpoint is not None:  # a mid-run point of a finished or stopped run: measure, do not train
        state = load_checkpoint(run_dir / "checkpoints" / f"step-{a.checkpoint:08d}", model)
        result = SimpleNamespace(history=state.get("history", []))
    else:
        result = run_loop(stage, cfg.loop, run_dir, resume=True)
    train_s, train_cpu = time.time() - t1, time.process_time() - c1
    device = next(model.parameters()).device
    train_psnr = result.history[-1].get("psnr", float("nan")) if result.history else float("nan")
    figures = {"train_chunks": len(train_a), "heldout_chunks": len(heldout.chunks), "nq": nq, "k": k,
               "steps": a.steps, "batch_size": a.batch_size, "arms": a.arms, "actions": a.actions,
               "d_model": a.d_model, "layers": a.layers, "lr": a.lr, "code_dim": a.code_dim,
               "lowpass_hz": a.lowpass_hz, "position_weight": a.position_weight,
               "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "train_seconds": round(train_s, 1), "train_cpu_s": round(train_cpu, 1),
               "last_train_batch_psnr_db": train_psnr}
    if a.checkpoint is not None:
        figures["checkpoint_step"] = a.checkpoint
        figures.update(measure(model, space, heldout, nq, k))
        (run_dir / f"result_step{a.checkpoint}.json").write_text(json.dumps(figures, indent=1))
        return figures
    curve = []  # every kept checkpoint, measured; the last one is the trained model
    for step in sorted(int(c.name.split("-")[1]) for c in (run_dir / "checkpoints").glob("step-*")):
        load_checkpoint(run_dir / "checkpoints" / f"step-{step:08d}", model)
        point = measure(model, space, heldout, nq, k)
        curve.append({"step": step, "heldout_psnr_db": point["heldout_psnr_db"],
                      "heldout_psnr_raw_db": point["heldout_psnr_raw_db"], **point["heldout_errors"]})
        print(f"  step {step}: {point['heldout_psnr_db']:.2f} dB, {summary(point['heldout_errors'])}", flush=True)
    figures.update(point, curve=curve)
    model.save_pretrained(run_dir / "act_vae")  # for the VD-VAE (bench/alignment.py)
    space.save(run_dir / "act_vae")
    (run_dir / "result.json").write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
