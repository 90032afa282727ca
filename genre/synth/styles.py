"""What gives each genre its character: tempo, groove, harmony, instruments, distortion.

The ranges overlap on purpose (rock and metal share tempos and guitars, disco and pop share a
four-on-the-floor, blues and jazz both swing), and every track draws its own values, so that a model
has to combine cues: the demo should be learnable well above chance, and not trivially.
"""

from __future__ import annotations

from dataclasses import dataclass

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")

# Scales as semitones above the key's root.
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
DORIAN = (0, 2, 3, 5, 7, 9, 10)
BLUES = (0, 3, 5, 6, 7, 10)
PENTATONIC_MINOR = (0, 3, 5, 7, 10)
PENTATONIC_MAJOR = (0, 2, 4, 7, 9)

# Drum patterns on a 16-step bar: (kick, snare, hi-hat, ride) step lists.
DRUMS: dict[str, tuple[tuple[int, ...], ...]] = {
    "backbeat": ((0, 8), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14), ()),
    "double_kick": (tuple(range(16)), (4, 12), (0, 4, 8, 12), ()),
    "four_on_floor": ((0, 4, 8, 12), (4, 12), (2, 6, 10, 14), ()),
    "pop": ((0, 6, 8), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14), ()),
    "boom_bap": ((0, 7, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14), ()),
    "one_drop": ((8,), (8,), (0, 2, 4, 6, 8, 10, 12, 14), ()),
    "train": ((0, 8), (4, 12), tuple(range(16)), ()),
    "shuffle": ((0, 8), (4, 12), (0, 3, 4, 7, 8, 11, 12, 15), ()),
    "swing_ride": ((0,), (), (), (0, 4, 6, 8, 12, 14)),
}


@dataclass(frozen=True)
class Style:
    """One genre's distributions; each track samples its own values from them."""

    tempo: tuple[float, float]  # beats per minute
    swing: tuple[float, float]  # delay of off-beat eighths, as a fraction of an eighth
    drums: tuple[str, ...]  # pattern names; empty: no drums
    scales: tuple[tuple[int, ...], ...]
    progression: tuple[int, ...]  # chord roots, as scale degrees, one per bar
    lead: tuple[str, ...]  # instrument names (see instruments.py)
    comp: tuple[str, ...]
    register: tuple[int, int]  # MIDI range of the lead
    notes_per_beat: tuple[float, float]
    distortion: tuple[float, float]  # tanh drive; 0 is clean
    comp_rhythm: str  # "downbeats", "offbeats", "eighths", "arpeggio", "sustain"
    walking_bass: bool = False


STYLES: dict[str, Style] = {
    "blues": Style(
        (70, 110),
        (0.45, 0.65),
        ("shuffle", "backbeat"),
        (BLUES, PENTATONIC_MINOR),
        (0, 3, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4),
        ("guitar", "organ"),
        ("piano", "organ"),
        (52, 76),
        (1.0, 2.0),
        (0.0, 1.5),
        "downbeats",
    ),
    "classical": Style(
        (60, 120),
        (0.0, 0.05),
        (),
        (MAJOR, MINOR),
        (0, 3, 4, 0, 5, 3, 4, 0),
        ("strings", "piano", "flute"),
        ("strings", "piano"),
        (60, 88),
        (0.5, 2.0),
        (0.0, 0.0),
        "arpeggio",
    ),
    "country": Style(
        (90, 140),
        (0.0, 0.2),
        ("train", "backbeat"),
        (MAJOR, PENTATONIC_MAJOR),
        (0, 0, 3, 4),
        ("guitar", "fiddle"),
        ("guitar", "piano"),
        (55, 79),
        (1.0, 2.5),
        (0.0, 0.3),
        "eighths",
    ),
    "disco": Style(
        (110, 130),
        (0.0, 0.1),
        ("four_on_floor",),
        (MINOR, DORIAN),
        (0, 5, 3, 4),
        ("strings", "synth"),
        ("synth", "guitar"),
        (60, 84),
        (1.0, 3.0),
        (0.0, 0.4),
        "offbeats",
    ),
    "hiphop": Style(
        (80, 100),
        (0.2, 0.5),
        ("boom_bap",),
        (MINOR, PENTATONIC_MINOR),
        (0, 0, 5, 4),
        ("piano", "synth"),
        ("piano", "organ"),
        (48, 72),
        (0.5, 1.5),
        (0.0, 0.5),
        "downbeats",
    ),
    "jazz": Style(
        (90, 180),
        (0.5, 0.7),
        ("swing_ride",),
        (DORIAN, MAJOR),
        (1, 4, 0, 0, 1, 4, 0, 5),
        ("brass", "piano"),
        ("piano",),
        (55, 84),
        (1.5, 3.0),
        (0.0, 0.2),
        "downbeats",
        walking_bass=True,
    ),
    "metal": Style(
        (100, 180),
        (0.0, 0.05),
        ("double_kick", "backbeat"),
        (MINOR, PENTATONIC_MINOR),
        (0, 5, 6, 4),
        ("guitar",),
        ("guitar",),
        (40, 64),
        (2.0, 4.0),
        (3.0, 8.0),
        "eighths",
    ),
    "pop": Style(
        (95, 130),
        (0.0, 0.15),
        ("pop", "four_on_floor"),
        (MAJOR,),
        (0, 4, 5, 3),
        ("synth", "piano", "flute"),
        ("synth", "piano"),
        (60, 84),
        (1.0, 2.0),
        (0.0, 0.4),
        "eighths",
    ),
    "reggae": Style(
        (65, 95),
        (0.1, 0.3),
        ("one_drop",),
        (MAJOR, MINOR),
        (0, 3, 0, 4),
        ("organ", "brass"),
        ("organ", "guitar"),
        (55, 79),
        (0.5, 1.5),
        (0.0, 0.5),
        "offbeats",
    ),
    "rock": Style(
        (100, 160),
        (0.0, 0.1),
        ("backbeat", "double_kick"),
        (PENTATONIC_MINOR, MAJOR),
        (0, 3, 4, 3),
        ("guitar",),
        ("guitar", "organ"),
        (50, 76),
        (1.0, 2.5),
        (1.5, 4.0),
        "eighths",
    ),
}
