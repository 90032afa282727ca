"""The model actor of batch prediction: several files' windows in one forward pass, each file's probabilities
the mean of its own windows'; runs in Ray Data's actor pool."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from genre.batch_predict.output import FileRow, rows_table
from genre.predict import file_prediction
from genre.train.checkpoints import CheckpointBytes, LoadedModel


class FileScorer:
    """A callable class for `Dataset.map_batches`: decode.DecodedRow batches in, output.FileRow tables out."""

    def __init__(self, checkpoint: CheckpointBytes, device: str, batch_size: int) -> None:
        # The checkpoint's bytes, not its path: the actor may run on a node that has no run folder.
        self.loaded = LoadedModel.load(checkpoint, device, batch_size)
        self.shape = self.loaded.features.shape

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        counts = [int(n) for n in batch["windows"]]
        scored = [i for i, n in enumerate(counts) if n]
        by_file: dict[int, torch.Tensor] = {}
        if scored:
            windows = [
                np.frombuffer(batch["mels"][i], np.float16).reshape(counts[i], *self.shape) for i in scored
            ]
            # One array for every file of the batch: the model's forward passes span files.
            probabilities = self.loaded.probabilities(torch.from_numpy(np.concatenate(windows)))
            by_file = dict(zip(scored, probabilities.split([counts[i] for i in scored]), strict=True))
        rows = [self._row(batch, i, by_file.get(i)) for i in range(len(counts))]
        return rows_table(rows)

    def _row(self, batch: dict[str, np.ndarray], index: int, probabilities: torch.Tensor | None) -> FileRow:
        path, model = str(batch["path"][index]), self.loaded.name
        if probabilities is None:
            return FileRow(path, model, error=str(batch["error"][index]))
        prediction = file_prediction(path, probabilities, self.loaded.labels, str(batch["note"][index]))
        return FileRow(
            path, model, tuple(prediction.top), prediction.segments, prediction.error, prediction.note
        )
