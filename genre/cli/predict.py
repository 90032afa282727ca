"""`genre predict`: the genre of audio files with a sweep's best model, a few files here or a collection on
Ray Data (--out); runs in the `genre` process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_pipeline.errors import UserInputError
from genre.cli.arguments import add_address, add_inference_device

ERRORS_SHOWN = 10


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "predict",
        help="the genre of audio files, with a sweep's best model",
        description="Predict the genre of each audio file (wav, au, flac, mp3, ogg; any rate, any "
        "channels, at least one window long) with the features and weights of a sweep's checkpoint. "
        "A few files are printed here; a folder, a list file (.txt or .lst: one path or URI a line), an "
        "s3:// or gs:// prefix, or any SOURCE with --out is predicted on Ray Data into one table.",
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="an audio file, a folder, a list file or a prefix"
    )
    parser.add_argument("--run", type=Path, required=True, help="a folder written by `genre sweep`")
    parser.add_argument(
        "--model", help="use this model's best trial (default: the run's best by val accuracy)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file (without --out)")
    parser.add_argument(
        "--out",
        type=Path,
        help="write one row per file to this .parquet or .csv, on Ray Data; rerun the same command to finish "
        "an interrupted run (FILE.parts/ beside it holds the rows so far)",
    )
    add_address(parser)
    add_inference_device(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from genre.batch_predict.sources import is_collection

    collections = [source for source in args.sources if is_collection(source)]
    if args.out is None and collections:
        raise UserInputError(
            f"{collections[0]!r} names many files: they are predicted on Ray Data into a table; add "
            "--out FILE.parquet or --out FILE.csv"
        )
    if args.out is not None:
        if args.json:
            raise UserInputError("--json prints each file's line here; --out writes a table: choose one")
        return _run_batch(args)
    if args.address is not None:
        raise UserInputError("--address runs the prediction on a Ray cluster: add --out FILE.parquet")
    return _run_here(args)


def _run_here(args: argparse.Namespace) -> int:
    """A few files, decoded by threads and predicted in this process, printed as they finish."""
    import json

    from genre.predict import Predictor
    from genre.run_folder import RunFolder

    predictor = Predictor(RunFolder(args.run).best_checkpoint(args.model), args.device, args.batch_size)
    if not args.json:
        print(f"model: {predictor.model_name} ({predictor.checkpoint}) on {predictor.loaded.device}")
    predicted = 0
    for prediction in predictor.predict_files(args.sources):
        predicted += not prediction.error
        if args.json:
            print(json.dumps({**prediction.to_dict(), "model": predictor.model_name}))
        elif prediction.error:
            print(f"{prediction.path}: error: {prediction.error}", file=sys.stderr)
        else:
            top = ", ".join(f"{genre} {probability:.2f}" for genre, probability in prediction.top)
            print(f"{prediction.path}: {top}")
            if prediction.note:
                print(f"{prediction.path}: note: {prediction.note}", file=sys.stderr)
    if predicted == 0:
        print("genre predict: error: no file could be predicted", file=sys.stderr)
        return 1
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    """Every file the SOURCEs name, on Ray Data, into --out."""
    from genre.batch_predict.job import BatchPredictConfig, batch_predict
    from genre.run_folder import RunFolder

    config = BatchPredictConfig(
        sources=tuple(args.sources),
        checkpoint=RunFolder(args.run).best_checkpoint(args.model),
        out=args.out,
        address=args.address,
        device=args.device,
        batch_size=args.batch_size,
    )
    result = batch_predict(config)
    rate = result.predicted_now / result.seconds if result.seconds else 0.0
    print(
        f"wrote {result.out}: {result.table.num_rows} files, {result.predicted} predicted, "
        f"{len(result.errors)} with an error; {result.predicted_now} predicted by this run in "
        f"{result.seconds:.1f} s ({rate:.1f} files/s)"
    )
    for path, error in result.errors[:ERRORS_SHOWN]:
        print(f"{path}: error: {error}", file=sys.stderr)
    if len(result.errors) > ERRORS_SHOWN:
        print(f"... {len(result.errors) - ERRORS_SHOWN} more errors in {result.out}", file=sys.stderr)
    if result.predicted == 0:
        print("genre predict: error: no file could be predicted", file=sys.stderr)
        return 1
    return 0
