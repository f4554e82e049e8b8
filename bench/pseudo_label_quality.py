#!/usr/bin/env python3
"""How right the pseudo action tokens are that ``clap label-videos`` gave a run's human-look videos.

    python bench/pseudo_label_quality.py --run bench/out/human_transfer

The measure is ``clap_sim.pseudo_labels.quality``: the pseudo tokens against the Act-VAE tokens of
the scripted videos' true actions, with its baselines (its module docstring says how).
"""

from __future__ import annotations

import argparse
import json
import pathlib

from clap_sim.pseudo_labels import quality


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=pathlib.Path, required=True, help="a bench/human_transfer.py or closed_loop.py OUT")
    p.add_argument("--json", type=pathlib.Path, help="also write the result here")
    args = p.parse_args(argv)
    stats = quality(args.run)
    print(f"pseudo tokens of {stats['samples']} human-video frames: agreement {stats['agreement']:.3f}, "
          f"baseline (sum p q) {stats['baseline']:.3f}, permutation {stats['permutation']:.3f} "
          f"+- {stats['permutation_std']:.3f}, ratio {stats['ratio_to_baseline']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(stats, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
