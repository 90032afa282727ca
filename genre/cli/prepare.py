"""`genre prepare`: audio to log-mel Parquet shards with Ray Data; runs in the `genre` process."""

from __future__ import annotations

import argparse

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.split import GTZAN_FILTERED, PROTOCOLS
from genre.cli.arguments import add_address


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    defaults = FeatureConfig()
    parser = commands.add_parser(
        "prepare",
        help="audio folder or CSV -> log-mel Parquet shards (Ray Data)",
        description="Turn SRC (a folder <genre>/<file>, or a CSV of path,label) into log-mel "
        "Parquet shards and a manifest in OUT, in parallel with Ray Data. SRC (a folder) and OUT may "
        "be s3:// or gs:// URIs.",
    )
    parser.add_argument("src", metavar="SRC", help="a folder (path or s3://, gs:// URI) or a local CSV")
    parser.add_argument("out", metavar="OUT", help="a folder (path or s3://, gs:// URI)")
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
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="K folds of whole tracks, stratified by genre, for `genre sweep --cv`, not train/val/test",
    )
    parser.add_argument(
        "--train-hop",
        type=float,
        metavar="SECONDS",
        help="also keep train windows starting every SECONDS between the grid's, for `genre sweep "
        "--random-offsets` (e.g. 0.5: six per 3 s slot); val and test keep the grid",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--segment-seconds", type=float, default=defaults.segment_seconds)
    parser.add_argument("--sample-rate", type=int, default=defaults.sample_rate)
    parser.add_argument("--n-mels", type=int, default=defaults.n_mels)
    parser.add_argument(
        "--tracks-per-shard",
        type=int,
        help="tracks per parallel task and Parquet file (default: about 4 tasks per CPU, 8 to 64 tracks)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    add_address(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.tracks_per_shard is not None and args.tracks_per_shard < 1:
        raise UserInputError("--tracks-per-shard must be at least 1")
    try:
        features = FeatureConfig(
            sample_rate=args.sample_rate, segment_seconds=args.segment_seconds, n_mels=args.n_mels
        )
    except ValueError as error:
        raise UserInputError(str(error)) from None
    from data_pipeline.prepare import PrepareConfig, prepare

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
        folds=args.folds,
        train_hop=args.train_hop,
    )
    result = prepare(config)
    print(result.summary())
    return 0
