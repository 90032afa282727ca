"""Discovery: which files of a folder or CSV source become tracks, and why the others do not."""

import os

import pytest

from data_pipeline.discover import discover
from data_pipeline.errors import UserInputError
from tests.audio_factory import make_clip


def _reasons(discovery) -> dict[str, str]:
    return {os.path.basename(r.path): r.reason for r in discovery.skipped}


def test_a_symlinked_genre_folder_is_followed_and_keeps_its_name_under_the_source(tmp_path):
    make_clip(tmp_path / "audio" / "metal" / "x.wav", 0.5)
    make_clip(tmp_path / "src" / "rock" / "y.wav", 0.5)
    (tmp_path / "src" / "metal").symlink_to("../audio/metal")
    discovery = discover(tmp_path / "src")
    assert [(t.track_id, t.genre) for t in discovery.tracks] == [
        ("metal/x.wav", "metal"),
        ("rock/y.wav", "rock"),
    ]
    assert discovery.tracks[0].path == str((tmp_path / "audio" / "metal" / "x.wav").resolve())
    assert discovery.skipped == []


def test_a_symlinked_audio_file_is_followed(tmp_path):
    make_clip(tmp_path / "elsewhere" / "x.wav", 0.5)
    (tmp_path / "src" / "jazz").mkdir(parents=True)
    (tmp_path / "src" / "jazz" / "x.wav").symlink_to(tmp_path / "elsewhere" / "x.wav")
    assert [t.track_id for t in discover(tmp_path / "src").tracks] == ["jazz/x.wav"]


def test_a_folder_link_back_up_is_reported_as_a_loop_not_followed_forever(tmp_path):
    make_clip(tmp_path / "src" / "rock" / "y.wav", 0.5)
    (tmp_path / "src" / "rock" / "loop").symlink_to("..")
    discovery = discover(tmp_path / "src")
    assert [t.track_id for t in discovery.tracks] == ["rock/y.wav"]
    assert [r.path for r in discovery.skipped] == [str(tmp_path / "src" / "rock" / "loop")]
    assert discovery.skipped[0].reason.startswith("symbolic link loop")


def test_a_file_link_loop_is_reported(tmp_path):
    make_clip(tmp_path / "src" / "rock" / "y.wav", 0.5)
    (tmp_path / "src" / "rock" / "a.wav").symlink_to("b.wav")
    (tmp_path / "src" / "rock" / "b.wav").symlink_to("a.wav")
    reasons = _reasons(discover(tmp_path / "src"))
    assert set(reasons) == {"a.wav", "b.wav"}
    assert all(reason.startswith("symbolic link loop") for reason in reasons.values())


def test_a_broken_link_is_reported_with_its_target(tmp_path):
    make_clip(tmp_path / "src" / "rock" / "y.wav", 0.5)
    (tmp_path / "src" / "rock" / "gone.wav").symlink_to("../../moved/gone.wav")
    (tmp_path / "src" / "metal").symlink_to("../unmounted/metal")
    reasons = _reasons(discover(tmp_path / "src"))
    assert reasons == {
        "gone.wav": "broken symbolic link: its target ../../moved/gone.wav does not exist",
        "metal": "broken symbolic link: its target ../unmounted/metal does not exist",
    }


def test_hidden_files_and_folders_are_ignored(tmp_path):
    make_clip(tmp_path / "src" / "rock" / "y.wav", 0.5)
    make_clip(tmp_path / "src" / "rock" / ".cache" / "z.wav", 0.5)
    make_clip(tmp_path / "src" / ".trash" / "rock" / "w.wav", 0.5)
    (tmp_path / "src" / "rock" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "src" / "rock" / ".broken").symlink_to("nowhere")
    discovery = discover(tmp_path / "src")
    assert [t.track_id for t in discovery.tracks] == ["rock/y.wav"]
    assert discovery.skipped == []


def test_a_csv_with_a_byte_order_mark_reads_its_first_row(tmp_path):
    make_clip(tmp_path / "a.wav", 0.5)
    (tmp_path / "list.csv").write_text("a.wav,rock\n", encoding="utf-8-sig")
    discovery = discover(tmp_path / "list.csv")
    assert [(t.track_id, t.genre) for t in discovery.tracks] == [("a.wav", "rock")]
    assert discovery.skipped == []


def test_a_csv_that_is_not_utf8_is_one_clear_error_naming_the_file_and_line(tmp_path):
    make_clip(tmp_path / "a.wav", 0.5)
    (tmp_path / "list.csv").write_bytes("path,label\na.wav,rock\na.wav,música\n".encode("latin-1"))
    with pytest.raises(UserInputError, match=r"list\.csv:3: not UTF-8 text .*save the CSV as UTF-8"):
        discover(tmp_path / "list.csv")


def test_a_csv_path_outside_its_folder_gets_a_relative_normalised_track_id(tmp_path):
    make_clip(tmp_path / "audio" / "x.wav", 0.5)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.csv").write_text("../audio/./x.wav,rock\n")
    [track] = discover(tmp_path / "lists" / "list.csv").tracks
    assert track.track_id == "../audio/x.wav"
    assert track.path == str((tmp_path / "audio" / "x.wav").resolve())


def test_an_absolute_csv_path_outside_its_folder_stays_absolute(tmp_path):
    clip = make_clip(tmp_path / "audio" / "x.wav", 0.5).resolve()
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.csv").write_text(f"{clip},rock\n")
    assert [t.track_id for t in discover(tmp_path / "lists" / "list.csv").tracks] == [clip.as_posix()]


def test_a_csv_row_naming_a_listed_file_another_way_is_a_duplicate(tmp_path):
    make_clip(tmp_path / "audio" / "x.wav", 0.5)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.csv").write_text("../audio/x.wav,rock\n../lists/../audio/x.wav,jazz\n")
    discovery = discover(tmp_path / "lists" / "list.csv")
    assert [t.genre for t in discovery.tracks] == ["rock"]
    assert [r.reason for r in discovery.skipped] == ["listed twice (line 2)"]
