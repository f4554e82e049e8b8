"""The ``sim`` command (``clap sim ...`` hands off to it).

    sim record --task transfer_cube --episodes N --out DIR [--seed S] [--storage mcap|sqlite3]
    sim human-videos --task transfer_cube --episodes N --out DIR [--seed S]
    sim bridge --task transfer_cube [--seed S] [ROS args]      (the sim bridge node)
    sim eval --task transfer_cube --episodes N --policy scripted|PATH --out DIR
    sim ground --config config/train/coloured_cubes/ntp.yaml --out DIR [--scenes N] [--steps N] [--seed S]

Sub-commands import what they need when they run, so ``record`` and ``human-videos`` never
import rclpy.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .grounding import Grounding


def _add_common(p: argparse.ArgumentParser) -> None:
    from .tasks import TASKS

    p.add_argument("--task", default="transfer_cube", choices=sorted(TASKS), help="simulated task")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (episodes use seed, seed+1, ...)")
    p.add_argument("--image-size", type=int, default=224, help="camera images are SIZE x SIZE")
    p.add_argument("--steps", type=int, default=None,
                   help="control steps per episode (default: the demonstrator's full length)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sim", description="CLAP simulation: ALOHA bimanual end-effector scene")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("record", help="record scripted demonstrations as rosbag2 (contract topics)")
    _add_common(p)
    p.add_argument("--episodes", type=int, required=True, help="number of successful episodes to record")
    p.add_argument("--out", type=Path, required=True, help="folder for the bags (one per episode)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--keep-failed", action="store_true", help="keep episodes the demonstrator failed")
    p.add_argument("--workers", type=int, default=1, help="episodes recorded at once, one process each")
    p.add_argument("--no-compress", dest="compress", action="store_false",
                   help="write uncompressed bags (default: zstd, ~40x smaller for rendered images)")
    p.add_argument("--contract", type=Path, default=None, help="contract YAML (default: astribot)")

    p = sub.add_parser("human-videos", help="render scripted motions with a human look as mp4 + instructions.json")
    _add_common(p)
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("ground", help="grounding pretraining of the tiny VLM on rendered first frames (its "
                                      "backbone: OUT/vlm, a stage's init)")
    p.add_argument("--config", type=Path, required=True,
                   help="the CLAP-NTP config whose backbone shape and vision_aux the grounding takes")
    p.add_argument("--out", type=Path, required=True)
    for field in dataclasses.fields(Grounding):
        p.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    p.add_argument("--no-progress", dest="progress", action="store_false")

    p = sub.add_parser("eval", help="closed-loop evaluation through the policy node over DDS (needs ROS)")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    p = sub.add_parser("bridge", help="run the sim bridge node (needs ROS)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # eval and bridge parse their own arguments (and ROS arguments).
    if argv and argv[0] == "eval":
        from .eval import main as eval_main

        return eval_main(argv[1:])
    if argv and argv[0] == "bridge":
        from .bridge import main as bridge_main

        return bridge_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "record":
        from .recorder import record_dataset

        records = record_dataset(args.task, args.episodes, args.out, seed=args.seed, storage=args.storage,
                                 n_steps=args.steps, image_size=args.image_size,
                                 only_successful=not args.keep_failed, contract_path=args.contract,
                                 compress=args.compress, workers=args.workers)
        ok = sum(r.success for r in records)
        print(f"recorded {len(records)} {args.task} episodes ({ok} successful) in {args.out}")
        return 0
    if args.command == "human-videos":
        from .human_videos import record_human_videos

        videos = record_human_videos(args.task, args.episodes, args.out, seed=args.seed,
                                     image_size=args.image_size, n_steps=args.steps)
        print(f"wrote {len(videos)} videos and {args.out / 'instructions.json'}")
        return 0
    if args.command == "ground":
        import json

        from clap_train.config import load_config
        from clap_train.train.ntp import NTPTrainConfig

        from .grounding import ground

        ntp_cfg = load_config(NTPTrainConfig, args.config)
        run = Grounding(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Grounding)})
        args.out.mkdir(parents=True, exist_ok=True)
        history = ground(ntp_cfg, run, args.out, progress=args.progress)
        (args.out / "ground.json").write_text(json.dumps({"ntp_config": str(args.config), **dataclasses.asdict(run),
                                                         "loss": history}, indent=1) + "\n")
        print(f"ground: {run.steps} steps, loss {history[-1]['loss']:.4g}; backbone saved to {args.out / 'vlm'}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
