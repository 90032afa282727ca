"""`genre export`: a sweep's best model as a TorchScript or ONNX file that takes raw audio windows, for
programs without genre; runs in the `genre` process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Here as well as in genre.export, which imports torch: --help and the parser must not.
FORMATS = ("torchscript", "onnx")


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "export",
        help="a sweep's best model as a TorchScript or ONNX file, log-mel included",
        description="Write the best trial of a sweep (of --model if given) into the new folder DEST as "
        "model.pt (TorchScript) or model.onnx, with genre.json beside it (labels, sample rate, window "
        "length, input and output, the trial's scores). The file takes mono windows of raw audio "
        "[batch, window samples] at the model's sample rate and returns genre probabilities "
        "[batch, classes]: the log-mel transform is inside, so the file needs only torch or ONNX Runtime.",
    )
    parser.add_argument("dest", type=Path, metavar="DEST", help="a new or empty folder")
    parser.add_argument("--run", type=Path, required=True, help="a folder written by `genre sweep`")
    parser.add_argument(
        "--model", help="export this model's best trial (default: the run's best by val accuracy)"
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="torchscript (model.pt, for torch.jit.load) or onnx (model.onnx; needs genre-ray[onnx])",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from genre.export import ExportCheckFailed, export

    try:
        exported = export(args.run, args.dest, args.format, args.model)
    except ExportCheckFailed as error:
        print(f"genre export: error: {error}", file=sys.stderr)
        return 1
    description = exported.description
    print(f"model: {description['model']} ({description['checkpoint']})")
    print(f"wrote {exported.model_file} and {exported.description_file}")
    return 0
