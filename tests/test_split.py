"""Splitting: stratified, seeded, by track; published lists; the study's segment protocol."""

from collections import Counter

import pytest

from data_pipeline.discover import Track
from data_pipeline.errors import UserInputError
from data_pipeline.split import (
    GTZAN_FILTERED,
    parse_ratios,
    read_split_lists,
    segment_split,
    split_by_lists,
    split_by_track,
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
