"""The `genre` command line: parses arguments, builds configs, calls the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.prepare import PrepareConfig, prepare
from data_pipeline.split import GTZAN_FILTERED, PROTOCOLS

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `genre` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserInputError as error:
        print(f"genre {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"genre {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genre", description="Train, tune and compare music-genre classifiers on Ray."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(commands)
    _add_models(commands)
    return parser


def _add_prepare(commands: argparse._SubParsersAction) -> None:
    defaults = FeatureConfig()
    parser = commands.add_parser(
        "prepare",
        help="audio folder or CSV -> log-mel Parquet shards (Ray Data)",
        description="Turn SRC (a folder <genre>/<file>, or a CSV of path,label) into log-mel "
        "Parquet shards and a manifest in OUT, in parallel with Ray Data.",
    )
    parser.add_argument("src", type=Path, metavar="SRC")
    parser.add_argument("out", type=Path, metavar="OUT")
    parser.add_argument(
        "--split",
        choices=PROTOCOLS,
        default="track",
        help="track: whole tracks per split (default); segment: the 2021 study's "
        "random segment split, which leaks tracks across splits",
    )
    parser.add_argument(
        "--split-lists",
        metavar="DIR",
        help=f"folder with train.txt, valid.txt, test.txt, or {GTZAN_FILTERED!r} "
        "for the shipped fault-filtered GTZAN split",
    )
    parser.add_argument("--ratios", default="0.6,0.2,0.2", help="train,val,test shares (default 0.6,0.2,0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--segment-seconds", type=float, default=defaults.segment_seconds)
    parser.add_argument("--sample-rate", type=int, default=defaults.sample_rate)
    parser.add_argument("--n-mels", type=int, default=defaults.n_mels)
    parser.add_argument("--tracks-per-shard", type=int, default=PrepareConfig.tracks_per_shard)
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    parser.add_argument("--address", help="Ray cluster to run on (e.g. auto); default: start a local Ray")
    parser.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    if args.tracks_per_shard < 1:
        raise UserInputError("--tracks-per-shard must be at least 1")
    try:
        features = FeatureConfig(
            sample_rate=args.sample_rate, segment_seconds=args.segment_seconds, n_mels=args.n_mels
        )
    except ValueError as error:
        raise UserInputError(str(error)) from None
    config = PrepareConfig(
        source=args.src,
        out=args.out,
        features=features,
        split=args.split,
        split_lists=args.split_lists,
        ratios=args.ratios,
        seed=args.seed,
        overwrite=args.overwrite,
        tracks_per_shard=args.tracks_per_shard,
        ray_address=args.address,
    )
    result = prepare(config)
    print(result.summary())
    return 0


def _add_models(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list the architectures, their parameter counts and defaults",
        description="List the registered architectures with their parameters (10 genres) and "
        "defaults; with --weights, also whether their ImageNet weights are found there.",
    )
    parser.add_argument("--weights", metavar="DIR", help="folder of ImageNet weight files to check")
    parser.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from genre.models.listing import models_table

    print(models_table(args.weights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
