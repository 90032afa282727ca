"""Decoding: every format genre accepts, and a clear reason for every file it cannot use."""

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from data_pipeline.audio import AudioDecodeError, decode_mono, load_mono, probe_audio
from tests.audio_factory import make_clip


@pytest.mark.parametrize(
    ("extension", "format", "subtype"),
    [
        ("wav", "WAV", "PCM_16"),
        ("au", "AU", "PCM_16"),
        ("flac", "FLAC", "PCM_16"),
        ("mp3", "MP3", None),
        ("ogg", "OGG", "VORBIS"),
        ("WAV", "WAV", "PCM_16"),
    ],
)
def test_every_supported_format_decodes(tmp_path, extension, format, subtype):
    path = make_clip(tmp_path / f"clip.{extension}", 2.0, format=format, subtype=subtype)
    samples, rate, channels = decode_mono(path)
    assert rate == 22050 and channels == 1
    # mp3 and ogg encoders add priming samples; the length is about right, not exact.
    assert abs(samples.size - 2 * 22050) < 3000


@pytest.mark.parametrize(("subtype", "channels"), [("PCM_16", 1), ("PCM_16", 2), ("PCM_24", 1), ("FLOAT", 2)])
def test_decoded_samples_equal_libsndfiles_own_float_conversion(tmp_path, subtype, channels):
    # 16-bit PCM is read as integers and scaled by genre (faster); the result must be libsndfile's.
    path = make_clip(tmp_path / "clip.wav", 1.0, subtype=subtype, channels=channels)
    samples, _, _ = decode_mono(path)
    raw, _ = soundfile.read(path, dtype="float32", always_2d=True)
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, raw.mean(axis=1, dtype=np.float32) if channels > 1 else raw[:, 0])


def test_stereo_44k_is_mixed_to_mono_and_resampled_with_torchaudio(tmp_path):
    path = make_clip(tmp_path / "stereo.flac", 2.0, sample_rate=44100, channels=2)
    waveform, source_rate, channels = load_mono(path, 22050)
    raw, _ = soundfile.read(path, dtype="float32", always_2d=True)
    expected = torchaudio.functional.resample(torch.from_numpy(raw.mean(axis=1)), 44100, 22050)
    assert (source_rate, channels) == (44100, 2)
    torch.testing.assert_close(waveform, expected, atol=1e-5, rtol=1e-5)


def test_an_empty_file_is_rejected(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty file"):
        decode_mono(tmp_path / "empty.wav")


def test_text_with_an_audio_extension_is_rejected(tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples\n" * 50)
    with pytest.raises(AudioDecodeError, match="not decodable audio: Format not recognised"):
        decode_mono(tmp_path / "notes.wav")


def test_a_wav_with_a_cut_header_is_rejected(tmp_path):
    good = make_clip(tmp_path / "good.wav", 1.0).read_bytes()
    (tmp_path / "cut.wav").write_bytes(good[:30])
    with pytest.raises(AudioDecodeError, match="not decodable audio"):
        decode_mono(tmp_path / "cut.wav")


def test_a_wav_whose_data_was_cut_short_is_rejected_not_silently_shortened(tmp_path):
    good = make_clip(tmp_path / "good.wav", 4.0).read_bytes()
    (tmp_path / "truncated.wav").write_bytes(good[: len(good) // 2])
    with pytest.raises(AudioDecodeError, match="truncated file: header declares 176400 bytes"):
        decode_mono(tmp_path / "truncated.wav")


def test_nan_samples_are_rejected(tmp_path):
    samples = np.zeros(22050, dtype=np.float32)
    samples[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", samples, 22050, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        decode_mono(tmp_path / "nan.wav")


def _streamed(path):
    """Rewrite a WAV as a streaming encoder leaves it: RIFF and data sizes set to 'unknown'."""
    data = bytearray(path.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    size_field = data.index(b"data") + 4
    data[size_field : size_field + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(data)
    return path


def test_a_streamed_wav_with_unknown_sizes_decodes_whole(tmp_path):
    path = _streamed(make_clip(tmp_path / "streamed.wav", 2.0))
    samples, rate, _ = decode_mono(path)
    assert (samples.size, rate) == (2 * 22050, 22050)


def test_a_folder_is_rejected_with_what_to_pass_instead(tmp_path):
    (tmp_path / "music").mkdir()
    with pytest.raises(
        AudioDecodeError,
        match=r"a folder, not an audio file; pass the files in it \(e\.g\. .*music/\*\.wav\)",
    ):
        decode_mono(tmp_path / "music")


def test_probe_passes_a_whole_clip_long_enough(tmp_path):
    probe_audio(make_clip(tmp_path / "good.wav", 3.0), min_seconds=3.0)


def test_probe_passes_a_streamed_wav(tmp_path):
    probe_audio(_streamed(make_clip(tmp_path / "streamed.wav", 3.0)), min_seconds=3.0)


def test_probe_rejects_an_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty file"):
        probe_audio(tmp_path / "empty.wav", min_seconds=3.0)


def test_probe_rejects_text_with_an_audio_extension(tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples\n" * 50)
    with pytest.raises(AudioDecodeError, match="not decodable audio: Format not recognised"):
        probe_audio(tmp_path / "notes.wav", min_seconds=3.0)


def test_probe_rejects_a_truncated_wav(tmp_path):
    good = make_clip(tmp_path / "good.wav", 4.0).read_bytes()
    (tmp_path / "truncated.wav").write_bytes(good[: len(good) // 2])
    with pytest.raises(AudioDecodeError, match="truncated file: header declares 176400 bytes"):
        probe_audio(tmp_path / "truncated.wav", min_seconds=1.0)


def test_probe_rejects_a_clip_shorter_than_one_segment(tmp_path):
    path = make_clip(tmp_path / "short.wav", 2.5)
    with pytest.raises(AudioDecodeError, match=r"^shorter than one 3 s segment \(2\.50 s\)$"):
        probe_audio(path, min_seconds=3.0)


def test_probe_rejects_a_folder(tmp_path):
    (tmp_path / "music").mkdir()
    with pytest.raises(AudioDecodeError, match="a folder, not an audio file"):
        probe_audio(tmp_path / "music", min_seconds=3.0)


def test_probe_rejects_a_missing_file(tmp_path):
    with pytest.raises(AudioDecodeError, match="cannot read file: No such file or directory"):
        probe_audio(tmp_path / "gone.wav", min_seconds=3.0)


def test_probe_reads_the_header_only_so_bad_samples_are_left_for_decoding(tmp_path):
    samples = np.zeros(22050, dtype=np.float32)
    samples[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", samples, 22050, subtype="FLOAT")
    probe_audio(tmp_path / "nan.wav", min_seconds=1.0)
