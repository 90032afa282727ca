"""A worker's train batches held in memory: whole-shard shuffles, seeded, and a size known in advance."""

import torch

from data_pipeline.manifest import read_manifest
from data_pipeline.shards import read_mels, read_split
from genre.datasets import read_windows, shard_mib
from genre.windows import Windows


def held(rows: int) -> Windows:
    mels = torch.arange(rows, dtype=torch.float16).reshape(rows, 1, 1).expand(rows, 4, 3).contiguous()
    return Windows(mels, torch.arange(rows))


def epoch_labels(shard: Windows, batch_size: int, seed: int, epoch: int) -> list[int]:
    batches = list(shard.shuffled(batch_size, seed, epoch))
    for batch in batches:  # each segment keeps its own label
        assert torch.equal(batch["mel"][:, 0, 0].long(), batch["label"])
    return torch.cat([batch["label"] for batch in batches]).tolist()


def test_every_epoch_is_a_new_permutation_of_the_whole_shard_in_full_batches():
    shard = held(50)
    first, second = epoch_labels(shard, 16, seed=1, epoch=0), epoch_labels(shard, 16, seed=1, epoch=1)
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second
    assert [len(b["label"]) for b in shard.shuffled(16, seed=1, epoch=0)] == [16, 16, 16, 2]


def test_the_same_seed_gives_the_same_orders_and_another_seed_others():
    assert epoch_labels(held(50), 8, seed=3, epoch=2) == epoch_labels(held(50), 8, seed=3, epoch=2)
    assert epoch_labels(held(50), 8, seed=3, epoch=2) != epoch_labels(held(50), 8, seed=4, epoch=2)


def test_the_size_estimate_is_what_the_train_split_takes_in_memory(prepared):
    manifest = read_manifest(prepared.out)
    train = read_split(prepared.out, "train", columns=["mel", "label"])
    held_bytes = read_mels(train).nbytes + 8 * train.num_rows  # float16 mels, int64 labels
    segments = manifest["counts"]["train"]["segments"]
    assert shard_mib(manifest["features"], segments, world_size=1) * 2**20 == held_bytes
    assert shard_mib(manifest["features"], segments, world_size=2) * 2**21 == held_bytes


def test_an_empty_shard_gives_no_batches():
    empty = torch.empty(0)
    assert list(Windows(empty.half(), empty.long()).shuffled(16, seed=0, epoch=0)) == []


def test_a_worker_reads_a_split_whole_from_the_shards_with_its_tracks(prepared):
    expected = read_split(prepared.out, "val")
    windows = read_windows(prepared.out, "val", torch.device("cpu"), with_tracks=True)
    assert windows.mels.dtype == torch.float16 and windows.mels.shape == read_mels(expected).shape
    assert torch.equal(windows.mels, torch.tensor(read_mels(expected)))
    assert windows.labels.tolist() == expected.column("label").to_pylist()
    assert list(windows.track_ids) == expected.column("track_id").to_pylist()
    assert read_windows(prepared.out, "val", torch.device("cpu")).track_ids == ()  # only when scored
