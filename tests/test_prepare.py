"""`prepare` through the real Ray Data path: shards, values, splits, manifest, bad input."""

import json
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
import torchaudio

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.prepare import PrepareConfig, prepare
from data_pipeline.shards import read_mels, read_split, tracks_per_shard
from data_pipeline.split import SPLITS
from tests.audio_factory import make_clip, make_collection
from tests.test_features import direct_log_mel


def quiet(_: str) -> None:
    pass


def all_rows(dataset: Path):
    return {split: read_split(dataset, split) for split in SPLITS}


def test_every_track_gives_whole_segments_of_the_configured_shape(prepared):
    tables = all_rows(prepared.out)
    assert sum(t.num_rows for t in tables.values()) == 15 * 2  # 7 s tracks: two 3 s segments each
    for table in tables.values():
        mels = read_mels(table)
        assert mels.dtype.name == "float16"
        assert mels.shape[1:] == (128, 130)
        assert table.column_names == ["track_id", "segment", "label", "genre", "split", "mel"]


def test_shard_values_equal_torchaudio_on_the_same_audio(prepared, collection):
    table = read_split(prepared.out, "train")
    track_id = table.column("track_id")[0].as_py()
    samples, _ = soundfile.read(collection / track_id, dtype="float32")
    config = FeatureConfig()
    for row, mel in zip(table.to_pylist(), read_mels(table), strict=True):
        if row["track_id"] != track_id:
            continue
        start = row["segment"] * config.segment_samples
        window = torch.from_numpy(samples[start : start + config.segment_samples])
        expected = direct_log_mel(window, config)
        # float16 keeps about 3 decimal digits: at -80 dB a step is 0.06 dB.
        torch.testing.assert_close(torch.tensor(mel, dtype=torch.float32), expected, atol=0.07, rtol=0)


def test_with_track_split_no_track_is_in_two_splits(prepared):
    splits_of = defaultdict(set)
    for split, table in all_rows(prepared.out).items():
        for track_id in table.column("track_id").to_pylist():
            splits_of[track_id].add(split)
    assert len(splits_of) == 15
    assert all(len(splits) == 1 for splits in splits_of.values())


def test_track_split_is_stratified_by_genre(prepared):
    per_genre = defaultdict(lambda: defaultdict(set))
    for split, table in all_rows(prepared.out).items():
        for row in table.select(["track_id", "genre"]).to_pylist():
            per_genre[row["genre"]][split].add(row["track_id"])
    for genre in ("genre0", "genre1", "genre2"):
        sizes = {split: len(ids) for split, ids in per_genre[genre].items()}
        assert sizes == {"train": 3, "val": 1, "test": 1}


def test_labels_are_sorted_genre_indices(prepared):
    assert prepared.manifest["labels"] == {"0": "genre0", "1": "genre1", "2": "genre2"}
    for table in all_rows(prepared.out).values():
        for row in table.select(["label", "genre"]).to_pylist():
            assert prepared.manifest["labels"][str(row["label"])] == row["genre"]


def test_the_manifest_describes_the_dataset(prepared, collection):
    manifest = json.loads((prepared.out / "manifest.json").read_text())
    assert manifest["features"] == FeatureConfig().to_dict()
    assert manifest["split"] == {
        "protocol": "track",
        "method": "stratified",
        "seed": 3,
        "ratios": {"train": 0.6, "val": 0.2, "test": 0.2},
        "leaks_tracks_across_splits": False,
    }
    assert manifest["counts"]["train"] == {"tracks": 9, "segments": 18}
    assert manifest["counts"]["total"] == {"tracks": 15, "segments": 30}
    assert manifest["rejects"] == []
    assert manifest["source"] == {"path": str(collection.resolve()), "kind": "folder"}
    assert {"python", "torch", "torchaudio", "ray", "pyarrow", "soundfile"} <= set(manifest["versions"])
    shard_rows = sum(s["rows"] for split in SPLITS for s in manifest["shards"][split])
    assert shard_rows == 30
    # 15 tracks in tasks of 8 (the fewest chosen), ordered by split: train's 9 tracks (2 segments
    # each) in the first task's file and in one of the second's.
    assert manifest["run"]["tracks_per_shard"] == 8
    assert sorted(s["rows"] for s in manifest["shards"]["train"]) == [2, 16]
    for split in SPLITS:
        for shard in manifest["shards"][split]:
            assert pq.read_metadata(prepared.out / shard["path"]).num_rows == shard["rows"]


@pytest.mark.parametrize(
    ("tracks", "cpus", "seconds", "expected"),
    [
        (20, 2, 30, 8),  # small collections: at least 8 tracks a task
        (70, 2, 30, 9),  # about 4 tasks per CPU: 8 tasks of 9
        (1000, 2, 30, 64),  # at most 64 tracks a task
        (1000, 16, 30, 16),  # 63 tasks over 16 CPUs
        (1000, 0, 30, 64),  # a cluster with no CPU up yet counts as one
        (1000, 2, 300, 6),  # long tracks: at most 32 audio minutes a task
        (20, 2, 3600, 1),  # hour-long ones one by one
    ],
)
def test_shard_size_follows_the_collection_and_the_cluster(tracks, cpus, seconds, expected):
    assert tracks_per_shard(tracks, cpus, seconds) == expected


def test_the_same_seed_gives_identical_shards(ray_session, collection, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        prepare(PrepareConfig(source=collection, out=out, seed=11), progress=quiet)
    files = [sorted(p.relative_to(out) for p in out.rglob("*.parquet")) for out in outs]
    assert files[0] == files[1] and files[0]
    for relative in files[0]:
        assert (outs[0] / relative).read_bytes() == (outs[1] / relative).read_bytes()


def test_segment_protocol_spreads_tracks_over_splits_and_says_so(ray_session, tmp_path):
    source = make_collection(tmp_path / "long", genres=2, tracks=3, seconds=31.0)
    result = prepare(PrepareConfig(source=source, out=tmp_path / "out", split="segment"), progress=quiet)
    assert result.manifest["split"]["protocol"] == "segment"
    assert result.manifest["split"]["leaks_tracks_across_splits"] is True
    splits_of = defaultdict(set)
    for split, table in all_rows(result.out).items():
        for track_id in table.column("track_id").to_pylist():
            splits_of[track_id].add(split)
    assert result.manifest["counts"]["total"]["segments"] == 6 * 10
    assert any(len(splits) > 1 for splits in splits_of.values())


def test_split_lists_assign_listed_tracks_and_report_missing_ones(ray_session, collection, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("genre0/genre0.00000.wav\ngenre1/genre1.00000.wav\n")
    (lists / "valid.txt").write_text("genre0/genre0.00001.wav\n")
    (lists / "test.txt").write_text("genre2/genre2.00000.wav\ngenre2/genre2.00099.wav\n")
    config = PrepareConfig(source=collection, out=tmp_path / "out", split_lists=str(lists))
    result = prepare(config, progress=quiet)
    counts = result.manifest["counts"]
    assert (counts["train"]["tracks"], counts["val"]["tracks"], counts["test"]["tracks"]) == (2, 1, 1)
    assert result.manifest["split"]["listed_but_missing"] == ["genre2/genre2.00099.wav"]
    assert len(result.manifest["split"]["unlisted_tracks_excluded"]) == 11


@pytest.fixture(scope="module")
def messy(ray_session, tmp_path_factory):
    """Good tracks, plus one of each kind of bad input, in one source folder."""
    root = make_collection(tmp_path_factory.mktemp("messy"), genres=2, tracks=3)
    good = (root / "genre0" / "genre0.00000.wav").read_bytes()
    (root / "genre0" / "cut-header.wav").write_bytes(good[:30])
    (root / "genre0" / "truncated.wav").write_bytes(good[: len(good) // 2])
    (root / "genre1" / "empty.wav").write_bytes(b"")
    (root / "genre1" / "text.wav").write_text("not audio at all\n" * 40)
    (root / "genre1" / "notes.txt").write_text("liner notes")
    make_clip(root / "genre1" / "short.wav", 2.0)
    make_clip(root / "genre0" / "stereo44k.flac", 6.5, sample_rate=44100, channels=2, seed=9)
    out = tmp_path_factory.mktemp("messy-out") / "dataset"
    return root, prepare(PrepareConfig(source=root, out=out), progress=quiet)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("genre0/cut-header.wav", "not decodable audio"),
        ("genre0/truncated.wav", "truncated file"),
        ("genre1/empty.wav", "empty file"),
        ("genre1/text.wav", "not decodable audio: Format not recognised"),
        ("genre1/notes.txt", "not decodable audio: Format not recognised"),  # by content, not name
        ("genre1/short.wav", "shorter than one 3 s segment (2.00 s)"),
    ],
)
def test_each_bad_input_is_rejected_with_its_reason(messy, name, reason):
    root, result = messy
    reasons = {r["path"]: r["reason"] for r in result.manifest["rejects"]}
    assert reason in reasons[str((root / name).resolve())]


def test_bad_inputs_cost_nothing_else(messy):
    _root, result = messy
    assert len(result.manifest["rejects"]) == 6
    # 6 good 7 s tracks (2 segments each) and the stereo 6.5 s file (2 segments).
    assert result.manifest["counts"]["total"] == {"tracks": 7, "segments": 14}


def test_a_stereo_44k_file_is_mixed_down_and_resampled(messy):
    root, result = messy
    table = pa.concat_tables(read_split(result.out, split) for split in SPLITS)
    table = table.filter(pc.equal(table.column("track_id"), "genre0/stereo44k.flac"))
    assert table.column("segment").to_pylist() == [0, 1]
    stereo, _ = soundfile.read(root / "genre0" / "stereo44k.flac", dtype="float32")
    mono = torchaudio.functional.resample(torch.from_numpy(stereo.mean(axis=1)), 44100, 22050)
    config = FeatureConfig()
    expected = direct_log_mel(mono[: config.segment_samples], config)
    actual = torch.tensor(read_mels(table)[0], dtype=torch.float32)
    torch.testing.assert_close(actual, expected, atol=0.07, rtol=0)


def test_an_out_holding_a_dataset_is_refused_unless_overwrite(ray_session, collection, tmp_path):
    out = tmp_path / "out"
    prepare(PrepareConfig(source=collection, out=out, seed=1), progress=quiet)
    with pytest.raises(UserInputError, match="already holds a dataset; pass --overwrite"):
        prepare(PrepareConfig(source=collection, out=out, seed=2), progress=quiet)
    result = prepare(PrepareConfig(source=collection, out=out, seed=2, overwrite=True), progress=quiet)
    assert json.loads((out / "manifest.json").read_text())["split"]["seed"] == 2
    assert result.out == out
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or replaced folder left


def test_a_folder_that_is_not_a_dataset_is_never_overwritten(collection, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(UserInputError, match="not empty and is not a genre dataset"):
        prepare(PrepareConfig(source=collection, out=tmp_path, overwrite=True), progress=quiet)
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_a_crash_part_way_leaves_no_out_and_no_partial_folder(ray_session, collection, tmp_path):
    def crash_on_first_progress(line: str) -> None:
        if "tracks," in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(source=collection, out=tmp_path / "out"), progress=crash_on_first_progress)
    assert list(tmp_path.iterdir()) == []


def test_a_csv_source_resolves_paths_beside_it_and_reports_missing_files(ray_session, collection, tmp_path):
    listing = collection / "list.csv"
    listing.write_text(
        "path,label\n"
        + "".join(f"genre{g}/genre{g}.{t:05d}.wav,style{g}\n" for g in range(2) for t in range(3))
        + "genre0/gone.wav,style0\n"
    )
    try:
        result = prepare(PrepareConfig(source=listing, out=tmp_path / "out"), progress=quiet)
    finally:
        listing.unlink()
    assert result.manifest["labels"] == {"0": "style0", "1": "style1"}
    assert result.manifest["counts"]["total"]["tracks"] == 6
    assert result.manifest["rejects"] == [
        {"path": str(collection.resolve() / "genre0" / "gone.wav"), "reason": "file not found"}
    ]


def test_train_hop_keeps_train_windows_between_the_grids_and_leaves_val_and_test_on_the_grid(
    ray_session, collection, tmp_path
):
    # 7 s tracks, 3 s windows every 1.5 s: slot 0 has its windows at 0 and 1.5 s, slot 1 only at 3 s
    # (the one at 4.5 s would end past the track).
    out = tmp_path / "hop"
    result = prepare(PrepareConfig(source=collection, out=out, train_hop=1.5), progress=lambda _: None)
    assert result.manifest["split"]["train_offsets"] == 2
    train = read_split(out, "train", columns=["track_id", "segment"])
    per_track = defaultdict(list)
    for track, segment in zip(train["track_id"].to_pylist(), train["segment"].to_pylist(), strict=True):
        per_track[track].append(segment)
    assert {tuple(sorted(s)) for s in per_track.values()} == {(0, 1, 2)}  # slot 0: j 0, 1; slot 1: j 0
    for split in ("val", "test"):
        segments = read_split(out, split, columns=["segment"])["segment"].to_pylist()
        assert set(segments) == {0, 1}
    with pytest.raises(UserInputError, match="must divide the 3 s window"):
        prepare(PrepareConfig(source=collection, out=tmp_path / "x", train_hop=0.7), progress=lambda _: None)
