"""A worker's train batches held in memory: whole-shard shuffles, seeded, and a size known in advance."""

import torch

from data_pipeline.manifest import read_manifest
from data_pipeline.shards import read_mels, read_split
from genre.sweep.plan import shard_mib
from genre.train.batches import read_windows
from genre.train.windows import Windows, buffered_batches


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


def slotted(tracks: int = 4, slots: int = 3, offsets: int = 4) -> Windows:
    """Every (track, slot) with all its offsets: segment = slot * offsets + j, label = the window's row."""
    rows = [(t, s * offsets + j) for t in range(tracks) for s in range(slots) for j in range(offsets)]
    mels = torch.zeros(len(rows), 2, 2, dtype=torch.float16)
    return Windows(
        mels, torch.arange(len(rows)), tuple(f"t{t}" for t, _ in rows), torch.tensor([s for _, s in rows])
    )


def test_random_offsets_draw_one_window_per_track_and_slot_anew_each_epoch_and_the_same_for_a_seed():
    windows, offsets = slotted(), 4
    slots_of = windows.slots(offsets)
    drawn = windows.one_per_slot(slots_of, seed=3, epoch=0)
    slots = [(track, int(s) // offsets) for track, s in zip(drawn.track_ids, drawn.segments, strict=True)]
    assert len(slots) == len(set(slots)) == 4 * 3  # every (track, slot) exactly once
    offsets_drawn = [int(s) % offsets for s in drawn.segments]
    assert len(set(offsets_drawn)) > 1  # not always the grid's window
    assert torch.equal(windows.one_per_slot(slots_of, seed=3, epoch=0).labels, drawn.labels)
    assert not torch.equal(windows.one_per_slot(slots_of, seed=3, epoch=1).labels, drawn.labels)
    grid = windows.grid(offsets)
    assert [int(s) % offsets for s in grid.segments] == [0] * 12 and len(grid) == 12


def chunks_of(labels: list[int], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mels, labels) chunks whose mel value is the row's number, to follow each row."""
    rows = torch.arange(len(labels), dtype=torch.float16)[:, None, None].expand(-1, 2, 3).contiguous()
    targets = torch.tensor(labels)
    return [(rows[i : i + size].clone(), targets[i : i + size].clone()) for i in range(0, len(labels), size)]


def test_the_shuffle_buffer_passes_every_row_once_in_batches_the_last_one_smaller():
    batches = list(buffered_batches(chunks_of(list(range(103)), 10), batch_size=8, buffer_rows=16, seed=1))
    rows = torch.cat([batch["mel"][:, 0, 0] for batch in batches]).long().tolist()
    assert sorted(rows) == list(range(103))
    assert [len(batch["label"]) for batch in batches] == [8] * 12 + [7]
    # Each row keeps its label.
    assert all(torch.equal(batch["mel"][:, 0, 0].long(), batch["label"]) for batch in batches)


def test_the_shuffle_buffer_mixes_a_sorted_stream_and_repeats_for_a_seed():
    genres = [row // 50 for row in range(500)]  # ten genres, one after another

    def labels(seed: int) -> list[list[int]]:
        return [b["label"].tolist() for b in buffered_batches(chunks_of(genres, 25), 10, 100, seed)]

    first = labels(0)
    assert labels(0) == first and labels(1) != first
    # From a buffer of 100 rows (two genres' worth), a batch holds rows from up to 100 rows back.
    assert len(set(first[0])) >= 2 and max(max(b) - min(b) for b in first) >= 2


def test_a_one_row_buffer_keeps_the_order_and_a_large_one_shuffles_everything():
    order = list(range(40))
    kept = list(buffered_batches(chunks_of(order, 7), batch_size=40, buffer_rows=1, seed=0))
    assert kept[0]["label"].tolist() == order
    shuffled = list(buffered_batches(chunks_of(order, 7), batch_size=40, buffer_rows=1000, seed=0))
    assert sorted(shuffled[0]["label"].tolist()) == order != shuffled[0]["label"].tolist()
