"""`genre predict`: the genre of audio files with a sweep's best model; runs in the `genre` process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genre.cli.arguments import add_inference_device


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "predict",
        help="the genre of audio files, with a sweep's best model",
        description="Predict the genre of each AUDIO file (wav, au, flac, mp3, ogg; any rate, any "
        "channels, at least one window long) with the features and weights of a sweep's checkpoint.",
    )
    parser.add_argument("audio", nargs="+", type=Path, metavar="AUDIO")
    parser.add_argument("--run", type=Path, required=True, help="a folder written by `genre sweep`")
    parser.add_argument(
        "--model", help="use this model's best trial (default: the run's best by val accuracy)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    add_inference_device(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import json

    from genre.predict import Predictor
    from genre.run_folder import RunFolder

    predictor = Predictor(RunFolder(args.run).best_checkpoint(args.model), args.device, args.batch_size)
    if not args.json:
        print(f"model: {predictor.model_name} ({predictor.checkpoint}) on {predictor.loaded.device}")
    predicted = 0
    for prediction in predictor.predict_files(args.audio):
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
