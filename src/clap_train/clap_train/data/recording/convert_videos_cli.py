"""``clap convert-videos DIR --out DATASET``: human videos + instructions -> LeRobot v3.0 (no state/action).

Exit status: 0 when every video converted, 1 when some failed (the others are in the dataset),
2 when none could be converted or the instructions file is unusable.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="folder of mp4 files")
    parser.add_argument("--out", required=True, help="dataset folder to create or extend")
    parser.add_argument(
        "--instructions", default=None, help="JSON or CSV (file, instruction); default DIR/instructions.{json,csv}"
    )
    parser.add_argument("--fps", type=float, default=30.0, help="dataset frame rate")
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=None, help="resize frames")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from clap_train.data.recording.convert_videos import InstructionsError, convert_videos

    try:
        outcomes, info = convert_videos(
            args.folder,
            args.out,
            args.instructions,
            args.fps,
            tuple(args.size) if args.size else None,
            not args.no_progress,
        )
    except InstructionsError as exc:
        print(f"clap convert-videos: {exc}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if o["status"] == "failed"]
    for o in failed:
        print(f"clap convert-videos: FAILED {o['error']}", file=sys.stderr)
    if info is not None:
        print(
            f"clap convert-videos: {args.out}: {info['total_episodes']} episodes, "
            f"{info['total_frames']} frames, {len(failed)} failed"
        )
    if info is None:
        return 2
    return 1 if failed else 0
