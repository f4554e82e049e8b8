"""``clap predict``: run a ClapPolicy on camera images from files and print the predicted chunk.

    clap predict --policy runs/post/policy --head head.png --left-wrist lw.png \
        --instruction "put the red block on the mat" --mode rf
    clap predict ... --json chunk.json      # also write actions, names, subtask, latency as JSON

Images are read with Pillow (any format it opens) and converted to RGB.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from clap_train.io import atomic_write_text

CAMERA_ARGS = {"head": "--head", "left_wrist": "--left-wrist", "right_wrist": "--right-wrist"}


def read_image(path: pathlib.Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable image: {exc}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", type=pathlib.Path, required=True, help="policy directory (policy.json, vlm/, ...)")
    for cam, flag in CAMERA_ARGS.items():
        parser.add_argument(flag, type=pathlib.Path, dest=cam, help=f"{cam} camera image file")
    parser.add_argument("--instruction", required=True, help="the task instruction")
    parser.add_argument("--mode", choices=("rf", "ntp"), default="rf", help="flow head (rf) or token decoding (ntp)")
    parser.add_argument("--state", help="14 comma-separated state values in robot units (optional)")
    parser.add_argument("--seed", type=int, default=0, help="flow noise seed")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--rows", type=int, default=5, help="chunk rows to print (all: -1)")
    parser.add_argument("--json", type=pathlib.Path, help="write the full prediction to this JSON file")


def run(args: argparse.Namespace) -> int:
    from clap_train.policy import ClapPolicy

    try:
        images = {cam: read_image(getattr(args, cam)) for cam in CAMERA_ARGS if getattr(args, cam) is not None}
        if not images:
            raise ValueError("give at least one camera image (--head, --left-wrist, --right-wrist)")
        state = None
        if args.state:
            try:
                state = np.array([float(v) for v in args.state.split(",")])
            except ValueError:
                raise ValueError(f"--state: expected comma-separated numbers, got {args.state!r}") from None
        policy = ClapPolicy.load(args.policy, device=args.device, warmup=False)
        pred = policy.predict(images, args.instruction, state=state, mode=args.mode, seed=args.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"clap predict: {exc}", file=sys.stderr)
        return 2
    print(f"mode {pred.mode}, latency {pred.latency * 1000:.1f} ms (first call, no warm-up), "
          f"subtask: {pred.subtask!r}")
    if pred.tokens is not None:
        print("action tokens:", " ".join(str(int(t)) for t in pred.tokens))
    rows = pred.actions if args.rows < 0 else pred.actions[: args.rows]
    names = policy.action_names
    print("step " + " ".join(f"{n:>13s}" for n in names))
    for i, row in enumerate(rows):
        print(f"{i:4d} " + " ".join(f"{v:13.4f}" for v in row))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({
            "mode": pred.mode, "subtask": pred.subtask, "latency_s": pred.latency, "action_names": names,
            "rate_hz": policy.rate_hz, "actions": pred.actions.tolist(),
            "tokens": None if pred.tokens is None else pred.tokens.tolist(),
        }, indent=1))
    return 0
