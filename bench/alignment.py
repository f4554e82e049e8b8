"""Video-action alignment on the simulation: CLAP's Table VII, measured on clap_sim (issue 13).

A VD-VAE is trained on robot episodes (images + actions) plus human-look videos (images only: the
arms hidden or recoloured, skin-coloured fingers; clap_sim.human_videos) of the scripted
demonstrations, on top of a trained, frozen per-arm Act-VAE. On held-out robot episodes and held-out
human-look videos (other seeds) its pseudo tokens are compared with the Act-VAE tokens of the true
actions. The human-look videos are scripted, so their true actions are known here, which a real
human video never offers. Each figure comes with its baselines (eval/token_agreement.py): the
independent predictor with the VD-VAE's own token distribution (sum p q) and the per-position
permutation.

    python bench/act_vae_sim_psnr.py --arms 2 --actions relative --out bench/out/act_vae_arm_rel   # first
    python bench/alignment.py --act-vae bench/out/act_vae_arm_rel/nq16_k256/act_vae --lambdas 0.1,0

Each run also renders ``--look-pairs`` seeds per task in the robot look and in both human looks
(``look_pairs``): whether the VD-VAE gives one transition the same latent and tokens in either look.

Runs differ only in lambda_con (``--lambdas``) and share everything else, including the seed. The
rendered frames are stored in OUT/frames.npz and the frozen backbone's features are computed once
per frame; re-running reuses both and every finished run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from clap_train.config import load_config
from clap_train.data.samples.action_space import ActionSpace
from clap_train.eval.token_agreement import compare_latents, format_result
from clap_train.models.act_vae import ActVAE
from clap_train.models.vd_vae import VDVAE
from clap_train.train.loop import Stage, run_loop
from clap_train.train.vd_vae import VDVAETrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
H = 32


def render(task_name: str, seed: int, look: str | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(head frames [T, S, S, 3] uint8, commanded actions [T, 14]) of one scripted episode."""
    from clap_sim.human_videos import apply_look
    from clap_sim.scripted import run_scripted
    from clap_sim.tasks import make_task

    task = make_task(task_name)
    scene = task.make_scene(image_size=size, render=True)
    try:
        if look is not None:
            apply_look(scene, look, np.random.default_rng(10_000 + seed))
        frames: list[np.ndarray] = []
        _, _, _, traj = run_scripted(task, seed, scene=scene,
                                     on_step=lambda k, sc, tr: frames.append(sc.render("head")))
    finally:
        scene.close()
    return np.stack(frames), traj.actions14().astype(np.float64)


SETS = {  # name: (robot look?, seed offset)
    "robot_train": (True, 0), "human_train": (False, 5_000), "robot_heldout": (True, 20_000),
    "human_heldout": (False, 25_000),
}


def episodes(tasks: list[str], counts: dict[str, int], size: int, path: pathlib.Path) -> dict[str, list]:
    """Render (or load from ``path``) every set: name -> list of (frames, actions)."""
    if path.is_file():
        with np.load(path) as f:
            return {name: [(f[f"{name}_{i}_frames"], f[f"{name}_{i}_actions"]) for i in range(int(f[f"{name}_n"]))]
                    for name in SETS}
    out: dict[str, list] = {}
    for name, (robot, offset) in SETS.items():
        jobs = [(t, offset + s) for t in tasks for s in range(counts[name])]
        looks = ("hidden", "recoloured")
        out[name] = [render(t, s, None if robot else looks[s % 2], size)
                     for t, s in tqdm(jobs, desc=f"render {name}", unit="episode")]
    arrays = {f"{n}_n": len(v) for n, v in out.items()}
    for n, v in out.items():
        for i, (fr, ac) in enumerate(v):
            arrays[f"{n}_{i}_frames"], arrays[f"{n}_{i}_actions"] = fr, ac
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return out


class Transitions(Dataset):
    """(o_t, o_{t+H}) pairs of a set of episodes, with cached clean features and the model-space chunk."""

    def __init__(self, eps: list, space: ActionSpace, features: list[torch.Tensor], robot: bool):
        self.eps, self.features, self.robot = eps, features, robot
        self.index = [(e, t) for e, (fr, _) in enumerate(eps) for t in range(len(fr) - H)]
        self.chunks = [torch.as_tensor(np.stack([space.encode(ac[t:t + H], ac[max(t - 1, 0)])
                                                 for t in range(len(fr) - H)])) for fr, ac in eps]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, t = self.index[i]
        frames = self.eps[e][0]
        img = torch.as_tensor(np.stack([frames[t], frames[t + H]])).permute(0, 3, 1, 2).float() / 255.0
        return {"f_t": self.features[e][t].float(), "f_h": self.features[e][t + H].float(), "img_t": img[0],
                "img_h": img[1], "is_robot": torch.tensor(self.robot), "action": self.chunks[e][t]}


class Mixed(Dataset):
    """Robot and human transitions, alternating; sample i is fixed by i (a resumed run sees the same data)."""

    def __init__(self, robot: Transitions, human: Transitions, length: int = 1_000_000):
        self.robot, self.human, self.length = robot, human, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        src = self.robot if i % 2 == 0 else self.human
        return src[int(np.random.default_rng(i).integers(len(src)))]


@torch.no_grad()
def features_of(model: VDVAE, eps: list, batch: int = 256) -> list[torch.Tensor]:
    out = []
    for frames, _ in tqdm(eps, desc="backbone features", unit="episode", leave=False):
        x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0
        out.append(torch.cat([model.features(x[i:i + batch]) for i in range(0, len(x), batch)]).half())
    return out


@torch.no_grad()
def evaluate(model: VDVAE, data: Transitions, batch: int = 256) -> dict:
    model.eval()
    z_v, z_e = [], []
    for i in range(0, len(data), batch):
        items = [data[j] for j in range(i, min(i + batch, len(data)))]
        f_t, f_h = torch.stack([s["f_t"] for s in items]), torch.stack([s["f_h"] for s in items])
        z_v.append(model.inverse(f_t, f_h)[0])
        z_e.append(model.act_vae.encode(torch.stack([s["action"] for s in items])))
    return compare_latents(model.act_vae, torch.cat(z_v), torch.cat(z_e))


@torch.no_grad()
def look_pairs(model: VDVAE, space: ActionSpace, tasks: list[str], seeds: range, size: int) -> dict:
    """The same transitions in the robot look and in each human look (one seed rendered in both).

    Per look: cosine of the backbone features of the same frame; cosine of the feature changes
    f_t+H - f_t at the same t and, as a control, 40 frames apart; cosine of z_v,a between the looks;
    the share of tokens equal in both looks; agreement of each look's tokens with the true ones.
    """
    model.eval()
    cos = torch.nn.functional.cosine_similarity
    rows: dict[str, list] = {"hidden": [], "recoloured": []}
    for task in tasks:
        for seed in seeds:
            looks = {}
            for look in (None, *rows):
                frames, actions = render(task, seed, look, size)
                f = model.features(torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0)
                z = model.inverse(f[:-H], f[H:])[0]
                looks[look] = (f, z, model.act_vae.quantize_frozen(z)[1])
            chunks = np.stack([space.encode(actions[t:t + H], actions[max(t - 1, 0)]) for t in range(len(actions) - H)])
            true = model.act_vae.tokenize(torch.as_tensor(chunks))
            f_r, z_r, tok_r = looks[None]
            d_r = (f_r[H:] - f_r[:-H]).flatten(1)
            for look in rows:
                f_h, z_h, tok_h = looks[look]
                d_h = (f_h[H:] - f_h[:-H]).flatten(1)
                rows[look].append([
                    float(cos(f_r.flatten(1), f_h.flatten(1)).mean()), float(cos(d_r, d_h).mean()),
                    float(cos(d_r, d_h.roll(40, 0)).mean()), float(cos(z_r.flatten(1), z_h.flatten(1)).mean()),
                    float((tok_r == tok_h).float().mean()), float((tok_r == true).float().mean()),
                    float((tok_h == true).float().mean())])
    keys = ("features_cos", "delta_cos_same_t", "delta_cos_shifted", "z_cos", "same_token", "robot_look_agreement",
            "human_look_agreement")
    return {look: dict(zip(keys, np.mean(r, axis=0).round(4).tolist())) for look, r in rows.items()}


def make_stage(model: VDVAE, data: Mixed) -> Stage:
    def loss_fn(m, batch, step):
        student = model.student_features(batch["img_t"], batch["img_h"])
        out = m(batch["f_t"], batch["f_h"], batch["is_robot"], batch["action"], student=student)
        metrics = {k: float(out[k].detach()) for k in ("rec_loss", "con_loss", "tau", "bias")}
        metrics["token_agreement"] = float(out["token_agreement"])
        return out["loss"], metrics

    return Stage(name="vd_vae", model=model, dataset=data, collate_fn=None, loss_fn=loss_fn,
                 param_groups=[{"params": model.trainable_parameters()}],
                 after_step=lambda m, step: m.update_teacher())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--act-vae", type=pathlib.Path, required=True,
                   help="per-arm Act-VAE export (with action_space.json)")
    p.add_argument("--tasks", default="transfer_cube,insertion,coloured_cubes")
    p.add_argument("--robot", type=int, default=20, help="robot training episodes per task")
    p.add_argument("--human", type=int, default=20, help="human-look training videos per task")
    p.add_argument("--heldout", type=int, default=4, help="held-out robot episodes and human videos per task")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lambdas", default="0.1,0", help="lambda_con of each run")
    p.add_argument("--look-pairs", type=int, default=2, help="seeds per task rendered in both looks (0: none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="VD-VAE config overrides for all runs")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "out" / "alignment")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    act = ActVAE.from_pretrained(a.act_vae)
    space = ActionSpace.load(a.act_vae)
    counts = {"robot_train": a.robot, "human_train": a.human, "robot_heldout": a.heldout, "human_heldout": a.heldout}
    eps = episodes(a.tasks.split(","), counts, a.image_size, a.out / f"frames_{a.image_size}.npz")
    print(f"episodes {', '.join(f'{k} {len(v)}' for k, v in eps.items())} ({time.time() - t0:.0f} s)", flush=True)
    results = {}
    for lam in [float(x) for x in a.lambdas.split(",")]:
        cfg = load_config(VDVAETrainConfig, ROOT / "config" / "train" / "vd_vae.yaml", [
            f"model.image_size={a.image_size}", "model.patch_size=8", "model.backbone_hidden=64",
            "model.backbone_layers=2", "model.backbone_heads=4", "model.d_model=64", "model.layers=2",
            "model.decoder_layers=2", "model.heads=4", f"model.lambda_con={lam}", f"loop.steps={a.steps}",
            f"loop.batch_size={a.batch_size}", "loop.lr=1e-3", f"loop.warmup_steps={min(100, a.steps // 10)}",
            "loop.save_every=500", "loop.log_every=20", "loop.device=cpu", *a.set])
        torch.manual_seed(cfg.loop.seed)
        model = VDVAE(cfg.model, act)
        feats = {k: features_of(model, v) for k, v in eps.items()}  # the backbone is frozen: once per frame
        sets = {k: Transitions(v, space, feats[k], k.startswith("robot")) for k, v in eps.items()}
        run_dir = a.out / f"lcon_{lam:g}"
        t1 = time.time()
        run_loop(make_stage(model, Mixed(sets["robot_train"], sets["human_train"])), cfg.loop, run_dir, resume=True)
        train_s = time.time() - t1
        res = {name: evaluate(model, sets[name]) for name in ("robot_heldout", "human_heldout")}
        res["train_seconds"] = round(train_s, 1)
        if a.look_pairs:
            res["look_pairs"] = look_pairs(model, space, a.tasks.split(","), range(40_000, 40_000 + a.look_pairs),
                                           a.image_size)
            for look, v in res["look_pairs"].items():
                print(f"lambda_con {lam:g}, the same transitions in the robot look and {look}: "
                      + ", ".join(f"{k} {x:.3f}" for k, x in v.items()), flush=True)
        results[f"{lam:g}"] = res
        (run_dir / "result.json").write_text(json.dumps(res, indent=1))
        for name in ("robot_heldout", "human_heldout"):
            print(f"lambda_con {lam:g}, {name}: {format_result(res[name])}", flush=True)
    summary = {"command_args": vars(a) | {"act_vae": str(a.act_vae), "out": str(a.out)}, "results": results}
    (a.out / "result.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\n| lambda_con | set | agreement | baseline (sum p q) | ratio | permutation | retrieval top-1 (chance) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for lam, res in results.items():
        for name in ("robot_heldout", "human_heldout"):
            r = res[name]
            print(f"| {lam} | {name} | {r['agreement']:.3f} | {r['baseline']:.3f} | "
                  f"{r['agreement'] / max(r['baseline'], 1e-9):.2f}x | {r['permutation']:.3f} | "
                  f"{r['retrieval_top1']:.3f} ({r['retrieval_chance']:.3f}) |")


if __name__ == "__main__":
    main()
