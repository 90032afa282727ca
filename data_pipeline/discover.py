"""Finding the labelled audio files of a source: a `<genre>/<file>` folder or a `path,label` CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.audio import AUDIO_EXTENSIONS, is_audio_path
from data_pipeline.errors import UserInputError


@dataclass(frozen=True)
class Track:
    """One labelled audio file. `track_id` is its path relative to the source, POSIX style."""

    path: str
    track_id: str
    genre: str


@dataclass(frozen=True)
class Reject:
    """A file that was not used, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class Discovery:
    """What a source holds: usable tracks, and the files skipped before decoding."""

    source: str
    kind: str
    tracks: list[Track] = field(default_factory=list)
    skipped: list[Reject] = field(default_factory=list)

    @property
    def genres(self) -> list[str]:
        """Label names, sorted: a label's index is its position here."""
        return sorted({track.genre for track in self.tracks})


def discover(source: str | Path) -> Discovery:
    """List the tracks of a folder `<genre>/<file>` or a CSV of `path,label`."""
    source = Path(source).expanduser()
    if not source.exists():
        raise UserInputError(f"source {str(source)!r} does not exist")
    if source.is_dir():
        discovery = _discover_folder(source)
    elif source.suffix.lower() == ".csv":
        discovery = _discover_csv(source)
    else:
        raise UserInputError(
            f"source {str(source)!r} is neither a folder of <genre>/<file> nor a .csv of path,label"
        )
    if not discovery.tracks:
        raise UserInputError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {str(source)!r}; "
            "expected SRC/<genre>/<file> or a CSV of path,label"
        )
    discovery.tracks.sort(key=lambda track: track.track_id)
    return discovery


def _discover_folder(root: Path) -> Discovery:
    discovery = Discovery(source=str(root.resolve()), kind="folder")
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue  # hidden files (.DS_Store, editor droppings) are nobody's music
        if len(relative.parts) < 2:
            # A README or CSV beside the genre folders is expected; only loose audio is reported.
            if is_audio_path(path):
                discovery.skipped.append(Reject(str(path), "audio file not inside a <genre>/ folder"))
        elif not is_audio_path(path):
            discovery.skipped.append(Reject(str(path), _unsupported(path)))
        else:
            discovery.tracks.append(Track(str(path.resolve()), relative.as_posix(), relative.parts[0]))
    return discovery


def _discover_csv(csv_path: Path) -> Discovery:
    discovery = Discovery(source=str(csv_path.resolve()), kind="csv")
    base = csv_path.resolve().parent
    seen: set[str] = set()
    with csv_path.open(newline="", encoding="utf-8") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            cells = [cell.strip() for cell in row]
            if not any(cells) or (line_number == 1 and [c.lower() for c in cells] == ["path", "label"]):
                continue
            if len(cells) != 2 or not all(cells):
                raise UserInputError(
                    f"{csv_path}:{line_number}: expected two columns 'path,label', got {row!r}"
                )
            relative, genre = cells
            path = (base / relative).resolve()
            track_id = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
            if track_id in seen:
                discovery.skipped.append(Reject(str(path), f"listed twice (line {line_number})"))
            elif not path.is_file():
                discovery.skipped.append(Reject(str(path), "file not found"))
            elif not is_audio_path(path):
                discovery.skipped.append(Reject(str(path), _unsupported(path)))
            else:
                discovery.tracks.append(Track(str(path), track_id, genre))
            seen.add(track_id)
    return discovery


def _unsupported(path: Path) -> str:
    extension = path.suffix or "(none)"
    return f"unsupported extension {extension!r}; expected one of {', '.join(AUDIO_EXTENSIONS)}"
