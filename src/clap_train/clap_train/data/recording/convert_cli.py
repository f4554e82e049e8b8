"""``clap convert BAG_DIR... --contract FILE --out DATASET``: rosbag2 recordings -> LeRobot v3.0.

Each BAG_DIR is a rosbag2 folder (sqlite3 or mcap) or a folder of such folders; one bag is one
episode, or several when a topic drops out for longer than its max age (the contract's
``gaps.policy``; conversion.json lists the parts). Re-running skips episodes already converted
(same bag files, same contract). Exit status: 0 when every bag converted, 1 when some failed
(the others are in the dataset), 2 when none could be converted.
"""

from __future__ import annotations

import argparse
import sys

from clap_train.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG_DIR", help="rosbag2 folders, or folders of them")
    parser.add_argument("--out", required=True, help="dataset folder to create or extend")
    parser.add_argument("--contract", default=None, help="topic contract YAML (default: the astribot contract)")
    parser.add_argument("--workers", type=int, default=1, help="episodes converted in parallel (processes)")
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality (lower = better, larger)")
    parser.add_argument("--gop", type=int, default=8, help="keyframe interval (frames) for random access")
    parser.add_argument("--preset", default="ultrafast", help="libx264 preset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from clap_train.data.contract import load_contract
    from clap_train.data.recording.convert import convert_bags
    from clap_train.data.recording.encode_camera import EncodeOptions

    try:
        contract = load_contract(args.contract)
    except ConfigError as exc:
        print(f"clap convert: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("clap convert: --workers must be >= 1", file=sys.stderr)
        return 2
    opts = EncodeOptions(crf=args.crf, gop=args.gop, preset=args.preset)
    try:
        outcomes, info = convert_bags(
            args.bags, contract, args.out, workers=args.workers, opts=opts, progress=not args.no_progress
        )
    except RuntimeError as exc:  # e.g. episodes converted in parallel with different image sizes
        print(f"clap convert: {exc}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if o.status == "failed"]
    done = [o for o in outcomes if o.status != "failed"]
    for o in failed:
        print(f"clap convert: FAILED {o.error}", file=sys.stderr)
    if info is not None:
        print(
            f"clap convert: {args.out}: {info['total_episodes']} episodes, {info['total_frames']} frames "
            f"({sum(o.status == 'converted' for o in outcomes)} converted, "
            f"{sum(o.status == 'skipped' for o in outcomes)} skipped, {len(failed)} failed)"
        )
    if not done:
        return 2
    return 1 if failed else 0
