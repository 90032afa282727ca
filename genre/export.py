"""`genre export`: a sweep's checkpoint as one TorchScript or ONNX file that takes windows of raw audio and
gives genre probabilities (the log-mel inside), with genre.json beside it; runs in the `genre` process.

The exported graph computes exactly what `genre predict` feeds the model: data_pipeline.features'
log-mel, rounded to float16 as `prepare` stores it; so its probabilities are `genre predict`'s per window.
Each file is loaded back and checked against the checkpoint's model before DEST is written.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig, LogMelExtractor
from data_pipeline.storage import is_uri, public_location
from genre.reports import metric_columns
from genre.run_folder import RunFolder
from genre.train.checkpoints import LoadedModel

FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
FORMATS = tuple(FILES)
DESCRIPTION = "genre.json"
INPUT_NAME, OUTPUT_NAME = "waveform", "probabilities"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
ONNX_INSTALL = "pip install 'genre-ray[onnx]'"
# How far an exported file's probabilities may be from `genre predict`'s for the same window. Another
# runtime's FFT and matrix products round differently in float32's last bits; where that moves a log-mel
# value across a float16 rounding step, the model sees one step (1/1024 of the value) apart.
TOLERANCE = 1e-4
# Windows that the export traces with and checks against: more than one, as torch.export specialises
# a dimension it sees as 1; a fixed seed, so an export is repeatable.
CHECK_BATCH, CHECK_SEED = 3, 0
# The results row's columns besides the scores that say which trial it was.
TRIAL_COLUMNS = ("trial_id", "fold", "seed", "epochs", "best_epoch")


class ExportCheckFailed(RuntimeError):
    """The exported file, loaded back, does not give the checkpoint model's probabilities."""


class WaveformClassifier(nn.Module):
    """Windows of mono audio [batch, window_samples] -> genre probabilities [batch, classes]: the log-mel
    of data_pipeline.features, rounded to float16, then the checkpoint's model and a softmax.

    Built from LogMelExtractor's own torchaudio transforms; batched where the extractor runs one window
    at a time, which gives the same values (up to float rounding) in one graph that traces and exports.
    """

    def __init__(self, features: FeatureConfig, model: nn.Module) -> None:
        super().__init__()
        extractor = LogMelExtractor(features)
        self.spectrogram = extractor.spectrogram
        self.mel_scale = extractor.mel_scale
        self.to_db = extractor.to_db
        self.padding = features.n_fft // 2 if features.center else 0
        self.pad_mode = features.pad_mode
        self.peak_reference = features.db_reference == "segment_max"
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.padding:
            # torch.stft(center=True)'s padding, as LogMelExtractor._centre_pad does for one window.
            pad = (self.padding, self.padding)
            waveform = functional.pad(waveform.unsqueeze(1), pad, mode=self.pad_mode).squeeze(1)
        parts = torch.view_as_real(self.spectrogram(waveform))
        power = parts[..., 0].square() + parts[..., 1].square()
        # One item per window, so top_db clips each window alone (LogMelExtractor.power_to_db).
        decibels = self.to_db(self.mel_scale(power).unsqueeze(1))
        if self.peak_reference:
            decibels = decibels - decibels.amax(dim=(-3, -2, -1), keepdim=True)
        # Rounded to float16 as `prepare` stores features and `genre predict` rounds them.
        logits = self.model(decibels.half().float())
        return torch.softmax(logits.float(), dim=1)


@dataclass(frozen=True)
class Exported:
    """What `export` wrote: the model file and genre.json in DEST, and genre.json's content."""

    dest: Path
    model_file: Path
    description_file: Path
    description: dict[str, Any]


def export(run: str | Path, dest: str | Path, format: str, model: str | None = None) -> Exported:
    """The best trial of the sweep in `run` (of `model` if given) as DEST/model.pt or model.onnx, with
    DEST/genre.json; DEST is written whole or not at all, and must be new or empty."""
    if format not in FILES:
        raise UserInputError(f"the format must be one of {', '.join(FORMATS)}, not {format!r}")
    if format == "onnx":
        _require_onnx()
    dest = Path(dest)
    _check_destination(dest)
    run_folder = RunFolder(Path(run))
    checkpoint = run_folder.best_checkpoint(model)
    loaded = LoadedModel.load(checkpoint, "cpu")
    classifier = WaveformClassifier(loaded.features, loaded.model).eval()
    windows = check_windows(loaded.features, CHECK_BATCH)
    description = describe(loaded, format, _trial_row(run_folder, checkpoint, loaded.name))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _folder_then_rename(dest) as folder:
        model_file = folder / FILES[format]
        with torch.no_grad():
            expected = classifier(windows)
            (write_torchscript if format == "torchscript" else write_onnx)(classifier, windows, model_file)
        _check(model_file, windows, expected)
        text = json.dumps(description, indent=2) + "\n"
        (folder / DESCRIPTION).write_text(text, encoding="utf-8")
    return Exported(dest, dest / FILES[format], dest / DESCRIPTION, description)


def write_torchscript(classifier: WaveformClassifier, windows: torch.Tensor, path: Path) -> None:
    """Traced, not scripted: the models use Python that TorchScript's compiler refuses (module-level
    constants), and a trace of them has no branch on the batch (checked at 1 and CHECK_BATCH)."""
    with warnings.catch_warnings():
        # The trace fixes ClampedMaxPool's kernel from the window's shape, which every input shares;
        # and torch 2.14 calls TorchScript deprecated (docs/export.md says what that means for a user).
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(classifier, windows, check_trace=False)
        torch.jit.save(traced, str(path))


def write_onnx(classifier: WaveformClassifier, windows: torch.Tensor, path: Path) -> None:
    """torch.onnx's exporter (torch.export, then onnxscript), the batch axis dynamic, the weights inside
    the one file (external data would be a second file to carry)."""
    with warnings.catch_warnings():
        # torch.export's notes on the models' internals (GRU weights, size checks) are not the user's.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            classifier,
            (windows,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
            dynamo=True,
            external_data=False,
            verbose=False,  # its progress lines are not the user's
        )


def run_exported(path: Path, windows: torch.Tensor) -> torch.Tensor:
    """The exported file's probabilities for `windows`, loaded as a user without genre would."""
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: windows.numpy()})[0])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14's deprecation of TorchScript
        return torch.jit.load(str(path))(windows)


def check_windows(features: FeatureConfig, count: int) -> torch.Tensor:
    """[count, window_samples] of quiet noise: what the export traces with and checks against."""
    generator = torch.Generator().manual_seed(CHECK_SEED)
    return 0.1 * torch.randn(count, features.segment_samples, generator=generator)


def describe(loaded: LoadedModel, format: str, row: dict[str, Any]) -> dict[str, Any]:
    """genre.json: what a program needs to feed the file and read its output, and where it came from."""
    features = loaded.features
    batch = "batch"
    return {
        "format": format,
        "file": FILES[format],
        "genre_version": _genre_version(),
        "torch_version": torch.__version__,
        "model": loaded.name,
        "checkpoint": _record_location(loaded.checkpoint),
        "labels": loaded.labels,
        "sample_rate": features.sample_rate,
        "window_samples": features.segment_samples,
        "window_seconds": features.segment_seconds,
        "input": {
            "name": INPUT_NAME,
            "shape": [batch, features.segment_samples],
            "dtype": "float32",
            "content": f"mono audio at {features.sample_rate} Hz, one window of "
            f"{features.segment_samples} samples per row",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": [batch, len(loaded.labels)],
            "dtype": "float32",
            "content": "each window's probability of each label, in the order of labels",
        },
        "tolerance": TOLERANCE,
        "features": features.to_dict(),
        "trial": {key: row[key] for key in TRIAL_COLUMNS if key in row},
        "scores": {key: row[key] for key in metric_columns() if key in row},
    }


def _trial_row(run: RunFolder, checkpoint: str, model: str) -> dict[str, Any]:
    """The results row of the trial whose checkpoint this is, its missing values left out."""
    table = run.table()
    table = table[(table["status"] == "completed") & (table["model"] == model)]
    for record in table.to_dict("records"):
        if run.locate(str(record["checkpoint"])) == checkpoint:
            return {key: _plain(value) for key, value in record.items() if _plain(value) is not None}
    return {}


def _plain(value: Any) -> Any:
    """A table's value as JSON holds it: numpy scalars as Python's, NaN and NA as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    try:
        json.dumps(value)
    except TypeError:
        return None
    return value


def _check(model_file: Path, windows: torch.Tensor, expected: torch.Tensor) -> None:
    """The file, loaded back, gives the model's probabilities one window at a time and as a batch."""
    for batch in (windows[:1], windows):
        got = run_exported(model_file, batch)
        want = expected[: len(batch)]
        if got.shape != want.shape or not torch.allclose(got, want, rtol=0.0, atol=TOLERANCE):
            difference = (got - want).abs().max().item() if got.shape == want.shape else "a shape"
            raise ExportCheckFailed(
                f"the exported {model_file.name}, loaded back, differs from the checkpoint's model by "
                f"{difference} at a batch of {len(batch)} (more than {TOLERANCE}); nothing was written"
            )


def _require_onnx() -> None:
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserInputError(f"--format onnx needs {', '.join(missing)}: {ONNX_INSTALL}")


def _check_destination(dest: Path) -> None:
    if dest.is_dir() and any(dest.iterdir()):
        raise UserInputError(f"{str(dest)!r} exists and is not empty; give a new or empty folder")
    if dest.exists() and not dest.is_dir():
        raise UserInputError(f"{str(dest)!r} exists and is not a folder; give a new or empty folder")


@contextlib.contextmanager
def _folder_then_rename(dest: Path) -> Iterator[Path]:
    """A temporary folder beside `dest`, renamed to it once written: a reader never sees half of DEST."""
    folder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield folder
        try:
            os.replace(folder, dest)  # replaces an empty folder, refuses one that is not
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                filled = f"{str(dest)!r} was filled while exporting; nothing was written"
                raise UserInputError(filled) from None
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _record_location(location: str) -> str:
    """A checkpoint's location for genre.json: a URI without credentials, a path made absolute."""
    return public_location(location) if is_uri(location) else str(Path(location).resolve())


def _genre_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genre-ray")
    except PackageNotFoundError:
        return "unknown"
