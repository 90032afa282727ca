"""`genre predict`: the genre of audio files, with the features and model of a sweep's checkpoint.

Files are decoded and cut into log-mel windows by a few threads (libsndfile, torchaudio and torch's
STFT release the GIL) while the model runs; the windows of many files share each forward pass, and
each file's probabilities are the mean of its own windows'. Decoding a file into windows and a file's
prediction from its windows are shared with the Ray Data path of `genre predict --out` (genre/batch_predict).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data_pipeline.audio import AudioDecodeError, StorageReadError, load_mono, low_rate_note
from data_pipeline.features import FeatureConfig, LogMelExtractor
from genre.train.checkpoints import CheckpointBytes, LoadedModel

TOP_K = 3
# Decoding threads: a few keep a GPU fed; more would only take cores from the CPU model.
DECODE_THREADS = min(4, os.cpu_count() or 1)
# Files decoded ahead of the model, per thread: bounds the memory that waiting windows hold.
FILES_AHEAD_PER_THREAD = 4
NON_FINITE_OUTPUT = "the model's output for this file is not a finite number (NaN or infinity)"


@dataclass
class Prediction:
    """One file's outcome: its top genres and every genre's probability, or why it has none."""

    path: str
    top: list[tuple[str, float]]
    segments: int = 0
    error: str = ""
    probabilities: torch.Tensor | None = None  # [classes], the mean over the file's windows
    # Said when the file's rate leaves the top mel bands empty (data_pipeline.audio.low_rate_note).
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "genre": self.top[0][0],
            "probability": self.top[0][1],
            "top": [{"genre": g, "probability": p} for g, p in self.top],
            "segments": self.segments,
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class DecodedFile:
    """A file's log-mel windows [windows, n_mels, frames] float16, or why it has none."""

    path: str
    mels: torch.Tensor | None = None
    error: str = ""
    note: str = ""


def decode_file(path: str | Path, features: FeatureConfig, extractor: LogMelExtractor) -> DecodedFile:
    """The file decoded and cut into `features`' windows, as `prepare` cuts them; an unreadable, undecodable
    or too-short file is its error."""
    try:
        waveform, source_rate, _ = load_mono(path, features.sample_rate)
    except (AudioDecodeError, StorageReadError) as error:
        # One file that cannot be read (or decoded) is that file's error line, not the command's end.
        return DecodedFile(str(path), error=str(error))
    mels = window_features(extractor, waveform)
    if len(mels) == 0:
        seconds = waveform.numel() / features.sample_rate
        return DecodedFile(
            str(path), error=f"shorter than one {features.segment_seconds:g} s window ({seconds:.2f} s)"
        )
    return DecodedFile(str(path), mels, note=low_rate_note(source_rate, features))


def window_features(extractor: LogMelExtractor, waveform: torch.Tensor) -> torch.Tensor:
    """[windows, n_mels, frames] float16 log-mels of a waveform at the features' rate."""
    # Rounded to float16 as `prepare` stores them: the model sees exactly what it trained on.
    return extractor(waveform).half()


def file_prediction(
    path: str, window_probabilities: torch.Tensor, labels: list[str], note: str = ""
) -> Prediction:
    """A file's Prediction from its windows' probabilities [windows, classes]: their mean, its top genres."""
    segments = len(window_probabilities)
    probabilities = window_probabilities.mean(dim=0)
    if not bool(torch.isfinite(probabilities).all()):
        # Never printed as "nan": weights are checked when loaded, but a window can still overflow.
        return Prediction(path, [], segments=segments, error=NON_FINITE_OUTPUT)
    values, indices = probabilities.topk(min(TOP_K, len(labels)))
    top = [(labels[i], round(float(v), 4)) for v, i in zip(values, indices, strict=True)]
    return Prediction(path, top, segments=segments, probabilities=probabilities, note=note)


@dataclass
class _Pending:
    """A file between decoding and its prediction: its windows' probabilities as batches return them."""

    path: str
    error: str
    segments: int
    waiting: int  # windows not yet through the model
    parts: list[torch.Tensor] = field(default_factory=list)
    note: str = ""


class Predictor:
    """A checkpoint's model with its own feature transform: never re-typed parameters."""

    def __init__(
        self,
        checkpoint: str | Path | CheckpointBytes,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
    ) -> None:
        """`checkpoint`: a path, a URI or its bytes (read_checkpoint); `device`: cpu, cuda, cuda:N or auto;
        `batch_size`: windows per forward pass (None: by device)."""
        self.loaded = LoadedModel.load(checkpoint, device, batch_size)
        self.features = self.loaded.features
        self.extractor = LogMelExtractor(self.features)

    @property
    def model_name(self) -> str:
        return self.loaded.name

    @property
    def checkpoint(self) -> str:
        return self.loaded.checkpoint

    def predict_files(self, paths: Iterable[str | Path]) -> Iterator[Prediction]:
        """One Prediction per path, in their order, each as soon as it and those before it are done."""
        pending: deque[_Pending] = deque()  # in input order, until their prediction is given
        queued: deque[tuple[_Pending, torch.Tensor]] = deque()  # windows not yet through the model
        batch, windows = self.loaded.batch_size, 0
        for decoded in self._decode(paths):
            count = 0 if decoded.mels is None else len(decoded.mels)
            pending.append(_Pending(decoded.path, decoded.error, count, count, note=decoded.note))
            if count:
                queued.append((pending[-1], decoded.mels))
                windows += count
            while windows >= batch:
                windows -= self._run_batch(queued, batch)
            yield from self._finished(pending)
        while queued:
            self._run_batch(queued, batch)
        yield from self._finished(pending)

    def predict_file(self, path: str | Path) -> Prediction:
        """Every window of the file through the model; the file's probabilities are their mean."""
        return next(self.predict_files([path]))

    def file_probabilities(self, path: str | Path) -> torch.Tensor:
        """[segments, classes] for one file (for evaluation and tests)."""
        waveform, _, _ = load_mono(path, self.features.sample_rate)
        return self.loaded.probabilities(window_features(self.extractor, waveform))

    def _decode(self, paths: Iterable[str | Path]) -> Iterator[DecodedFile]:
        """Each file's windows, in order, decoded by DECODE_THREADS threads a few files ahead."""
        pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="genre-decode")
        ahead: deque[Future[DecodedFile]] = deque()
        try:
            for path in paths:
                ahead.append(pool.submit(decode_file, path, self.features, self.extractor))
                if len(ahead) >= DECODE_THREADS * FILES_AHEAD_PER_THREAD:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            # Stopped early (an error, Ctrl-C, a consumer that left): files not yet started never are.
            pool.shutdown(wait=True, cancel_futures=True)

    def _run_batch(self, queued: deque[tuple[_Pending, torch.Tensor]], size: int) -> int:
        """Up to `size` windows from the front of `queued` through the model as one batch; how many."""
        owners: list[_Pending] = []
        pieces: list[torch.Tensor] = []
        room = size
        while queued and room:
            owner, mels = queued.popleft()
            piece, rest = mels[:room], mels[room:]
            if len(rest):
                queued.appendleft((owner, rest))
            owners.append(owner)
            pieces.append(piece)
            room -= len(piece)
        probabilities = self.loaded.probabilities(torch.cat(pieces))
        for owner, part in zip(owners, probabilities.split([len(p) for p in pieces]), strict=True):
            owner.parts.append(part)
            owner.waiting -= len(part)
        return size - room

    def _finished(self, pending: deque[_Pending]) -> Iterator[Prediction]:
        """The predictions of the files at the front whose windows are all through the model."""
        while pending and pending[0].waiting == 0:
            yield self._prediction(pending.popleft())

    def _prediction(self, file: _Pending) -> Prediction:
        if file.error:
            return Prediction(file.path, [], error=file.error)
        return file_prediction(file.path, torch.cat(file.parts), self.loaded.labels, file.note)
