"""The log-mel transform: its parameters and its values against torchaudio computed directly."""

import pytest
import torch
import torchaudio

from data_pipeline.features import FeatureConfig, LogMelExtractor


def direct_log_mel(window: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """What a user would write with torchaudio by hand: MelSpectrogram, dB, relative to the peak."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        f_min=config.f_min,
        f_max=config.f_max,
        center=config.center,
        pad_mode=config.pad_mode,
        mel_scale="slaney",
        norm="slaney",
    )(window)
    decibels = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80.0)(mel)
    return decibels - decibels.max()


def test_segments_are_whole_windows_and_the_tail_is_dropped():
    config = FeatureConfig()
    waveform = torch.randn(config.segment_samples * 4 + 1000)
    mels = LogMelExtractor(config)(waveform)
    assert mels.shape == (4, 128, 130)


def test_a_waveform_shorter_than_one_segment_gives_no_segments():
    config = FeatureConfig()
    assert LogMelExtractor(config)(torch.randn(config.segment_samples - 1)).shape == (0, 128, 130)


@pytest.mark.parametrize(
    "options",
    [
        {"n_mels": 64},
        {"n_mels": 128},
        # The filter bank is applied in blocks of its non-zero bins, the centre padding by hand:
        # other band edges, odd band counts and the other padding modes must give torchaudio's values.
        {"n_mels": 40, "f_min": 300.0, "f_max": 8000.0},
        {"n_mels": 96, "n_fft": 1024, "hop_length": 256},
        # An odd FFT size over a window the hop divides: one frame fewer than an even one gives.
        {"n_mels": 32, "n_fft": 513, "hop_length": 441, "segment_seconds": 0.2},
        {"pad_mode": "constant"},
        {"center": False},
    ],
)
def test_values_equal_torchaudio_computed_directly(options):
    config = FeatureConfig(**options)
    waveform = torch.randn(config.segment_samples * 2) * torch.linspace(0.1, 1.0, config.segment_samples * 2)
    mels = LogMelExtractor(config)(waveform)
    for index in range(2):
        window = waveform[index * config.segment_samples : (index + 1) * config.segment_samples]
        torch.testing.assert_close(mels[index], direct_log_mel(window, config), atol=1e-3, rtol=1e-4)


def test_each_segment_is_referenced_to_its_own_peak_and_clipped_80_db_below():
    config = FeatureConfig()
    loud_then_quiet = torch.cat(
        [torch.randn(config.segment_samples), 0.001 * torch.randn(config.segment_samples)]
    )
    mels = LogMelExtractor(config)(loud_then_quiet)
    assert torch.allclose(mels.amax(dim=(1, 2)), torch.zeros(2))
    assert mels.min() >= -80.0 - 1e-4


def test_parameters_round_trip_through_a_dict_and_derived_sizes_are_checked():
    config = FeatureConfig(sample_rate=16000, n_mels=96, segment_seconds=2.5)
    stored = config.to_dict()
    assert stored["frames"] == 1 + 40000 // 512
    assert FeatureConfig.from_dict(stored) == config
    with pytest.raises(ValueError, match="frames"):
        FeatureConfig.from_dict({**stored, "frames": 999})


def test_a_segment_shorter_than_the_fft_window_is_refused():
    with pytest.raises(ValueError, match="shorter than one FFT window"):
        FeatureConfig(segment_seconds=0.05)
