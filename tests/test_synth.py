"""Generated music: GTZAN's layout, the same bytes for the same seed, genres that differ."""

import hashlib

import numpy as np
import pytest
import soundfile

from data_pipeline.errors import UserInputError
from genre.synth import GENRES, SynthConfig, synthesize_collection
from genre.synth.collection import track_rng
from genre.synth.compose import compose_track


def digest(paths) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_clips_are_written_in_gtzan_layout(tmp_path):
    paths = synthesize_collection(
        SynthConfig(out=tmp_path / "a", tracks_per_genre=2, seconds=3.0), lambda _: None
    )
    assert len(paths) == 20
    assert sorted(p.relative_to(tmp_path / "a").as_posix() for p in paths)[:2] == [
        "blues/blues.00000.wav",
        "blues/blues.00001.wav",
    ]
    info = soundfile.info(paths[0])
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 1, 66150, "PCM_16")


def test_the_same_seed_gives_the_same_bytes_in_any_number_of_processes(tmp_path):
    def make(name, seed, workers):
        config = SynthConfig(out=tmp_path / name, tracks_per_genre=2, seconds=2.0, seed=seed, workers=workers)
        return digest(synthesize_collection(config, lambda _: None))

    first = make("a", 1, workers=1)
    assert make("b", 1, workers=2) == first
    assert not set(make("c", 2, workers=1)) & set(first)


def test_genres_differ_in_character():
    # Classical has no drums and distorted metal is dense and loud: their crest factors differ.
    def crest(genre):
        values = []
        for index in range(4):
            audio = compose_track(genre, 6.0, 22050, track_rng(0, genre, index))
            values.append(np.abs(audio).max() / np.sqrt(np.mean(audio**2)))
        return np.mean(values)

    assert crest("metal") < crest("classical")


def test_every_clip_is_audible_and_bounded():
    for genre in GENRES:
        audio = compose_track(genre, 4.0, 22050, track_rng(3, genre, 0))
        assert audio.dtype == np.float32 and np.isfinite(audio).all()
        assert 0.2 < np.abs(audio).max() <= 1.0


def test_an_existing_folder_is_not_overwritten(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(UserInputError, match="not empty"):
        synthesize_collection(SynthConfig(out=tmp_path, tracks_per_genre=1, seconds=1.0), lambda _: None)
