"""Assigning tracks (or, for the 2021 study's protocol, segments) to train/val/test."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from data_pipeline.audio import AUDIO_EXTENSIONS
from data_pipeline.discover import Track
from data_pipeline.errors import UserInputError

SPLITS = ("train", "val", "test")
# Published lists name the validation split "valid"; everything inside genre says "val".
LIST_FILES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}
# The fault-filtered GTZAN split (Kereliuk et al. 2015; 443/197/290 tracks), shipped with genre.
GTZAN_FILTERED = "gtzan-filtered"
PROTOCOLS = ("track", "segment")


@dataclass
class TrackSplit:
    """Where each track goes, and what split lists named that the source lacks."""

    assignment: dict[str, str]
    missing_listed: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)


def parse_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    """'0.6,0.2,0.2' -> (0.6, 0.2, 0.2), checked to be three non-negative shares summing to 1."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise UserInputError(f"--ratios must be three numbers like 0.6,0.2,0.2, got {text!r}") from None
    if len(values) != 3 or any(v < 0 or not math.isfinite(v) for v in values):
        raise UserInputError(f"--ratios must be three non-negative numbers (train,val,test), got {text!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise UserInputError(f"--ratios must sum to 1, got {text!r} (sum {sum(values):g})")
    if values[0] == 0:
        raise UserInputError("--ratios must give the train split a share above 0")
    return values[0], values[1], values[2]


def split_sizes(count: int, ratios: Sequence[float], behind: Sequence[float] | None = None) -> list[int]:
    """Split `count` items by `ratios` (largest remainder), every non-zero share getting at least one.

    Equal remainders go to the split furthest `behind` its share so far, so that across genres the
    leftovers even out instead of always landing in the same split.
    """
    exact = [count * ratio for ratio in ratios]
    sizes = [math.floor(share) for share in exact]
    behind = behind or [0.0] * len(ratios)
    by_remainder = sorted(
        range(len(ratios)), key=lambda i: (round(exact[i] - sizes[i], 9), behind[i]), reverse=True
    )
    for i in by_remainder[: count - sum(sizes)]:
        sizes[i] += 1
    for i, ratio in enumerate(ratios):
        if ratio > 0 and sizes[i] == 0:
            donor = max(range(len(sizes)), key=lambda j: sizes[j])
            sizes[donor] -= 1
            sizes[i] += 1
    return sizes


def split_by_track(tracks: Sequence[Track], ratios: Sequence[float], seed: int) -> TrackSplit:
    """Stratified by genre and seeded: each genre's tracks are shuffled, then cut by `ratios`."""
    by_genre: dict[str, list[str]] = defaultdict(list)
    for track in tracks:
        by_genre[track.genre].append(track.track_id)
    needed = sum(1 for ratio in ratios if ratio > 0)
    assignment: dict[str, str] = {}
    behind = [0.0] * len(SPLITS)
    for genre, track_ids in sorted(by_genre.items()):
        if len(track_ids) < needed:
            shares = "/".join(f"{r:g}" for r in ratios)
            raise UserInputError(
                f"genre {genre!r} has {len(track_ids)} track(s); a {shares} split by track needs at "
                f"least {needed} per genre (add tracks, or change --ratios)"
            )
        shuffled = sorted(track_ids)
        # A string seed is hashed by SHA-512: the same split on every machine and Python run.
        random.Random(f"{seed}:{genre}").shuffle(shuffled)
        sizes = split_sizes(len(shuffled), ratios, behind)
        behind = [b + len(shuffled) * r - n for b, r, n in zip(behind, ratios, sizes, strict=True)]
        start = 0
        for split, size in zip(SPLITS, sizes, strict=True):
            for track_id in shuffled[start : start + size]:
                assignment[track_id] = split
            start += size
    return TrackSplit(assignment)


def fold_name(fold: int) -> str:
    """The shard group (folder and manifest key) of fold `fold` in a dataset prepared with --folds."""
    return f"fold-{fold}"


def cv_splits(fold: int, folds: int) -> dict[str, str]:
    """Cross-validation trial `fold`'s view: it tests on its fold, validates on the next, trains on the rest.

    {"test": "fold-k", "val": "fold-(k+1 mod K)", "train": "fold-a,fold-b,..."}: each value names the
    shard groups of that split, comma-separated.
    """
    if not 0 <= fold < folds or folds < 3:
        raise ValueError(f"fold {fold} of {folds}: need 0 <= fold < folds and at least 3 folds")
    val = (fold + 1) % folds
    train = [fold_name(k) for k in range(folds) if k not in (fold, val)]
    return {"train": ",".join(train), "val": fold_name(val), "test": fold_name(fold)}


def split_into_folds(tracks: Sequence[Track], folds: int, seed: int) -> TrackSplit:
    """Stratified k-fold by track, seeded: each genre's tracks shuffled, then dealt into the folds in turn.

    Each genre starts dealing where the previous one stopped, so fold sizes differ by at most one
    track overall, and a genre's tracks by at most one between folds. Tracks are never split.
    """
    if folds < 3:
        raise UserInputError(
            f"--folds {folds}: cross-validation needs at least 3 folds (one to test, one to validate, one "
            "to train on)"
        )
    by_genre: dict[str, list[str]] = defaultdict(list)
    for track in tracks:
        by_genre[track.genre].append(track.track_id)
    assignment: dict[str, str] = {}
    dealt = 0
    for genre, track_ids in sorted(by_genre.items()):
        if len(track_ids) < folds:
            raise UserInputError(
                f"genre {genre!r} has {len(track_ids)} track(s); --folds {folds} needs at least {folds} per "
                "genre, so that every fold holds each genre (add tracks, or use fewer folds)"
            )
        shuffled = sorted(track_ids)
        random.Random(f"{seed}:folds:{genre}").shuffle(shuffled)
        for track_id in shuffled:
            assignment[track_id] = fold_name(dealt % folds)
            dealt += 1
    return TrackSplit(assignment)


def segment_split(seed: int, track_id: str, segment: int, ratios: Sequence[float]) -> str:
    """The 2021 study's protocol: each segment drawn into a split on its own (tracks leak)."""
    draw = random.Random(f"{seed}:{track_id}:{segment}").random()
    cumulative = 0.0
    for split, ratio in zip(SPLITS, ratios, strict=True):
        cumulative += ratio
        if draw < cumulative:
            return split
    return SPLITS[0]


def read_split_lists(location: str | Path) -> dict[str, list[str]]:
    """Read train.txt, valid.txt, test.txt from a folder, or the shipped `gtzan-filtered` lists."""
    if str(location) == GTZAN_FILTERED:
        folder = resources.files("data_pipeline") / "split_lists" / "gtzan_filtered"
    else:
        folder = Path(location).expanduser()
        if not folder.is_dir():
            raise UserInputError(
                f"--split-lists {str(location)!r} is not a folder (want train.txt, valid.txt, "
                f"test.txt) nor {GTZAN_FILTERED!r}"
            )
    lists: dict[str, list[str]] = {}
    for split, name in LIST_FILES.items():
        entry = folder / name
        if not entry.is_file():
            raise UserInputError(f"split lists in {str(location)!r} lack {name}")
        lines = entry.read_text(encoding="utf-8").splitlines()
        lists[split] = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return lists


def split_by_lists(tracks: Sequence[Track], lists: dict[str, list[str]]) -> TrackSplit:
    """Assign tracks named in the lists; report listed files the source lacks and unlisted tracks.

    A list entry matches a track by its path without extension ('blues/blues.00012' matches
    'blues/blues.00012.au'), or by file name alone when the entry has no folder.
    """
    by_path = {_without_extension(t.track_id): t.track_id for t in tracks}
    by_name: dict[str, list[str]] = defaultdict(list)
    for track in tracks:
        by_name[_without_extension(track.track_id.rsplit("/", 1)[-1])].append(track.track_id)
    result = TrackSplit({})
    for split, entries in lists.items():
        for entry in entries:
            key = _without_extension(entry.replace("\\", "/"))
            matches = [by_path[key]] if key in by_path else by_name.get(key, []) if "/" not in key else []
            if not matches:
                result.missing_listed.append(entry)
            for track_id in matches:
                previous = result.assignment.setdefault(track_id, split)
                if previous != split:
                    raise UserInputError(f"{entry!r} is listed in both {previous} and {split}")
    result.unlisted = sorted(t.track_id for t in tracks if t.track_id not in result.assignment)
    if not result.assignment:
        raise UserInputError("no file of the source is named in the split lists")
    return result


def _without_extension(path: str) -> str:
    # Only audio extensions are dropped: GTZAN names themselves hold dots ('blues.00012').
    path = path.lower()
    suffix = Path(path).suffix
    return path[: -len(suffix)] if suffix in AUDIO_EXTENSIONS else path
