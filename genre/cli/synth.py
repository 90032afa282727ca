"""`genre synth`: generated music-like clips in GTZAN's layout; runs in the `genre` process."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "synth",
        help="write generated music-like clips for the ten GTZAN genres, in GTZAN's layout",
        description="Generate labelled music-like audio (OUT/<genre>/<genre>.000NN.wav) from a seed: "
        "the same seed gives the same bytes. Feed it to `genre prepare`.",
    )
    parser.add_argument("out", type=Path, metavar="OUT")
    parser.add_argument("--tracks-per-genre", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes at once (default: one per core)")
    return parser


def run(args: argparse.Namespace) -> int:
    from genre.synth import SynthConfig, synthesize_collection

    config = SynthConfig(
        out=args.out,
        tracks_per_genre=args.tracks_per_genre,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        seed=args.seed,
        workers=args.workers,
    )
    paths = synthesize_collection(config)
    print(f"wrote {len(paths)} clips to {args.out}")
    return 0
