"""One track: a groove, a chord progression, a bass line, a melody, mixed and distorted."""

from __future__ import annotations

import numpy as np

from genre.synth.instruments import TIMBRES, render_drum, render_note
from genre.synth.styles import DRUMS, STYLES, Style

STEPS_PER_BAR = 16
BEATS_PER_BAR = 4


def compose_track(genre: str, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A mono float32 waveform of `seconds` in the style of `genre`, fully determined by `rng`."""
    style = STYLES[genre]
    tempo = rng.uniform(*style.tempo)
    step = 60.0 / tempo / 4  # a sixteenth note, in seconds
    swing = rng.uniform(*style.swing)
    scale = style.scales[rng.integers(len(style.scales))]
    key = int(rng.integers(0, 12))
    total = round(seconds * rate)
    bars = int(np.ceil(seconds / (step * STEPS_PER_BAR))) + 1

    def onset(bar: int, index: int) -> float:
        # Swing delays the off-beat eighths (steps 2, 6, 10, 14 of the bar).
        delay = swing * step if index % 4 == 2 else 0.0
        return (bar * STEPS_PER_BAR + index) * step + delay

    parts = {
        "drums": _drums(style, bars, onset, rate, total, rng),
        "bass": _bass(style, scale, key, bars, onset, step, rate, total, rng),
        "comp": _comp(style, scale, key, bars, onset, step, rate, total, rng),
        "lead": _lead(style, scale, key, seconds, step, rate, total, rng),
    }
    levels = {
        "drums": rng.uniform(0.3, 1.0),
        "bass": rng.uniform(0.3, 0.9),
        "comp": rng.uniform(0.2, 0.8),
        "lead": rng.uniform(0.3, 1.0),
    }
    mix = sum(levels[name] * _normalised(part) for name, part in parts.items())
    drive = rng.uniform(*style.distortion)
    if drive > 0:
        mix = np.tanh(drive * mix) / np.tanh(drive)
    mix = _normalised(mix) + rng.uniform(0.005, 0.08) * rng.standard_normal(total)
    return (rng.uniform(0.3, 0.9) * _normalised(mix)).astype(np.float32)


def _drums(style: Style, bars: int, onset, rate: int, total: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(total)
    if not style.drums:
        return out
    # Now and then a track borrows another genre's groove: drums alone should not give it away.
    pattern = style.drums[rng.integers(len(style.drums))]
    if rng.random() < 0.15:
        pattern = list(DRUMS)[rng.integers(len(DRUMS))]
    sounds = {kind: render_drum(kind, rng, rate) for kind in ("kick", "snare", "hat", "ride")}
    for bar in range(bars):
        for kind, steps in zip(("kick", "snare", "hat", "ride"), DRUMS[pattern], strict=True):
            for index in steps:
                if rng.random() < 0.05:  # a missed hit, as a drummer would
                    continue
                _add(out, sounds[kind] * rng.uniform(0.7, 1.0), onset(bar, index), rate)
    return out


def _chord_root(style: Style, scale: tuple[int, ...], key: int, bar: int) -> int:
    degree = style.progression[bar % len(style.progression)] % len(scale)
    return key + scale[degree]


def _bass(style, scale, key, bars, onset, step, rate, total, rng) -> np.ndarray:
    out = np.zeros(total)
    timbre = TIMBRES["bass"]
    for bar in range(bars):
        root = 36 + _chord_root(style, scale, key, bar)
        beats = range(BEATS_PER_BAR) if style.walking_bass else (0, 2)
        for beat in beats:
            pitch = root + (scale[rng.integers(len(scale))] if style.walking_bass and beat else 0)
            length = step * (4 if style.walking_bass else 7)
            _add(
                out,
                render_note(timbre, pitch, length, rng.uniform(0.7, 1.0), rate),
                onset(bar, 4 * beat),
                rate,
            )
    return out


def _comp(style, scale, key, bars, onset, step, rate, total, rng) -> np.ndarray:
    out = np.zeros(total)
    timbre = TIMBRES[style.comp[rng.integers(len(style.comp))]]
    rhythms = {
        "downbeats": ((0, 8), 6),
        "offbeats": ((2, 6, 10, 14), 1.5),
        "eighths": ((0, 2, 4, 6, 8, 10, 12, 14), 1.8),
        "arpeggio": ((0, 2, 4, 6, 8, 10, 12, 14), 2.5),
        "sustain": ((0,), 16),
    }
    steps, length = rhythms[style.comp_rhythm]
    for bar in range(bars):
        root = 48 + _chord_root(style, scale, key, bar)
        # A triad stacked from the scale; distorted genres play power chords (root and fifth).
        chord = (
            [root, root + 7] if style.distortion[1] > 2 else [root, root + (3 if 3 in scale else 4), root + 7]
        )
        for position, index in enumerate(steps):
            notes = [chord[position % len(chord)]] if style.comp_rhythm == "arpeggio" else chord
            for pitch in notes:
                note = render_note(timbre, pitch, step * length, rng.uniform(0.4, 0.7), rate)
                _add(out, note, onset(bar, index), rate)
    return out


def _lead(style, scale, key, seconds, step, rate, total, rng) -> np.ndarray:
    out = np.zeros(total)
    timbre = TIMBRES[style.lead[rng.integers(len(style.lead))]]
    low, high = style.register
    pitches = np.array([p for p in range(low, high + 1) if (p - key) % 12 in scale])
    position = int(rng.integers(len(pitches)))
    beat = 4 * step
    time = rng.uniform(0, beat)
    density = rng.uniform(*style.notes_per_beat)
    while time < seconds:
        length = beat / density * rng.choice([0.5, 1.0, 1.0, 2.0])
        # A melody moves mostly by step, sometimes leaps, and rests now and then.
        position = int(np.clip(position + rng.choice([-2, -1, -1, 1, 1, 2, 0, 3, -3]), 0, len(pitches) - 1))
        if rng.random() > 0.15:
            _add(
                out,
                render_note(timbre, pitches[position], length * 1.1, rng.uniform(0.6, 1.0), rate),
                time,
                rate,
            )
        time += length
    return out


def _add(buffer: np.ndarray, sound: np.ndarray, at_seconds: float, rate: int) -> None:
    start = round(at_seconds * rate)
    if start >= len(buffer):
        return
    end = min(len(buffer), start + len(sound))
    buffer[start:end] += sound[: end - start]


def _normalised(signal: np.ndarray) -> np.ndarray:
    peak = np.abs(signal).max()
    return signal / peak if peak > 0 else signal
