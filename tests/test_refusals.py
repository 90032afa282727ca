"""What must be refused before any work, in one line, with nothing of the user's lost.

Every case here is stopped before Ray starts: SRC and OUT nested, `--overwrite` of a folder holding
other files, a genre left too small by broken files, damaged shards, a `--resume` that would not
continue the sweep in OUT, and options out of range.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from data_pipeline.errors import UserInputError
from data_pipeline.manifest import manifest_hash
from data_pipeline.prepare import PrepareConfig, prepare
from genre.cli import EXIT_USER_ERROR, main
from genre.sweep.driver import SweepConfig
from genre.sweep.record import SWEEP_FILE, SweepRecord, write_sweep_record
from tests.audio_factory import make_clip, make_collection


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def dataset_copy(prepared, tmp_path) -> Path:
    """A prepared dataset of the tests' own, to damage or to nest audio in."""
    return Path(shutil.copytree(prepared.out, tmp_path / "dsx"))


def test_src_inside_a_dataset_out_is_refused_even_with_overwrite_and_the_audio_stays(
    capsys, collection, dataset_copy
):
    music = Path(shutil.copytree(collection, dataset_copy / "music"))
    before = files_under(dataset_copy)
    error = one_line_error(capsys, ["prepare", str(music), str(dataset_copy), "--overwrite"])
    assert "is inside OUT" in error
    assert files_under(dataset_copy) == before


def test_out_inside_src_is_refused(capsys, collection, tmp_path):
    src = Path(shutil.copytree(collection, tmp_path / "music"))
    error = one_line_error(capsys, ["prepare", str(src), str(src / "dataset")])
    assert "is inside SRC" in error
    assert not (src / "dataset").exists()


def test_a_symlinked_genre_folder_leading_into_out_is_refused(capsys, collection, dataset_copy, tmp_path):
    shutil.copytree(collection / "genre0", dataset_copy / "kept-audio")
    src = Path(shutil.copytree(collection, tmp_path / "music", ignore=shutil.ignore_patterns("genre0")))
    (src / "genre0").symlink_to(dataset_copy / "kept-audio")
    error = one_line_error(capsys, ["prepare", str(src), str(dataset_copy), "--overwrite"])
    assert "names audio inside OUT" in error
    assert (dataset_copy / "kept-audio" / "genre0.00000.wav").is_file()


def test_overwrite_refuses_a_dataset_folder_that_holds_other_files(capsys, collection, dataset_copy):
    (dataset_copy / "notes.txt").write_text("my notes on this dataset")
    (dataset_copy / "train" / "extra.parquet").write_bytes(b"mine")
    before = files_under(dataset_copy)
    error = one_line_error(capsys, ["prepare", str(collection), str(dataset_copy), "--overwrite"])
    assert "holds files its dataset does not list (notes.txt and 1 more)" in error
    assert files_under(dataset_copy) == before


def test_a_genre_left_too_small_by_broken_files_is_refused_naming_them(capsys, tmp_path):
    src = make_collection(tmp_path / "src", genres=2, tracks=5)
    make_clip(src / "rock" / "good-1.wav", 7.0)
    make_clip(src / "rock" / "good-2.wav", 7.0, seed=1)
    (src / "rock" / "empty.wav").write_bytes(b"")
    (src / "rock" / "text.wav").write_text("not audio\n" * 50)
    (src / "rock" / "cut.wav").write_bytes((src / "rock" / "good-1.wav").read_bytes()[:5000])
    error = one_line_error(capsys, ["prepare", str(src), str(tmp_path / "out")])
    # Split before screening, the 5 rock files took 3/1/1 places; only 2 are usable.
    assert "genre 'rock' has 2 track(s)" in error and "3 file(s) of SRC could not be used" in error
    assert not (tmp_path / "out").exists()


def test_a_genre_of_broken_files_only_is_refused(capsys, tmp_path):
    src = make_collection(tmp_path / "src", genres=2, tracks=3)
    (src / "rock").mkdir()
    (src / "rock" / "empty.wav").write_bytes(b"")
    error = one_line_error(capsys, ["prepare", str(src), str(tmp_path / "out")])
    assert error.endswith(
        f"no file of genre 'rock' can be used ({src / 'rock' / 'empty.wav'}: empty file (0 bytes))"
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_a_damaged_shard_is_named_before_the_sweep_starts(capsys, dataset_copy, tmp_path, damage):
    shard = sorted((dataset_copy / "val").glob("*.parquet"))[0]
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "garbage":
        shard.write_bytes(b"\x00garbage" * 100)
    else:
        shard.unlink()
    error = one_line_error(capsys, ["sweep", str(dataset_copy), str(tmp_path / "run"), "--models", "cnn3"])
    assert str(shard) in error and "prepare the dataset again" in error
    assert not (tmp_path / "run").exists()


def test_max_failures_below_zero_is_refused(capsys, prepared, tmp_path):
    argv = ["sweep", str(prepared.out), str(tmp_path / "run"), "--max-failures", "-1"]
    assert "--max-failures must be 0 or more, not -1" in one_line_error(capsys, argv)


def recorded_sweep(data: Path, out: Path, **options) -> SweepRecord:
    """OUT as a started sweep of cnn3 for 20 epochs leaves it."""
    config = SweepConfig.from_options({"models": ["cnn3"], "epochs": 20, **options}, data=data, out=out)
    out.mkdir(parents=True)
    record = SweepRecord(str(out), str(data), manifest_hash(data), config.options())
    write_sweep_record(out, record)
    return record


def test_resume_refuses_options_that_differ_from_the_sweeps_naming_them(capsys, prepared, tmp_path):
    out = tmp_path / "run"
    recorded_sweep(prepared.out, out)
    argv = ["sweep", str(prepared.out), str(out), "--resume", "--epochs", "5", "--models", "cnn3,cnn4"]
    error = one_line_error(capsys, argv)
    assert "--models cnn3,cnn4 (the sweep has cnn3)" in error
    assert "--epochs 5 (the sweep has 20)" in error


def test_resume_alone_takes_the_sweeps_options_and_changeable_ones_pass_the_check(capsys, prepared, tmp_path):
    out = tmp_path / "run"
    recorded_sweep(prepared.out, out)
    # The options check passes (nothing of --epochs 15, the default, is applied): the refusal that
    # follows is that no trial ever ran, as this sweep never reached Ray.
    for extra in ([], ["--max-failures", "3", "--gpus-per-trial", "0"]):
        error = one_line_error(capsys, ["sweep", str(prepared.out), str(out), "--resume", *extra])
        assert "never started a trial" in error and "run it again without --resume" in error


def test_resume_of_a_sweep_recorded_without_todays_options_is_refused_naming_them(capsys, prepared, tmp_path):
    out = tmp_path / "run"
    record = recorded_sweep(prepared.out, out)
    options = {k: v for k, v in record.options.items() if k not in ("lr_schedule", "patience")}
    write_sweep_record(out, SweepRecord(record.storage, record.data, record.manifest_sha256, options))
    error = one_line_error(
        capsys, ["sweep", str(prepared.out), str(out), "--resume", "--lr-schedule", "cosine"]
    )
    assert "started by a genre without --lr-schedule, --patience" in error and "new OUT" in error


def test_resume_with_nothing_to_resume_is_refused(capsys, prepared, tmp_path):
    error = one_line_error(capsys, ["sweep", str(prepared.out), str(tmp_path / "run"), "--resume"])
    assert "holds no sweep to resume" in error and "leave out --resume" in error


def test_resume_on_another_dataset_is_refused(capsys, prepared, dataset_copy, tmp_path):
    out = tmp_path / "run"
    recorded_sweep(prepared.out, out)
    manifest = json.loads((dataset_copy / "manifest.json").read_text())
    manifest["created"] = "another day"
    (dataset_copy / "manifest.json").write_text(json.dumps(manifest))
    error = one_line_error(capsys, ["sweep", str(dataset_copy), str(out), "--resume"])
    assert "is not the dataset the sweep in OUT was started on" in error


def test_a_corrupt_sweep_record_is_one_line(capsys, prepared, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / SWEEP_FILE).write_text('{"storage": ')
    error = one_line_error(capsys, ["sweep", str(prepared.out), str(out), "--resume"])
    assert f"{out / SWEEP_FILE} cannot be read" in error


def test_a_file_that_fails_only_when_decoded_and_leaves_a_split_without_its_genre_stops_prepare(
    ray_session, tmp_path
):
    src = make_collection(tmp_path / "src", genres=2, tracks=3)
    make_clip(src / "rock" / "good-1.wav", 7.0)
    make_clip(src / "rock" / "good-2.wav", 7.0, seed=1)
    # A sound header over NaN samples: the header probe passes it, decoding rejects it.
    soundfile.write(
        src / "rock" / "nan.wav", np.full(7 * 22050, np.nan, dtype=np.float32), 22050, subtype="FLOAT"
    )
    with pytest.raises(UserInputError, match=r"after decoding, the \w+ split has no track of 'rock'"):
        prepare(PrepareConfig(source=src, out=tmp_path / "out"), progress=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no dataset, no partial folder
