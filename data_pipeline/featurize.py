"""The per-shard work that Ray Data runs in parallel: decode, segment, log-mel, write Parquet."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from data_pipeline.audio import AudioDecodeError, StorageReadError, load_mono
from data_pipeline.features import FeatureConfig, LogMelExtractor
from data_pipeline.shards import segments_table, shard_name, write_shard
from data_pipeline.split import SPLITS, segment_split
from data_pipeline.storage import Storage, open_storage

if TYPE_CHECKING:
    import torch

# Reads of one file before a storage failure stops the run, and the pause after the n-th (n x this).
READ_ATTEMPTS = 3
READ_PAUSE_S = 1.0


@dataclass(frozen=True)
class ShardJob:
    """What every featurizing task needs besides its own tracks."""

    features: FeatureConfig
    # The folder that shards go to, as <split>/<shard file>: a path, or an object store's prefix opened
    # by the driver (its filesystem holds any credentials of its URI; Ray carries it in memory).
    out_dir: str | Storage
    protocol: str
    seed: int
    ratios: tuple[float, float, float]
    labels: dict[str, int]
    # Ends the shard names of a run that writes in place (an object store), "" in a staging folder.
    shard_tag: str = ""
    # The dataset's shard groups: train/val/test, or its folds (data_pipeline.split.fold_name).
    groups: tuple[str, ...] = SPLITS
    # Windows per grid slot of a train track (prepare --train-hop): 1 is the grid alone; n > 1 adds the
    # windows starting j/n of a window later (j < n), numbered segment = slot * n + j.
    train_offsets: int = 1


@lru_cache(maxsize=4)
def _extractor(features: FeatureConfig) -> LogMelExtractor:
    # Filter banks and windows are built once per worker process, not once per shard.
    return LogMelExtractor(features)


def featurize_shard(row: dict[str, Any], job: ShardJob) -> list[dict[str, Any]]:
    """Process one shard's tracks, write its Parquet file(s), return one summary row per track."""
    extractor = _extractor(job.features)
    columns: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    summaries = []
    for track in json.loads(row["tracks"]):
        summary = {
            "track_id": track["track_id"],
            "path": track["path"],
            "genre": track["genre"],
            "seconds": 0.0,
            "source_rate": 0,
            "channels": 0,
            "reject": "",
            **{f"segments_{split}": 0 for split in job.groups},
        }
        summaries.append(summary)
        try:
            waveform, summary["source_rate"], summary["channels"] = _load_with_retries(
                track["path"], job.features.sample_rate
            )
            summary["seconds"] = waveform.numel() / job.features.sample_rate
            mels = extractor(waveform).half().numpy()
            numbers = list(range(len(mels)))
            offsets = job.train_offsets if track["split"] == "train" else 1
            if offsets > 1 and len(mels):
                mels, numbers = _offset_windows(extractor, waveform, offsets, mels)
        except AudioDecodeError as error:
            summary["reject"] = str(error)
            continue
        except StorageReadError:
            raise  # not the file's fault: the run stops, and keeps nothing (prepare.py)
        except Exception as error:  # one odd file must not cost the rest of the shard
            summary["reject"] = f"failed to process: {type(error).__name__}: {error}"
            continue
        if len(mels) == 0:
            summary["reject"] = (
                f"shorter than one {job.features.segment_seconds:g} s segment ({summary['seconds']:.2f} s)"
            )
            continue
        for segment, mel in zip(numbers, mels, strict=True):
            split = track["split"] or segment_split(job.seed, track["track_id"], segment, job.ratios)
            summary[f"segments_{split}"] += 1
            rows = columns[split]
            rows["track_ids"].append(track["track_id"])
            rows["segments"].append(segment)
            rows["labels"].append(job.labels[track["genre"]])
            rows["genres"].append(track["genre"])
            rows["splits"].append(split)
            rows["mels"].append(mel)
    for split, rows in columns.items():
        table = segments_table(
            rows["track_ids"],
            rows["segments"],
            rows["labels"],
            rows["genres"],
            rows["splits"],
            np.stack(rows["mels"]),
        )
        # The rows in a seeded order, not track by track: a stream whose shuffle buffer is smaller than
        # a shard still mixes its tracks (readers that want tracks sort: data_pipeline.shards.read_split).
        order = list(range(table.num_rows))
        random.Random(f"{job.seed}:rows:{row['shard']}").shuffle(order)
        write_shard(
            table.take(order),
            open_storage(job.out_dir).child(split, shard_name(row["shard"], job.shard_tag)),
        )
    return summaries


def _load_with_retries(path: str, sample_rate: int) -> tuple[torch.Tensor, int, int]:
    """load_mono, tried READ_ATTEMPTS times when the storage fails (after its own retries: pyarrow's
    S3 filesystem retries a 503 about 30 times over ~10 s, a refusal not at all) with pauses between.

    Retried here, for the one file, rather than as a Ray task: Ray Data retries its tasks without
    limit after a system failure (a worker lost), and a retried task would read its whole shard again.
    """
    for attempt in range(1, READ_ATTEMPTS):
        try:
            return load_mono(path, sample_rate)
        except StorageReadError:
            time.sleep(READ_PAUSE_S * attempt)
    try:
        return load_mono(path, sample_rate)
    except StorageReadError as error:
        raise StorageReadError(f"{error} ({READ_ATTEMPTS} attempts)") from error


def _offset_windows(
    extractor: LogMelExtractor, waveform, offsets: int, grid: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """The grid's windows and those starting j/offsets of a window later, with their numbers
    segment = slot * offsets + j (a shifted window past the track's end is left out)."""
    step = extractor.config.segment_samples // offsets
    shifted = [grid, *(extractor(waveform[j * step :]).half().numpy() for j in range(1, offsets))]
    pairs = [
        (slot * offsets + j, windows[slot])
        for slot in range(len(grid))
        for j, windows in enumerate(shifted)
        if slot < len(windows)
    ]
    return np.stack([mel for _, mel in pairs]), [number for number, _ in pairs]
