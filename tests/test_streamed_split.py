"""A train split too big to hold, streamed: mixed at any scale, a new order every epoch, the same
orders for the same seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from data_pipeline.features import FeatureConfig
from data_pipeline.manifest import read_manifest
from data_pipeline.prepare import PrepareConfig, prepare
from data_pipeline.shards import read_split, shard_files
from genre.train.batches import StreamedSplit, deal_shards
from tests.audio_factory import make_collection
from tests.conftest import quiet

GENRES, TRACKS_PER_GENRE = 10, 8
# Rows in the buffer and in a batch: the train split (96 windows) is 24 times the buffer, as a large
# collection's split is many times genre's default buffer.
BUFFER, BATCH = 4, 8


@pytest.fixture(scope="module")
def many_genres(ray_session, tmp_path_factory) -> Path:
    """10 genres x 8 tracks of 3 s as two 1.5 s windows each, 8 tracks a shard: 6 train shards."""
    folder = tmp_path_factory.mktemp("many-genres")
    audio = make_collection(folder / "audio", genres=GENRES, tracks=TRACKS_PER_GENRE, seconds=3.0)
    features = FeatureConfig(n_mels=32, segment_seconds=1.5)
    config = PrepareConfig(source=audio, out=folder / "data", features=features, tracks_per_shard=8)
    prepare(config, progress=quiet)
    return folder / "data"


CPU = torch.device("cpu")


def labels_streamed(data: Path, seed: int, *, rank: int = 0, world_size: int = 1, batch: int = BATCH,
                    buffer: int = BUFFER) -> list[list[int]]:  # fmt: skip
    split = StreamedSplit(data, "train", rank, world_size)
    return [b["label"].tolist() for b in split.batches(seed, batch, buffer, CPU)]


def flat(batches: list[list[int]]) -> list[int]:
    return [label for batch in batches for label in batch]


def test_the_first_streamed_batches_hold_the_genres_about_as_the_split_does(many_genres):
    split = Counter(read_split(many_genres, "train", columns=["label"]).column("label").to_pylist())
    assert len(split) == GENRES and sum(split.values()) >= 20 * BUFFER
    batches = labels_streamed(many_genres, seed=0)[:4]
    # Sorted by track, each shard held one or two genres and so did every batch.
    assert min(len(set(batch)) for batch in batches) >= 3, batches
    first = Counter(label for batch in batches for label in batch)
    assert len(first) >= 7, first  # 32 windows: of ten genres, not two or three
    assert max(first.values()) <= 3 * max(split.values()) / sum(split.values()) * sum(first.values())


def test_every_shard_holds_a_mix_of_its_splits_tracks_each_track_whole(many_genres):
    manifest = read_manifest(many_genres)
    tracks_seen: dict[str, str] = {}
    for split, shards in manifest["shards"].items():
        for shard in shards:
            table = pq.read_table(many_genres / shard["path"], columns=["track_id", "genre", "segment"])
            tracks = table.column("track_id").to_pylist()
            if split == "train" and table.num_rows >= 16:
                assert len(set(table.column("genre").to_pylist())) >= 4, shard["path"]
                # Rows mixed too: not a track's windows one after another.
                assert tracks != sorted(tracks), shard["path"]
            for track in set(tracks):
                assert tracks_seen.setdefault(track, shard["path"]) == shard["path"]  # one shard per track
    # Readers that want tracks still get them sorted.
    table = read_split(many_genres, "train", columns=["track_id", "segment"])
    keys = list(zip(table.column("track_id").to_pylist(), table.column("segment").to_pylist(), strict=True))
    assert keys == sorted(keys)


def test_a_streamed_epoch_reads_every_window_once_in_its_seeds_order(many_genres):
    split = StreamedSplit(many_genres, "train", rank=0, world_size=1)
    filesystem, files = shard_files(many_genres, read_manifest(many_genres), "train")
    (order,), _ = deal_shards(split.rows, 1, seed=11)
    by_file = [
        pq.read_table(files[index], columns=["label"], filesystem=filesystem).column("label").to_pylist()
        for index in order
    ]
    # A one-row buffer passes the rows on as they come: file by file in the epoch's dealt order, each
    # file's rows in an order of the epoch too.
    passed = flat(labels_streamed(many_genres, seed=11, batch=1000, buffer=1))
    start = 0
    for labels in by_file:
        assert sorted(passed[start : start + len(labels)]) == sorted(labels)
        start += len(labels)
    assert passed != flat(by_file)
    rows = labels_streamed(many_genres, seed=11)
    assert labels_streamed(many_genres, seed=11) == rows  # the same seed: the same batches
    other = labels_streamed(many_genres, seed=12)
    assert other != rows  # another epoch: another order
    assert sorted(flat(other)) == sorted(flat(rows)) == sorted(flat(by_file))  # every window once
    assert all(len(batch) == BATCH for batch in rows[:-1]) and 0 < len(rows[-1]) <= BATCH


def test_two_workers_stream_disjoint_shares_of_one_size(many_genres):
    shares = [labels_streamed(many_genres, seed=3, rank=rank, world_size=2) for rank in (0, 1)]
    # DDP's workers take the same number of steps of the same sizes.
    assert [len(batch) for batch in shares[0]] == [len(batch) for batch in shares[1]] != []


def test_shards_are_dealt_whole_in_a_seeded_order_the_workers_rows_close():
    rows = [16, 16, 14, 16, 9, 16, 16, 12]
    shares, each = deal_shards(rows, 3, seed=5)
    assert sorted(index for share in shares for index in share) == list(range(len(rows)))
    totals = [sum(rows[i] for i in share) for share in shares]
    assert each == min(totals) and max(totals) - min(totals) <= max(rows)
    assert deal_shards(rows, 3, seed=5) == (shares, each)
    orders = {tuple(deal_shards(rows, 1, seed=epoch)[0][0]) for epoch in range(5)}
    assert len(orders) == 5  # a new order every epoch


def test_a_streamed_split_with_fewer_shard_files_than_workers_is_refused_before_any_trial(
    tiny_dataset, tmp_path, capsys
):
    from genre.cli import EXIT_USER_ERROR, main

    files = len(read_manifest(tiny_dataset)["shards"]["train"])
    argv = ["sweep", str(tiny_dataset), str(tmp_path / "run"), "--models", "cnn3", "--pretrained", "no",
            "--train-in-memory-mib", "0", "--num-workers", str(files + 1)]  # fmt: skip
    assert main(argv) == EXIT_USER_ERROR
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"has {files} file(s) for {files + 1} workers" in error and "--tracks-per-shard" in error
    assert not (tmp_path / "run" / "results.parquet").exists()


def test_a_split_scored_a_shard_at_a_time_scores_as_when_held_whole(many_genres):
    from genre.models import create_model
    from genre.train.batches import read_windows, read_windows_by_shard
    from genre.train.fit import score, score_parts

    torch.manual_seed(0)
    model = create_model("cnn3", num_classes=GENRES)
    whole = score(model, read_windows(many_genres, "train", CPU, with_tracks=True), "train", CPU, "off")
    parts = score_parts(model, read_windows_by_shard(many_genres, "train", CPU), "train", CPU, "off")
    assert whole.keys() == parts.keys() and len(whole) == 6
    assert all(abs(whole[name] - parts[name]) < 1e-6 for name in whole), (whole, parts)


def test_a_dataset_of_unmixed_shards_is_refused_for_streaming_and_still_held(tiny_dataset, tmp_path, capsys):
    """Prepared before genre mixed its shards (no `shard_order`): one genre per shard."""
    import json
    import shutil

    from genre.cli import EXIT_USER_ERROR, main

    old = tmp_path / "old"
    shutil.copytree(tiny_dataset, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["shard_order"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    argv = ["sweep", str(old), str(tmp_path / "run"), "--models", "cnn3", "--pretrained", "no"]
    assert main([*argv, "--train-in-memory-mib", "0"]) == EXIT_USER_ERROR
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "each hold one genre" in error and "prepare DATA again" in error
