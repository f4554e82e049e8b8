"""Benchmark `clap convert`: images/s and x real time for 3 cameras at 224x224, 30 Hz.

Beside it, the raw rosbags read+decode rate of the same bag (the reader's ceiling).

Usage: python bench/convert.py [--seconds 20] [--storage sqlite3|mcap] [--episodes 2] [--workers 2]
One episode is converted alone (cameras encoded in parallel threads), then --episodes copies with
--workers episodes in parallel processes (`clap convert --workers`), the way a folder of
recordings is converted.
Goal (issue 3): conversion >= 20x real time on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import tempfile
import time

from clap_train.data.contract import load_contract
from clap_train.data.recording.convert import convert_bags
from clap_train.data.images import message_to_rgb
from clap_train.data.recording.synthetic_bag import CameraSetup, write_bag


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (load-independent cost)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def raw_read_decode(bag: pathlib.Path, contract) -> tuple[int, float]:
    """Read every camera message with rosbags, deserialise it and convert it to RGB."""
    from rosbags.rosbag2 import Reader

    from clap_train.data.recording.bagread import make_typestore

    topics = {c.topic for c in contract.cameras}
    t0 = time.perf_counter()
    n = 0
    with Reader(bag) as reader:
        store = make_typestore(reader.connections)
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, _, raw in reader.messages(connections=conns):
            message_to_rgb(store.deserialize_cdr(raw, conn.msgtype))
            n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="recording length")
    parser.add_argument("--storage", default="sqlite3", choices=["sqlite3", "mcap"])
    parser.add_argument("--episodes", type=int, default=4, help="episodes for the parallel run")
    parser.add_argument("--workers", type=int, default=2, help="episodes converted in parallel")
    args = parser.parse_args()
    contract = load_contract()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        cams = {c.name: CameraSetup("rgb8", 224, 224, contract.rate_hz) for c in contract.cameras}
        bag = write_bag(tmp / "bag", storage=args.storage, duration_s=args.seconds, cameras=cams)
        n_raw, t_raw = raw_read_decode(bag, contract)
        c0, t0 = cpu_seconds(), time.perf_counter()
        outcomes, info = convert_bags([bag], contract, tmp / "ds", progress=False)
        t_conv, c_conv = time.perf_counter() - t0, cpu_seconds() - c0
        assert outcomes[0].status == "converted", outcomes[0].error
        frames = info["total_frames"]
        images = frames * len(contract.cameras)
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(
            f"bag: {args.storage}, {args.seconds:.0f} s, 3 cameras 224x224 rgb8 @ {contract.rate_hz:.0f} Hz, "
            f"{n_raw} images"
        )
        print("| step | images/s | x real time | CPU s per recorded s |")
        print("| --- | --- | --- | --- |")
        print(f"| rosbags read + CDR + RGB only | {n_raw / t_raw:,.0f} | {args.seconds / t_raw:.1f} | |")
        print(
            f"| clap convert, 1 episode (H.264 x3 in threads) | {images / t_conv:,.0f} | {args.seconds / t_conv:.1f} "
            f"| {c_conv / args.seconds:.3f} |"
        )
        for k in range(1, args.episodes):
            write_bag(tmp / f"many/ep{k}", storage=args.storage, duration_s=args.seconds, cameras=cams)
        (tmp / "many").mkdir(exist_ok=True)
        import shutil

        shutil.copytree(bag, tmp / "many/ep0")
        c0, t0 = cpu_seconds(), time.perf_counter()
        outcomes, info2 = convert_bags([tmp / "many"], contract, tmp / "ds2", workers=args.workers, progress=False)
        t_par, c_par = time.perf_counter() - t0, cpu_seconds() - c0
        assert all(o.status == "converted" for o in outcomes), [o.error for o in outcomes]
        images2 = info2["total_frames"] * len(contract.cameras)
        print(
            f"| clap convert --workers {args.workers}, {args.episodes} episodes | {images2 / t_par:,.0f} | "
            f"{args.episodes * args.seconds / t_par:.1f} | {c_par / (args.episodes * args.seconds):.3f} |"
        )
        best = max(args.seconds / t_conv, args.episodes * args.seconds / t_par)
        print(
            f"single episode: {t_conv:.2f} s for {frames} frames; {args.episodes} episodes: {t_par:.2f} s; "
            f"goal >= 20x real time: {'MET' if best >= 20 else 'NOT MET'} (best {best:.1f}x); "
            f"CPU-bound ceiling on 2 idle cores: {2 * args.episodes * args.seconds / c_par:.1f}x"
        )
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
