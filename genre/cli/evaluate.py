"""`genre evaluate`: test-split scores and confusion matrices of a sweep's model; runs in the `genre`
process."""

from __future__ import annotations

import argparse
from pathlib import Path

from genre.cli.arguments import add_inference_device


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "evaluate",
        help="test-split scores, per-genre scores and a confusion matrix for a sweep's model",
        description="Score a sweep's best model (or --model's best trial) on DATA's test split at "
        "segment and track level; write metrics.json, per_genre.csv and confusion matrices (CSV, PNG).",
    )
    parser.add_argument(
        "data", metavar="DATA", help="a folder written by `genre prepare` (a path or s3://, gs://)"
    )
    parser.add_argument("--run", type=Path, required=True, help="a folder written by `genre sweep`")
    parser.add_argument("--model", help="evaluate this model's best trial")
    parser.add_argument(
        "--split", default="test", help="train, val, test (default), or fold-K of a --folds dataset"
    )
    parser.add_argument("--out", type=Path, help="report folder (default: RUN/evaluation/<model>)")
    add_inference_device(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from genre.evaluate import evaluate, render_evaluation
    from genre.run_folder import RunFolder, checkpoint_folder_name

    checkpoint = RunFolder(args.run).best_checkpoint(args.model)
    out = args.out or args.run / "evaluation" / checkpoint_folder_name(checkpoint)
    result = evaluate(args.data, checkpoint, out, args.split, args.device, args.batch_size)
    print(render_evaluation(result))
    print(f"\nwritten: {', '.join(str(p) for p in result.files.values())}")
    return 0
