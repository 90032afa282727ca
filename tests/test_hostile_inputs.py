"""Inputs made to hurt: configs without bounds, an --out holding the user's files, audio that lies about
itself (an ID3 tag and no audio, a codec that cannot seek, a WAV named .m4a), audio below the band edge.

All but one test run without Ray: the refusals come before it starts, the decoders are called directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from data_pipeline.audio import (
    AudioDecodeError,
    decode_mono,
    load_mono,
    low_rate_note,
    probe_audio,
)
from data_pipeline.discover import discover
from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.prepare import PrepareConfig, PrepareResult, prepare
from data_pipeline.screen import screen
from genre.evaluate import evaluate
from genre.sweep.options import SweepConfig
from genre.sweep.options_file import MAX_FILE_BYTES, read_options_file
from genre.sweep.record import SWEEP_FILE, read_sweep_record
from tests.audio_factory import make_clip
from tests.test_refusals import one_line_error

# --- configs (issue 28, item 6) --------------------------------------------------------------------

# Nine lists of nine, each of the one before: under 400 bytes that stand for 9**9 (387 million) names.
ALIAS_BOMB = 'models:\n  - &a ["cnn3","cnn3","cnn3","cnn3","cnn3","cnn3","cnn3","cnn3","cnn3"]\n' + "".join(
    f"  - &{name} [{','.join([f'*{before}'] * 9)}]\n"
    for before, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def sweep_with_config(capsys, tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    error = one_line_error(capsys, ["sweep", "--config", str(path), str(tmp_path / "d"), str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    return error


def test_a_config_over_the_size_cap_is_refused_before_it_is_parsed(capsys, tmp_path):
    text = "models: [" + "cnn3, " * (MAX_FILE_BYTES // 6) + "cnn4]\n"
    assert len(text) > MAX_FILE_BYTES
    error = sweep_with_config(capsys, tmp_path, text)
    assert "is refused: it is over 1,000,000 bytes" in error


def test_an_alias_bomb_is_refused_in_one_line(capsys, tmp_path):
    assert len(ALIAS_BOMB) < 400
    error = sweep_with_config(capsys, tmp_path, ALIAS_BOMB)
    assert "is refused: its aliases stand for more than 10,000 values" in error


def test_an_alias_to_the_value_that_holds_it_is_refused(capsys, tmp_path):
    error = sweep_with_config(capsys, tmp_path, "models: &loop [cnn3, *loop]\n")
    assert "an alias refers to the value that holds it" in error


def test_a_config_with_a_few_aliases_still_reads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("epochs: &n 2\nnum_samples: *n\nmodels: [cnn3, cnn4]\n")
    assert read_options_file(path) == {"epochs": 2, "num_samples": 2, "models": ["cnn3", "cnn4"]}


def test_a_bombed_sweep_record_is_one_line_too(tmp_path):
    (tmp_path / SWEEP_FILE).write_text(ALIAS_BOMB)
    with pytest.raises(UserInputError, match=r"cannot be read \(its aliases stand for more than"):
        read_sweep_record(tmp_path)


@pytest.mark.parametrize(
    "argv",
    [
        ["--models", "cnn3,cnn3"],
        ["--models", "cnn3, cnn4 ,cnn3"],
    ],
)
def test_a_model_named_twice_is_refused(capsys, tmp_path, argv):
    error = one_line_error(capsys, ["sweep", str(tmp_path / "d"), str(tmp_path / "o"), *argv])
    assert "--models names cnn3 more than once" in error and "--seeds" in error


def test_a_config_naming_a_model_twice_is_refused(capsys, tmp_path):
    error = sweep_with_config(capsys, tmp_path, yaml.safe_dump({"models": ["cnn4", "cnn3", "cnn4"]}))
    assert "--models names cnn4 more than once" in error


def test_a_sweep_config_naming_a_model_twice_is_refused_by_its_check(tmp_path):
    config = SweepConfig(data=tmp_path, out=tmp_path / "o", models=("cnn3", "vgg11", "cnn3"))
    with pytest.raises(UserInputError, match="--models names cnn3 more than once"):
        config.check({})


# --- evaluate --out (item 10) -----------------------------------------------------------------------

REPORT = {"model": "cnn3", "checkpoint": "c", "split": "test", "test_segment_accuracy": 0.5}


def refused_out(out: Path) -> str:
    # The folder is checked before DATA or the checkpoint are read: neither exists here.
    with pytest.raises(UserInputError) as refused:
        evaluate(out.parent / "no-data", out.parent / "no-checkpoint.pt", out)
    return str(refused.value)


def test_an_out_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "report"
    out.write_text("mine")
    assert "--out" in refused_out(out) and "is not a folder" in refused_out(out)
    assert out.read_text() == "mine"


def test_an_out_holding_the_users_metrics_is_refused_and_kept(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}')
    (out / "per_genre.csv").write_text("my,table\n")
    assert "holds files that are not an evaluation's (metrics.json)" in refused_out(out)
    assert (out / "metrics.json").read_text() == '{"mine": 1}'


def test_an_out_holding_an_evaluation_and_other_files_is_refused(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps(REPORT))
    (out / "notes.txt").write_text("mine")
    (out / "confusion.png").symlink_to(tmp_path / "elsewhere.png")
    assert "(confusion.png and 1 more)" in refused_out(out)


@pytest.mark.parametrize("files", [{}, {"metrics.json": REPORT, "per_genre.csv": "genre\n"}])
def test_a_new_empty_or_earlier_evaluation_folder_gets_past_the_check(tmp_path, files):
    out = tmp_path / "report"
    if files:
        out.mkdir()
        for name, content in files.items():
            (out / name).write_text(json.dumps(content) if isinstance(content, dict) else content)
    with pytest.raises(UserInputError, match="is not a prepared dataset"):
        evaluate(tmp_path / "no-data", tmp_path / "no-checkpoint.pt", out)


# --- what a file holds (item 18) --------------------------------------------------------------------


def id3_only(path: Path) -> Path:
    """An ID3v2.4 tag (a title and padding) and nothing after it: what a tagger leaves of a lost MP3."""
    title = b"\x03a title"
    body = b"TIT2" + len(title).to_bytes(4, "big") + b"\x00\x00" + title + bytes(1024)
    size = len(body)
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ID3\x04\x00\x00" + syncsafe + body)
    return path


def test_an_mp3_holding_only_an_id3_tag_says_so(tmp_path):
    path = id3_only(tmp_path / "tagged.mp3")
    for read in (lambda: probe_audio(path, 1.0), lambda: decode_mono(path)):
        with pytest.raises(AudioDecodeError) as error:
            read()
        assert str(error.value) == "not decodable audio: an ID3 tag with no MP3 audio after it"


def test_a_gsm_wav_decodes_as_it_screens(tmp_path):
    # 10 s at 8 kHz: more than one block of a codec that libsndfile reads without seeking.
    path = make_clip(tmp_path / "phone.wav", 10.0, sample_rate=8000, subtype="GSM610")
    assert probe_audio(path, 3.0) == 10.0
    samples, rate, channels = decode_mono(path)
    expected, _ = soundfile.read(path, frames=80_000, dtype="float32")
    assert (rate, channels) == (8000, 1) and np.array_equal(samples, expected)


@pytest.mark.parametrize("name", ["song.m4a", "song"])
def test_prepare_and_predict_take_a_wav_by_what_it_holds_not_its_name(tmp_path, name):
    root = tmp_path / "src"
    make_clip(root / "rock" / name, 4.0, format="WAV")
    make_clip(root / "jazz" / "a.wav", 4.0, seed=1)
    found = screen(discover(root), 3.0)
    assert sorted(track.track_id for track in found.tracks) == ["jazz/a.wav", f"rock/{name}"]
    waveform, rate, _ = load_mono(root / "rock" / name, 22050)  # as `genre predict` decodes it
    assert rate == 22050 and waveform.numel() == 4 * 22050


def test_notes_and_artwork_are_rejected_and_a_folder_without_audio_is_no_genre(tmp_path):
    root = tmp_path / "src"
    make_clip(root / "rock" / "a.wav", 4.0)
    make_clip(root / "jazz" / "b.wav", 4.0, seed=1)
    (root / "rock" / "notes.txt").write_text("liner notes")
    (root / "artwork").mkdir()
    (root / "artwork" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    (root / "artwork" / "empty.png").write_bytes(b"")
    found = screen(discover(root), 3.0)
    assert found.genres == ["jazz", "rock"]
    reasons = {Path(r.path).name: r.reason for r in found.skipped}
    assert reasons["notes.txt"].startswith("not decodable audio: Format not recognised")
    assert (
        reasons["cover.jpg"].startswith("not decodable audio")
        and reasons["empty.png"] == "empty file (0 bytes)"
    )


def test_a_genre_of_broken_audio_still_stops_the_run(tmp_path):
    root = tmp_path / "src"
    make_clip(root / "rock" / "a.wav", 4.0)
    id3_only(root / "jazz" / "b.mp3")
    with pytest.raises(UserInputError, match=r"no file of genre 'jazz' can be used .* an ID3 tag"):
        screen(discover(root), 3.0)


# --- audio below the band edge (item 20) ------------------------------------------------------------


def test_a_rate_below_the_band_edge_gets_a_note():
    features = FeatureConfig()  # 22050 Hz: bands up to 11025 Hz
    assert low_rate_note(8000, features) == (
        "recorded at 8000 Hz: nothing above 4000 Hz, so the mel bands from there to 11025 Hz are at the floor"
    )
    assert low_rate_note(22050, features) == low_rate_note(44100, features) == ""
    assert low_rate_note(16000, FeatureConfig(f_max=8000.0)) == ""
    assert "to 8000 Hz" in low_rate_note(11025, FeatureConfig(f_max=8000.0))


def test_prepare_takes_odd_files_by_content_and_notes_low_rates(ray_session, tmp_path):
    """One prepare end to end: GSM and misnamed WAVs in splits, the tag-only MP3 rejected, 8 kHz noted."""
    root = tmp_path / "src"
    for g in range(3):
        for t in range(4):
            make_clip(root / f"genre{g}" / f"{t}.wav", 4.0, seed=10 * g + t)
    make_clip(root / "genre0" / "phone.wav", 4.0, sample_rate=8000, subtype="GSM610", seed=7)
    make_clip(root / "genre1" / "narrow.flac", 4.0, sample_rate=8000, seed=8)
    make_clip(root / "genre1" / "misnamed.m4a", 4.0, format="WAV", seed=9)
    make_clip(root / "genre2" / "no-extension", 4.0, format="WAV", seed=11)
    id3_only(root / "genre2" / "tag-only.mp3")
    (root / "artwork").mkdir()
    (root / "artwork" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    features = FeatureConfig(n_mels=64, segment_seconds=1.5)
    result = prepare(
        PrepareConfig(source=root, out=tmp_path / "data", features=features), progress=lambda _: None
    )
    manifest = result.manifest
    rejects = {Path(r["path"]).name: r["reason"] for r in manifest["rejects"]}
    assert rejects == {
        "tag-only.mp3": "not decodable audio: an ID3 tag with no MP3 audio after it",
        "cover.jpg": rejects["cover.jpg"],
    }
    assert manifest["counts"]["total"]["tracks"] == 16 and list(manifest["labels"].values()) == [
        "genre0",
        "genre1",
        "genre2",
    ]
    low = manifest["low_rate"]
    assert low["band_edge_hz"] == 11025.0
    assert sorted((Path(t["path"]).name, t["source_rate"]) for t in low["tracks"]) == [
        ("narrow.flac", 8000),
        ("phone.wav", 8000),
    ]
    summary = PrepareResult(result.out, manifest).summary()
    assert "note: 2 track(s) recorded below 22050 Hz were upsampled" in summary
    assert "phone.wav: recorded at 8000 Hz: nothing above 4000 Hz" in summary
