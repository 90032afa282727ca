"""`genre prepare`: a folder of audio -> log-mel Parquet shards and a manifest, with Ray Data."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import ray

from data_pipeline.audio import StorageReadError, band_edge_hz, low_rate_note
from data_pipeline.dataset_folder import StagingWriter, check_apart, check_out
from data_pipeline.dataset_prefix import PrefixWriter, check_prefix
from data_pipeline.discover import Discovery, Reject, Track, discover
from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.featurize import ShardJob, featurize_shard
from data_pipeline.manifest import FORMAT_VERSION, MANIFEST_NAME, library_versions
from data_pipeline.ray_connect import connect_ray
from data_pipeline.screen import screen
from data_pipeline.shards import COLUMNS, MIXED_SHARDS, tracks_per_shard, written_shards
from data_pipeline.split import (
    PROTOCOLS,
    SPLITS,
    TrackSplit,
    fold_name,
    parse_ratios,
    read_split_lists,
    split_by_lists,
    split_by_track,
    split_into_folds,
)
from data_pipeline.storage import Storage, open_storage, redact

Progress = Callable[[str], None]
# Writing failed for want of space or permission: the user's to fix, not a bug.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass(frozen=True)
class PrepareConfig:
    """Everything `prepare` needs; the CLI builds it from its arguments."""

    # Paths, or s3:// / gs:// URIs (data_pipeline.storage); a CSV source is a local file.
    source: str | Path
    out: str | Path
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: str = "track"
    split_lists: str | None = None
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    overwrite: bool = False
    # None: chosen from the collection and the cluster's CPUs (data_pipeline.shards.tracks_per_shard).
    tracks_per_shard: int | None = None
    ray_address: str | None = None
    # K folds of whole tracks for cross-validation (genre sweep --cv) instead of train/val/test; 0: off.
    folds: int = 0
    # Also keep train windows starting every this many seconds between the grid's (for `genre sweep
    # --random-offsets`); None: the grid alone.
    train_hop: float | None = None

    def train_offsets(self) -> int:
        """Windows per grid slot of a train track: segment_seconds / train_hop, checked to be whole."""
        if self.train_hop is None:
            return 1
        if self.folds or self.split != "track":
            raise UserInputError(
                "--train-hop needs a train split of whole tracks: not with --folds or --split segment"
            )
        ratio = self.features.segment_seconds / self.train_hop
        if not self.train_hop > 0 or abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 2:
            raise UserInputError(
                f"--train-hop {self.train_hop:g} must divide the {self.features.segment_seconds:g} s window "
                "into 2 or more equal steps (e.g. 0.5 or 1 for 3 s windows)"
            )
        return round(ratio)

    def groups(self) -> tuple[str, ...]:
        """The dataset's shard groups: train/val/test, or fold-0 ... fold-(K-1)."""
        return tuple(fold_name(k) for k in range(self.folds)) if self.folds else SPLITS


@dataclass
class PrepareResult:
    """A finished dataset: where it is, its manifest, and what the run cost."""

    out: str | Path
    manifest: dict[str, Any]

    def summary(self) -> str:
        """A few lines for the terminal: per-split counts, rejects, audio hours, throughput."""
        counts, run = self.manifest["counts"], self.manifest["run"]
        lines = [f"dataset written to {redact(str(self.out))}"]
        lines.append(f"  {'split':<6} {'tracks':>7} {'segments':>9}")
        for split in (group for group in counts if group != "total"):
            lines.append(f"  {split:<6} {counts[split]['tracks']:>7} {counts[split]['segments']:>9}")
        total = counts["total"]
        lines.append(f"  {'total':<6} {total['tracks']:>7} {total['segments']:>9}")
        rejects = self.manifest["rejects"]
        lines.append(f"  rejects: {len(rejects)}")
        lines.extend(f"    {r['path']}: {r['reason']}" for r in rejects[:10])
        if len(rejects) > 10:
            lines.append(f"    ... {len(rejects) - 10} more in {MANIFEST_NAME}")
        low_rate = self.manifest.get("low_rate", {}).get("tracks", [])
        if low_rate:
            edge = self.manifest["low_rate"]["band_edge_hz"]
            lines.append(
                f"  note: {len(low_rate)} track(s) recorded below {2 * edge:g} Hz were upsampled; their mel "
                f"bands above half their own rate are at the floor (low_rate in {MANIFEST_NAME})"
            )
            lines.extend(f"    {track['path']}: {track['note']}" for track in low_rate[:10])
            if len(low_rate) > 10:
                lines.append(f"    ... {len(low_rate) - 10} more in {MANIFEST_NAME}")
        lines.append(
            f"  audio: {run['audio_seconds'] / 3600:.2f} h in {run['wall_seconds']:.1f} s wall "
            f"= {run['audio_seconds_per_second']:.0f} audio s/s"
        )
        return "\n".join(lines)


class DatasetWriter(Protocol):
    """Where a run writes its dataset, so that no reader ever takes it for finished before it is."""

    shards: str | Storage  # the folder (a path, or a prefix opened here) that featurizing tasks write into
    tag: str  # what ends this run's shard names ("" when the folder is the run's own)

    def publish(self, manifest: dict[str, Any]) -> None:
        """Make OUT the finished dataset that `manifest` describes."""

    def abandon(self) -> None:
        """Delete what the run wrote; OUT is left as it was."""


def prepare(config: PrepareConfig, progress: Progress = print) -> PrepareResult:
    """Discover, split, featurize in parallel with Ray Data, and make OUT the finished dataset.

    On a file tree the dataset is assembled in a hidden sibling folder and renamed to `out` only once
    complete; on an object store its shards are written under `out` and the manifest after them (see
    data_pipeline.dataset_prefix). Either way a crash part-way never leaves an `out` that reads as a
    dataset.
    """
    started = time.perf_counter()
    ratios = parse_ratios(config.ratios)
    config.train_offsets()  # a --train-hop that does not divide the window is refused before any work
    found = discover(config.source)
    check_apart(config.source, config.out, found)
    out = open_storage(config.out)
    if out.is_local:
        check_out(Path(config.out), config.overwrite)
    else:
        check_prefix(out, config.overwrite)
    discovery = screen(found, config.features.segment_seconds)
    track_split = _plan_split(config, discovery, ratios)
    tracks = [
        t for t in discovery.tracks if config.split == "segment" or t.track_id in track_split.assignment
    ]
    labels = {genre: index for index, genre in enumerate(discovery.genres)}
    progress(
        f"prepare: {len(tracks)} tracks in {len(labels)} genres from {discovery.source} "
        f"({len(discovery.skipped)} files skipped)"
    )
    writer: DatasetWriter = (
        StagingWriter(Path(config.out), config.overwrite, progress)
        if out.is_local
        else PrefixWriter(out, config.overwrite, progress)
    )
    try:
        connect_ray(config.ray_address)
        job = ShardJob(
            config.features, writer.shards, config.split, config.seed, ratios, labels, writer.tag,
            groups=config.groups(), train_offsets=config.train_offsets(),
        )  # fmt: skip
        mean_seconds = discovery.audio_seconds / max(1, len(discovery.tracks))
        shard_size = config.tracks_per_shard or tracks_per_shard(len(tracks), _cluster_cpus(), mean_seconds)
        summaries = _run_featurize(tracks, track_split, shard_size, job, progress, started)
        manifest = _build_manifest(config, discovery, track_split, ratios, labels, summaries, writer)
        _check_every_split_has_every_genre(config, summaries, labels, ratios)
        # The shard layout depends on the cluster it was made on: recorded, to make it again anywhere.
        manifest["run"] = {
            **_run_stats(summaries, time.perf_counter() - started),
            "tracks_per_shard": shard_size,
        }
        writer.publish(manifest)
    except BaseException as error:
        writer.abandon()
        disk_error = _disk_error(error)
        if disk_error is not None:
            raise UserInputError(
                f"cannot write the dataset next to OUT {redact(str(config.out))!r}: {disk_error}; "
                "nothing was kept: free space or choose another OUT"
            ) from None
        read_error = _storage_read_error(error)
        if read_error is not None:
            raise UserInputError(
                f"{read_error}; nothing was kept: check the storage and its credentials, and run again"
            ) from None
        raise
    return PrepareResult(config.out, manifest)


def _cluster_cpus() -> float:
    """CPUs of the cluster Ray is connected to (those of its nodes up now)."""
    return ray.cluster_resources().get("CPU", 1.0)


def _plan_split(config: PrepareConfig, discovery: Discovery, ratios: tuple[float, ...]) -> TrackSplit:
    """Where each usable track goes; a genre too small to split is refused, naming what was rejected."""
    try:
        return _split(config, discovery.tracks, ratios)
    except UserInputError as error:
        if not discovery.skipped:
            raise
        first = discovery.skipped[0]
        raise UserInputError(
            f"{error}; {len(discovery.skipped)} file(s) of SRC could not be used ({first.path}: "
            f"{first.reason}{', ...' if len(discovery.skipped) > 1 else ''})"
        ) from None


def _split(config: PrepareConfig, tracks: list[Track], ratios: tuple[float, ...]) -> TrackSplit:
    if config.split not in PROTOCOLS:
        raise UserInputError(f"--split must be one of {', '.join(PROTOCOLS)}, not {config.split!r}")
    if config.folds:
        if config.split == "segment":
            raise UserInputError(
                "--split segment draws segments one by one into train/val/test; --folds holds whole tracks"
            )
        if config.split_lists:
            raise UserInputError("--split-lists fixes the test tracks; --folds tests on every fold in turn")
        return split_into_folds(tracks, config.folds, config.seed)
    if config.split == "segment":
        if config.split_lists:
            raise UserInputError("--split-lists assigns whole tracks; it cannot be used with --split segment")
        return TrackSplit({})
    if config.split_lists:
        return split_by_lists(tracks, read_split_lists(config.split_lists))
    return split_by_track(tracks, ratios, config.seed)


def _disk_error(error: BaseException) -> str | None:
    """What the out-of-space, read-only or permission error behind a failure says, if there is one.

    A Ray Data task's error reaches the driver wrapped, its OSError only in the remote traceback's text.
    """
    for link in _error_chain(error):
        if isinstance(link, OSError) and link.errno in DISK_ERRNOS:
            return os.strerror(link.errno)
    for number in map(int, re.findall(r"\[Errno (\d+)\]", str(error))):
        if number in DISK_ERRNOS:
            return os.strerror(number)
    return None


def _storage_read_error(error: BaseException) -> str | None:
    """The message of the StorageReadError behind a failed featurizing task, if there is one."""
    for link in _error_chain(error):
        if isinstance(link, StorageReadError):
            return str(link)
    # A Ray Data task's error may reach the driver as the remote traceback's text only; a chained
    # traceback prints the outermost error last.
    found = re.findall(rf"{StorageReadError.__name__}: (.+)", str(error))
    return found[-1].strip() if found else None


def _error_chain(error: BaseException, most: int = 10) -> Iterator[BaseException]:
    """The error, then what caused it (a Ray error's `cause`, else Python's cause or context), in turn."""
    current: BaseException | None = error
    for _ in range(most):
        if current is None:
            return
        yield current
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__


def _run_featurize(
    tracks: list[Track],
    track_split: TrackSplit,
    tracks_per_shard: int,
    job: ShardJob,
    progress: Progress,
    started: float,
) -> list[dict[str, Any]]:
    def split_of(track: Track) -> str:
        return track_split.assignment.get(track.track_id, "")

    ordered = shard_order(tracks, split_of, job.groups, job.seed)
    shards = [
        {
            "shard": index,
            "tracks": json.dumps(
                [{**t.__dict__, "split": split_of(t)} for t in ordered[start : start + tracks_per_shard]]
            ),
        }
        for index, start in enumerate(range(0, len(ordered), tracks_per_shard))
    ]
    summaries: list[dict[str, Any]] = []
    step = max(1, len(tracks) // 10)
    with _featurize_data_context():
        dataset = ray.data.from_items(shards, override_num_blocks=len(shards)).flat_map(
            featurize_shard, fn_kwargs={"job": job}, num_cpus=1
        )
        for row in dataset.iter_rows():
            summaries.append(row)
            if len(summaries) % step == 0 or len(summaries) == len(tracks):
                audio = sum(s["seconds"] for s in summaries)
                rejects = sum(1 for s in summaries if s["reject"])
                progress(
                    f"  {len(summaries)}/{len(tracks)} tracks, {audio:.0f} s of audio, "
                    f"{rejects} rejected, {time.perf_counter() - started:.1f} s"
                )
    return sorted(summaries, key=lambda s: s["track_id"])


def shard_order(
    tracks: list[Track], split_of: Callable[[Track], str], groups: tuple[str, ...], seed: int
) -> list[Track]:
    """The order tracks are cut into shards in: split by split (so that a track-protocol task mostly
    writes one file), and within a split a seeded mix of its tracks. Sorted by track, a shard would hold
    one genre (`<genre>/<file>`), and a split streamed shard by shard would reach the model genre by
    genre whatever its shuffle buffer; mixed, every shard holds the split's genres about as the split
    does. The same seed gives the same shards."""
    by_group: dict[str, list[Track]] = {}
    for track in sorted(tracks, key=lambda t: t.track_id):
        by_group.setdefault(split_of(track), []).append(track)
    ordered: list[Track] = []
    for group in sorted(by_group, key=lambda g: groups.index(g) if g else 0):
        mixed = by_group[group]
        # A string seed is hashed by SHA-512: the same order on every machine and Python run.
        random.Random(f"{seed}:shards:{group}").shuffle(mixed)
        ordered.extend(mixed)
    return ordered


@contextmanager
def _featurize_data_context() -> Iterator[None]:
    """Ray Data settings for this one pipeline, restored afterwards."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.op_resource_reservation_enabled
    # One operator only: Ray Data's per-operator reservation would hold back half the CPUs
    # (measured: one task at a time on 2 cores). Progress is printed by us, one line per 10%.
    context.enable_progress_bars = False
    context.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        context.enable_progress_bars, context.op_resource_reservation_enabled = saved


def _check_every_split_has_every_genre(
    config: PrepareConfig, summaries: list[dict[str, Any]], labels: dict[str, int], ratios: tuple[float, ...]
) -> None:
    """After decoding: a file that failed only then must not have left a split without a genre."""
    if config.split != "track" or config.split_lists:
        return  # segments are drawn one by one; split lists are the user's to fill
    shares = [1.0] * config.folds if config.folds else ratios
    for split, ratio in zip(config.groups(), shares, strict=True):
        present = {s["genre"] for s in summaries if not s["reject"] and s[f"segments_{split}"] > 0}
        missing = sorted(set(labels) - present)
        if ratio > 0 and missing:
            raise UserInputError(
                f"after decoding, the {split} split has no track of {', '.join(map(repr, missing))}: "
                f"files failed to decode (see rejects); remove them from SRC and run again"
            )


def _build_manifest(
    config: PrepareConfig,
    discovery: Discovery,
    track_split: TrackSplit,
    ratios: tuple[float, ...],
    labels: dict[str, int],
    summaries: list[dict[str, Any]],
    writer: DatasetWriter,
) -> dict[str, Any]:
    # A URI's secret key, if written into it, stays out of the manifest.
    failed = [Reject(redact(s["path"]), s["reject"]) for s in summaries if s["reject"]]
    rejects = [*discovery.skipped, *failed]
    accepted = [s for s in summaries if not s["reject"]]
    counts: dict[str, dict[str, int]] = {}
    groups = config.groups()
    for split in groups:
        counts[split] = {
            "tracks": sum(1 for s in accepted if s[f"segments_{split}"] > 0),
            "segments": sum(s[f"segments_{split}"] for s in accepted),
        }
    counts["total"] = {
        "tracks": len(accepted),
        "segments": sum(counts[split]["segments"] for split in groups),
    }
    method = "lists" if config.split_lists else "stratified" if config.split == "track" else "random"
    split_info: dict[str, Any] = {
        "protocol": config.split,
        "method": f"{config.folds} folds, stratified" if config.folds else method,
        "seed": config.seed,
        "ratios": None if config.folds else dict(zip(SPLITS, ratios, strict=True)),
        "leaks_tracks_across_splits": config.split == "segment",
    }
    if config.folds:
        split_info["folds"] = config.folds
    if config.train_offsets() > 1:
        # Train windows also every train_hop seconds: segment = slot * train_offsets + j; the grid's
        # are those with j = 0 (train counts include every window kept).
        split_info["train_offsets"] = config.train_offsets()
        split_info["train_hop_seconds"] = config.train_hop
    if config.split_lists:
        split_info["lists"] = str(config.split_lists)
        split_info["listed_but_missing"] = track_split.missing_listed
        split_info["unlisted_tracks_excluded"] = track_split.unlisted
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {"path": discovery.source, "kind": discovery.kind},
        "features": config.features.to_dict(),
        "labels": {str(index): genre for genre, index in labels.items()},
        "columns": list(COLUMNS),
        "split": split_info,
        "counts": counts,
        "shards": written_shards(writer.shards, groups, writer.tag),
        "shard_order": MIXED_SHARDS,
        "rejects": [r.to_dict() for r in rejects],
        "low_rate": _low_rate(config.features, accepted),
        "versions": library_versions(),
    }


def _low_rate(features: FeatureConfig, accepted: list[dict[str, Any]]) -> dict[str, Any]:
    """The tracks whose rate is below twice the mel bands' top edge: resampling up left those bands empty."""
    notes = ((s, low_rate_note(s["source_rate"], features)) for s in accepted)
    tracks = [
        {"path": redact(s["path"]), "source_rate": s["source_rate"], "note": note}
        for s, note in notes
        if note
    ]
    return {"band_edge_hz": band_edge_hz(features), "tracks": tracks}


def _run_stats(summaries: list[dict[str, Any]], wall_seconds: float) -> dict[str, float]:
    audio_seconds = sum(s["seconds"] for s in summaries)
    return {
        "wall_seconds": round(wall_seconds, 3),
        "audio_seconds": round(audio_seconds, 3),
        "audio_seconds_per_second": round(audio_seconds / wall_seconds, 1) if wall_seconds else 0.0,
    }
