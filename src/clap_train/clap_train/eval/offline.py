r"""``clap eval offline``: a policy's chunks against recorded ones, without a simulator or a robot.

    clap eval offline --policy runs/rf/policy --dataset /data/heldout_ds --out runs/offline

For frames of the dataset's episodes (every ``--stride``-th frame), the policy predicts a chunk
from the recorded cameras, instruction and state (``ClapPolicy.predict``, RF and NTP). The error
against the recorded chunk, in robot units, is reported per dimension group (per arm: position
in mm, rotation in degrees as the angle of the relative rotation, gripper in its own units)
beside two baselines that see no image:

* ``mean chunk``: the average recorded chunk of the dataset in the policy's action space (for a
  relative policy, the average motion from the current state), the best prediction that ignores
  the observation; fitted on the evaluated data itself, so it is a generous baseline;
* ``hold state``: every row equal to the current state (the robot stops).

A policy that has learned something beats both; an untrained one does not. In NTP mode the
action tokens themselves are scored too: per token position, how often the predicted token is the
Act-VAE's token of the recorded chunk (``ntp_token_accuracy_per_position``), beside the accuracy
of always answering that position's most frequent recorded token (``majority_token_accuracy``), and the
decoded subtask text against the recorded one (``ntp_subtask_accuracy``, exact match, beside always answering
the most frequent recorded subtask; the action tokens follow the subtask the policy wrote). The same errors on
each episode's first frame alone are reported apart: there the robot is at rest, so only the
images tell where to go, and a policy that maps the state to the action without looking
(copycat) shows it there. Where the dataset names subtasks, the errors are also given per phase
(the frame's recorded subtask: reach, grasp, lift, ...), to find the phase where a policy fails.

The compounding check feeds the policy its own outputs: from a start frame, the policy's chunk
is executed for ``--replan-every`` ticks, and the state of the next prediction is the recorded
state moved by the gap between the last executed command and the recorded one (the robot
follows commands with the recording's own tracking lag); the images stay the recorded ones.
After 1, 2 and 3 s the gap between the executed commands and the recorded ones is reported. A
policy that only replays the demonstration from demonstrated states drifts off here.

Writes ``offline.json``, ``offline.md`` (the table) and ``offline.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from scipy.spatial.transform import Rotation

from clap_train.data.layout import ActionLayout
from clap_train.data.rotations import nearest_branch

BASELINES = ("mean chunk", "hold state")


def group_errors(pred: np.ndarray, true: np.ndarray, pad: np.ndarray, layout: ActionLayout) -> dict[str, float]:
    """Mean errors per arm of ``layout`` over unpadded rows: position (mm), rotation (deg), gripper."""
    keep = ~np.asarray(pad, dtype=bool)
    p, t = np.asarray(pred, dtype=np.float64)[keep], np.asarray(true, dtype=np.float64)[keep]
    out = {}
    for arm in layout.arm_slices:
        pos, eul, grip = arm.position, arm.euler, arm.gripper
        out[f"{arm.name} position mm"] = float(np.linalg.norm(p[:, pos] - t[:, pos], axis=1).mean() * 1e3)
        rel = Rotation.from_euler("xyz", p[:, eul]) * Rotation.from_euler("xyz", t[:, eul]).inv()
        out[f"{arm.name} rotation deg"] = float(np.degrees(rel.magnitude()).mean())
        out[f"{arm.name} gripper"] = float(np.abs(p[:, grip] - t[:, grip]).mean())
    return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def evaluate_offline(policy, dataset, *, modes=("rf", "ntp"), stride: int = 8, episodes=None,
                     compounding_starts: int = 3, replan_every: int = 8, horizon_s: float = 3.0,
                     progress: bool = True) -> dict:
    """The offline report of ``policy`` (a ClapPolicy) on ``dataset`` (a robot ClapDataset)."""
    from tqdm.auto import tqdm

    space = policy.space
    layout = policy.layout
    eps = sorted(set(int(e) for e in dataset._ep)) if episodes is None else list(episodes)
    frames = [i for i in range(len(dataset)) if int(dataset._ep[i]) in eps and int(dataset._frame[i]) % stride == 0]
    if not frames:
        raise ValueError("no frames to evaluate (check --episodes and --stride)")
    cache = dataset.frame_cache()
    cams = [c for c in policy.camera_names if c in cache.cameras]

    def observation(i: int) -> dict[str, np.ndarray]:
        return {c: cache.frame(c, i) for c in cams}

    # mean chunk in the policy's space, over the evaluated frames
    raws = [dataset.raw(i) for i in frames]
    model = np.stack([space.to_model(ch, st) for st, ch, _ in raws])
    keep = ~np.stack([pad for _, _, pad in raws])
    mean_model = np.where(keep[..., None], model, 0).sum(0) / np.maximum(keep.sum(0), 1)[:, None]
    instr = {i: dataset.tasks[dataset._task[i]] if dataset.tasks else "" for i in frames}

    rows: dict[str, list[dict[str, float]]] = {m: [] for m in (*modes, *BASELINES)}
    first: dict[str, list[dict[str, float]]] = {m: [] for m in rows}
    by_phase: dict[str, dict[str, list[dict[str, float]]]] = {}  # recorded subtask -> predictor -> rows
    norm_mse: dict[str, list[float]] = {m: [] for m in rows}
    tokens: dict[str, list[np.ndarray]] = {"predicted": [], "recorded": []}
    subtasks: dict[str, list] = {"predicted": [], "recorded": [], "first": []}
    for i, (state, chunk, pad) in zip(tqdm(frames, desc="offline chunks", disable=not progress), raws):
        preds = {"mean chunk": space.to_robot(mean_model, state),
                 "hold state": np.repeat(state[None], len(chunk), axis=0)}
        true_n = space.encode(chunk, state)
        is_first = int(dataset._frame[i]) == 0
        phase = by_phase.setdefault(dataset.subtasks[dataset._subtask[i]].strip(), {m: [] for m in rows}) \
            if dataset.subtasks else None
        for m in modes:
            out = policy.predict(observation(i), instr[i], state, mode=m, seed=i)
            preds[m] = np.asarray(out.actions, dtype=np.float64)
            if m == "ntp" and out.tokens is not None:
                tokens["predicted"].append(np.asarray(out.tokens))
                tokens["recorded"].append(recorded_tokens(policy, true_n))
                if dataset.subtasks:
                    subtasks["predicted"].append(out.subtask.strip())
                    subtasks["recorded"].append(dataset.subtasks[dataset._subtask[i]].strip())
                    subtasks["first"].append(is_first)
        for name, pred in preds.items():
            # the prediction on the true chunk's Euler branch, so angle differences are small ones
            pred = _match_branch(pred, chunk, space.euler_indices)
            rows[name].append(group_errors(pred, chunk, pad, layout))
            if is_first:
                first[name].append(rows[name][-1])
            if phase is not None:
                phase[name].append(rows[name][-1])
            err = (space.encode(pred, state) - true_n)[~pad]
            norm_mse[name].append(float(np.mean(err ** 2)))

    # compounding: the policy's own outputs become its state
    dt = 1.0 / policy.rate_hz
    ticks = int(round(horizon_s / dt))
    span = -(-ticks // replan_every) * replan_every  # ticks the predictions cover
    drift: dict[str, list[list[float]]] = {m: [] for m in modes}
    starts = []
    for e in eps:
        idx = [i for i in range(len(dataset)) if int(dataset._ep[i]) == e]
        n = len(idx)
        if n <= span + 1:
            continue
        for s in np.linspace(0, n - span - 1, compounding_starts).round().astype(int):
            starts.append(idx[int(s)])
    grip = layout.gripper_indices
    for m in modes:
        for i0 in tqdm(starts, desc=f"compounding ({m})", disable=not progress):
            state = dataset.raw(i0)[0]
            traj = []
            for k in range(0, ticks, replan_every):
                i = i0 + k
                pred = policy.predict(observation(i), instr.get(i, instr[frames[0]]), state, mode=m, seed=i).actions
                run = _match_branch(np.asarray(pred, dtype=np.float64)[:replan_every], dataset.raw(i)[1][:replan_every],
                                    space.euler_indices)
                traj.extend(run)
                # the robot follows the commands with the recording's own lag: its next state is the
                # recorded one, moved by how far the last command is from the recorded command
                j = i + len(run)
                deviation = run[-1] - dataset.raw(j - 1)[1][0]
                deviation[grip] = 0.0
                state = dataset.raw(j)[0] + deviation
            traj = np.asarray(traj[:ticks])
            recorded = np.stack([dataset.raw(i0 + k)[1][0] for k in range(ticks)])
            drift[m].append([float(np.mean([np.linalg.norm(traj[k, a.position] - recorded[k, a.position])
                                            for a in layout.arm_slices]) * 1e3) for k in range(ticks)])
    seconds = [s for s in (1.0, 2.0, 3.0) if s <= horizon_s]
    compounding = {m: {f"{s:.0f} s": float(np.mean([d[int(round(s / dt)) - 1] for d in drift[m]])) for s in seconds}
                   for m in modes if drift[m]}
    return {
        **token_accuracy(tokens["predicted"], tokens["recorded"]),
        **subtask_accuracy(subtasks["predicted"], subtasks["recorded"], subtasks["first"]),
        "frames": len(frames), "episodes": eps, "stride": stride, "representation": space.representation,
        "errors": {name: _mean(r) for name, r in rows.items()},
        "first_frame_errors": {name: _mean(r) for name, r in first.items() if r},
        # per recorded subtask (the phase of the episode), in the order the episodes reach them
        "phase_errors": {ph: {name: _mean(r) for name, r in per.items()} for ph, per in by_phase.items()},
        "phase_frames": {ph: len(next(iter(per.values()))) for ph, per in by_phase.items()},
        "normalised_mse": {name: float(np.mean(v)) for name, v in norm_mse.items()},
        "compounding_position_drift_mm": compounding,
        "compounding_curves_mm": {m: np.mean(drift[m], axis=0).tolist() for m in modes if drift[m]},
        "compounding_starts": len(starts), "replan_every": replan_every,
    }


def recorded_tokens(policy, chunk_normalised: np.ndarray) -> np.ndarray:
    """The policy's Act-VAE tokens [Nq] of a normalised recorded chunk: what NTP was trained to predict."""
    import torch

    device = next(policy.act_vae.parameters()).device
    return policy.act_vae.tokenize(torch.as_tensor(chunk_normalised, dtype=torch.float32, device=device)[None])[0] \
        .cpu().numpy()


def token_accuracy(predicted: list[np.ndarray], recorded: list[np.ndarray]) -> dict:
    """Per-position agreement of predicted with recorded tokens, and the majority-token baseline's; {} without NTP."""
    if not predicted:
        return {}
    p, r = np.stack(predicted), np.stack(recorded)
    majority = [np.mean(r[:, k] == np.bincount(r[:, k]).argmax()) for k in range(r.shape[1])]
    per_position = (p == r).mean(axis=0)
    return {"ntp_token_accuracy_per_position": per_position.tolist(), "ntp_token_accuracy": float(per_position.mean()),
            "majority_token_accuracy_per_position": [float(m) for m in majority],
            "majority_token_accuracy": float(np.mean(majority))}


def subtask_accuracy(predicted: list[str], recorded: list[str], first: list[bool] | None = None) -> dict:
    """Exact-match rate of the decoded subtasks, and of always answering the most frequent recorded one.

    ``first`` marks the episodes' first frames: there only the images and the instruction say which
    subtask comes (in coloured cubes, which arm goes to which cube), so their rate is reported apart,
    with each (predicted, recorded) pair.
    """
    if not predicted:
        return {}
    values, counts = np.unique(recorded, return_counts=True)
    out = {"ntp_subtask_accuracy": float(np.mean([p == r for p, r in zip(predicted, recorded)])),
           "majority_subtask_accuracy": float(counts.max() / len(recorded)),
           "majority_subtask": str(values[counts.argmax()])}
    pairs = [(p, r) for p, r, f in zip(predicted, recorded, first or []) if f]
    if pairs:
        out["ntp_first_frame_subtask_accuracy"] = float(np.mean([p == r for p, r in pairs]))
        out["first_frame_subtasks"] = [list(pair) for pair in pairs]
    return out


def _match_branch(pred: np.ndarray, true: np.ndarray, euler_indices) -> np.ndarray:
    out = np.array(pred, dtype=np.float64, copy=True)
    idx = list(euler_indices)
    out[:, idx] = nearest_branch(out[:, idx], true[:, idx])
    return out


def markdown(report: dict) -> str:
    errors = report["errors"]
    groups = list(next(iter(errors.values())))
    lines = ["| predictor | normalised MSE | " + " | ".join(groups) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in groups) + " |"]
    for name, row in errors.items():
        lines.append(f"| {name} | {report['normalised_mse'][name]:.4f} | "
                     + " | ".join(f"{row[g]:.3g}" for g in groups) + " |")
    if report.get("first_frame_errors"):
        lines += ["", "First frame of each episode (the robot at rest: only the images tell where to go)", "",
                  "| predictor | " + " | ".join(groups) + " |", "| --- | " + " | ".join("---:" for _ in groups) + " |"]
        lines += [f"| {name} | " + " | ".join(f"{row[g]:.3g}" for g in groups) + " |"
                  for name, row in report["first_frame_errors"].items()]
    for mode in [m for m in errors if m not in BASELINES and report.get("phase_errors")]:
        lines += ["", f"By phase (the recorded subtask of the frame), {mode} mode: where in the episode the chunks "
                  "go wrong", "", "| phase | frames | " + " | ".join(groups) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in groups) + " |"]
        lines += [f"| {ph} | {report['phase_frames'][ph]} | " + " | ".join(f"{per[mode][g]:.3g}" for g in groups) + " |"
                  for ph, per in report["phase_errors"].items()]
    if report.get("ntp_token_accuracy_per_position"):
        acc, base = report["ntp_token_accuracy_per_position"], report["majority_token_accuracy_per_position"]
        lines += ["", "NTP action tokens equal to the recorded chunk's, per position "
                  f"(mean {report['ntp_token_accuracy']:.3f};"
                  f" always the most frequent token: {report['majority_token_accuracy']:.3f})", "",
                  "| predictor | " + " | ".join(str(k) for k in range(len(acc))) + " |",
                  "| --- | " + " | ".join("---:" for _ in acc) + " |",
                  "| ntp | " + " | ".join(f"{a:.2f}" for a in acc) + " |",
                  "| majority token | " + " | ".join(f"{a:.2f}" for a in base) + " |"]
    if "ntp_subtask_accuracy" in report:
        lines += ["", f"NTP subtask text equal to the recorded one: {report['ntp_subtask_accuracy']:.3f} "
                  f"(always '{report['majority_subtask']}': {report['majority_subtask_accuracy']:.3f})"]
        if "ntp_first_frame_subtask_accuracy" in report:
            lines += [f"On the episodes' first frames: {report['ntp_first_frame_subtask_accuracy']:.3f}"]
    comp = report["compounding_position_drift_mm"]
    if comp:
        secs = list(next(iter(comp.values())))
        lines += ["", "Compounding (the policy's own outputs as its state): mean gap to the recorded commands, mm",
                  "", "| mode | " + " | ".join(secs) + " |", "| --- | " + " | ".join("---:" for _ in secs) + " |"]
        lines += [f"| {m} | " + " | ".join(f"{v[s]:.1f}" for s in secs) + " |" for m, v in comp.items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clap_train.io import atomic_path

    errors = report["errors"]
    names = list(errors)
    groups = list(errors[names[0]])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        vals = [errors[name][g] / (1.0 if "gripper" not in g else 0.01) for g in groups]
        axes[0].bar(np.arange(len(groups)) + k * width, vals, width, label=name)
    axes[0].set_xticks(np.arange(len(groups)) + 0.4, [g.replace(" ", "\n", 1) for g in groups], fontsize=7)
    axes[0].set_ylabel("mean error (mm, deg, gripper x100)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"chunk error, {report['frames']} frames")
    for m, curve in report["compounding_curves_mm"].items():
        axes[1].plot(np.arange(1, len(curve) + 1) / 30.0, curve, label=m)
    axes[1].set_xlabel("seconds of the policy's own outputs")
    axes[1].set_ylabel("position drift from the recording (mm)")
    axes[1].set_title("compounding")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", type=pathlib.Path, required=True, help="policy directory (ClapPolicy.load)")
    parser.add_argument("--dataset", type=pathlib.Path, required=True, help="robot LeRobot v3.0 dataset")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for offline.json/.md/.png")
    parser.add_argument("--episodes", type=int, nargs="*", help="episode indices (default: all)")
    parser.add_argument("--modes", nargs="+", default=None, choices=("rf", "ntp"), help="default: every mode")
    parser.add_argument("--stride", type=int, default=8, help="evaluate every N-th frame")
    parser.add_argument("--replan-every", type=int, default=8, help="ticks between chunks in the compounding check")
    parser.add_argument("--horizon", type=float, default=3.0, help="seconds of the compounding check")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from clap_train.data.samples.dataset import ClapDataset, DatasetError
    from clap_train.io import atomic_write_text
    from clap_train.policy import ClapPolicy

    try:
        policy = ClapPolicy.load(args.policy)
        dataset = ClapDataset(args.dataset, chunk_len=policy.chunk_len, image_size=policy.image_size,
                              progress=not args.no_progress)
        if not dataset.is_robot:
            raise ValueError(f"{args.dataset} has no actions (a human-video dataset)")
        if args.stride < 1 or args.replan_every < 1:
            raise ValueError("--stride and --replan-every must be >= 1")
        report = evaluate_offline(policy, dataset, modes=tuple(args.modes or policy.modes), stride=args.stride,
                                  episodes=args.episodes, replan_every=args.replan_every, horizon_s=args.horizon,
                                  progress=not args.no_progress)
    except (FileNotFoundError, ValueError, DatasetError) as exc:
        print(f"clap eval offline: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    report["policy"], report["dataset"] = str(args.policy.resolve()), str(args.dataset.resolve())
    atomic_write_text(args.out / "offline.json", json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    atomic_write_text(args.out / "offline.md", table)
    plot(report, args.out / "offline.png")
    print(table)
    print(f"written: {args.out / 'offline.json'}, {args.out / 'offline.md'}, {args.out / 'offline.png'}")
    return 0
