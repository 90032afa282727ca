"""Splitting: stratified, seeded, by track; published lists; the study's segment protocol."""

from collections import Counter

import pytest

from data_pipeline.discover import Track
from data_pipeline.errors import UserInputError
from data_pipeline.split import (
    GTZAN_FILTERED,
    cv_splits,
    fold_name,
    parse_ratios,
    read_split_lists,
    segment_split,
    split_by_lists,
    split_by_track,
    split_into_folds,
    split_sizes,
)


def tracks(genres: int, per_genre: int) -> list[Track]:
    return [
        Track(f"/src/g{g}/g{g}.{t:05d}.wav", f"g{g}/g{g}.{t:05d}.wav", f"g{g}")
        for g in range(genres)
        for t in range(per_genre)
    ]


def test_every_genre_is_split_by_the_ratios():
    assignment = split_by_track(tracks(4, 10), (0.6, 0.2, 0.2), seed=0).assignment
    for g in range(4):
        counts = Counter(split for tid, split in assignment.items() if tid.startswith(f"g{g}/"))
        assert counts == {"train": 6, "val": 2, "test": 2}


def test_leftover_tracks_even_out_across_genres():
    # 7 tracks at 60/20/20 leaves one track per genre for val or test; they must alternate.
    assignment = split_by_track(tracks(10, 7), (0.6, 0.2, 0.2), seed=0).assignment
    assert Counter(assignment.values()) == {"train": 40, "val": 15, "test": 15}


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    first = split_by_track(tracks(3, 10), (0.6, 0.2, 0.2), seed=5).assignment
    assert split_by_track(tracks(3, 10), (0.6, 0.2, 0.2), seed=5).assignment == first
    assert split_by_track(tracks(3, 10), (0.6, 0.2, 0.2), seed=6).assignment != first


def test_a_genre_with_too_few_tracks_is_a_clear_error():
    few = [*tracks(2, 5), Track("/src/solo/a.wav", "solo/a.wav", "solo")]
    with pytest.raises(UserInputError, match="genre 'solo' has 1 track"):
        split_by_track(few, (0.6, 0.2, 0.2), seed=0)


@pytest.mark.parametrize("count", [3, 4, 7, 10, 101])
def test_split_sizes_sum_to_the_count_and_leave_no_split_empty(count):
    sizes = split_sizes(count, (0.6, 0.2, 0.2))
    assert sum(sizes) == count and min(sizes) >= 1


@pytest.mark.parametrize("text", ["0.6,0.2", "0.5,0.2,0.2", "a,b,c", "0,0.5,0.5", "-0.2,0.6,0.6"])
def test_bad_ratios_are_refused(text):
    with pytest.raises(UserInputError, match="--ratios"):
        parse_ratios(text)


def test_segment_protocol_is_seeded_and_spreads_one_track_over_splits():
    draws = [segment_split(1, "g0/a.wav", segment, (0.6, 0.2, 0.2)) for segment in range(200)]
    assert draws == [segment_split(1, "g0/a.wav", segment, (0.6, 0.2, 0.2)) for segment in range(200)]
    counts = Counter(draws)
    assert set(counts) == {"train", "val", "test"}
    assert 90 <= counts["train"] <= 150


def test_the_shipped_gtzan_filtered_lists_have_the_published_sizes():
    lists = read_split_lists(GTZAN_FILTERED)
    assert {split: len(names) for split, names in lists.items()} == {"train": 443, "val": 197, "test": 290}
    assert lists["train"][0] == "blues/blues.00029.wav"


def test_split_lists_match_without_extension_and_report_what_is_missing():
    source = [
        Track("/s/blues/blues.00000.au", "blues/blues.00000.au", "blues"),
        Track("/s/blues/blues.00001.au", "blues/blues.00001.au", "blues"),
        Track("/s/blues/blues.00002.au", "blues/blues.00002.au", "blues"),
    ]
    lists = {"train": ["blues/blues.00000.wav"], "val": ["blues.00001"], "test": ["blues/blues.00099.wav"]}
    result = split_by_lists(source, lists)
    assert result.assignment == {"blues/blues.00000.au": "train", "blues/blues.00001.au": "val"}
    assert result.missing_listed == ["blues/blues.00099.wav"]
    assert result.unlisted == ["blues/blues.00002.au"]


def test_split_lists_folder_must_hold_the_three_files(tmp_path):
    (tmp_path / "train.txt").write_text("a/b.wav\n")
    with pytest.raises(UserInputError, match=r"lack valid\.txt"):
        read_split_lists(tmp_path)


def test_folds_are_stratified_by_genre_hold_every_track_once_and_follow_the_seed():
    collection = tracks(3, 11)
    assignment = split_into_folds(collection, 5, seed=2).assignment
    assert set(assignment) == {t.track_id for t in collection}  # every track, in exactly one fold
    per_fold = Counter(assignment.values())
    assert set(per_fold) == {fold_name(k) for k in range(5)}
    assert max(per_fold.values()) - min(per_fold.values()) <= 1
    for g in range(3):
        genre_counts = Counter(f for track, f in assignment.items() if track.startswith(f"g{g}/"))
        assert sorted(genre_counts.values()) == [2, 2, 2, 2, 3]  # 11 tracks over 5 folds
    assert split_into_folds(collection, 5, seed=2).assignment == assignment
    assert split_into_folds(collection, 5, seed=3).assignment != assignment


def test_folds_refuse_too_few_folds_or_a_genre_smaller_than_the_folds():
    with pytest.raises(UserInputError, match="at least 3 folds"):
        split_into_folds(tracks(2, 10), 2, seed=0)
    with pytest.raises(UserInputError, match="genre 'g1' has 4 track"):
        split_into_folds(tracks(1, 5) + tracks(2, 4)[4:], 5, seed=0)


def test_each_fold_is_tested_once_validated_once_and_never_trained_on_when_it_is_held_out():
    folds = 5
    views = [cv_splits(k, folds) for k in range(folds)]
    assert sorted(view["test"] for view in views) == [fold_name(k) for k in range(folds)]
    assert sorted(view["val"] for view in views) == [fold_name(k) for k in range(folds)]
    for view in views:
        train = view["train"].split(",")
        assert len(train) == folds - 2
        assert view["test"] not in train and view["val"] not in train and view["test"] != view["val"]
