"""Additive-synthesis instruments and synthetic drums, vectorised with numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timbre:
    """Harmonic amplitudes, envelope, and how fast upper partials fade."""

    harmonics: tuple[float, ...]
    attack: float  # seconds
    decay: float  # seconds for the level to fall by 1/e; 0: sustained
    brightness_decay: float  # extra decay of harmonic k, per k (plucked strings dull quickly)
    vibrato: float = 0.0  # depth in semitones


TIMBRES: dict[str, Timbre] = {
    "piano": Timbre((1, 0.5, 0.3, 0.2, 0.12, 0.08), 0.005, 0.8, 0.6),
    "organ": Timbre((1, 0.8, 0.6, 0.0, 0.4, 0.0, 0.3, 0.2), 0.01, 0.0, 0.0),
    "strings": Timbre(tuple(1 / k for k in range(1, 12)), 0.15, 0.0, 0.0, vibrato=0.15),
    "guitar": Timbre((1, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08), 0.003, 0.6, 1.2),
    "synth": Timbre(tuple(1 / k for k in range(1, 16)), 0.01, 0.0, 0.05),
    "brass": Timbre((0.6, 1, 0.8, 0.6, 0.45, 0.3, 0.2, 0.12), 0.04, 0.0, 0.0, vibrato=0.05),
    "flute": Timbre((1, 0.2, 0.08), 0.06, 0.0, 0.0, vibrato=0.2),
    "fiddle": Timbre(tuple(1 / k**0.8 for k in range(1, 10)), 0.05, 0.0, 0.0, vibrato=0.3),
    "bass": Timbre((1, 0.45, 0.15), 0.01, 0.5, 0.8),
}


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2 ** ((np.asarray(midi) - 69) / 12)


def render_note(timbre: Timbre, midi: float, seconds: float, velocity: float, rate: int) -> np.ndarray:
    """One note: harmonics of the pitch, shaped by the timbre's envelope; silent above Nyquist."""
    t = np.arange(max(1, round(seconds * rate))) / rate
    frequency = midi_to_hz(midi)
    if timbre.vibrato:
        frequency = frequency * 2 ** (timbre.vibrato / 12 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(frequency) / rate
    else:
        phase = 2 * np.pi * frequency * t
    signal = np.zeros_like(t)
    for k, amplitude in enumerate(timbre.harmonics, start=1):
        if amplitude == 0 or k * midi_to_hz(midi) >= rate / 2:
            continue
        partial = amplitude * np.sin(k * phase)
        if timbre.brightness_decay:
            partial *= np.exp(-t * timbre.brightness_decay * k)
        signal += partial
    envelope = np.minimum(1.0, t / timbre.attack) if timbre.attack else np.ones_like(t)
    if timbre.decay:
        envelope = envelope * np.exp(-t / timbre.decay)
    release = min(len(t), round(0.02 * rate))
    envelope[-release:] *= np.linspace(1, 0, release)
    return velocity * signal * envelope


def render_drum(kind: str, rng: np.random.Generator, rate: int) -> np.ndarray:
    """A kick (pitch sweep), snare (noise and tone), hi-hat (bright noise) or ride (inharmonic)."""
    if kind == "kick":
        t = np.arange(round(0.25 * rate)) / rate
        frequency = 50 + 90 * np.exp(-t * 30)
        return np.sin(2 * np.pi * np.cumsum(frequency) / rate) * np.exp(-t * 12)
    if kind == "snare":
        t = np.arange(round(0.18 * rate)) / rate
        noise = rng.standard_normal(t.size) * np.exp(-t * 22)
        return 0.6 * noise + 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t * 30)
    if kind == "hat":
        t = np.arange(round(0.06 * rate)) / rate
        noise = np.diff(rng.standard_normal(t.size + 1))  # a first difference: mostly highs
        return 0.35 * noise * np.exp(-t * 70)
    t = np.arange(round(0.5 * rate)) / rate
    partials = (0.7, 1.0, 1.41, 1.78, 2.33)
    tone = sum(np.sin(2 * np.pi * 2200 * p * t + rng.uniform(0, 6.28)) for p in partials)
    return 0.12 * tone * np.exp(-t * 6)
