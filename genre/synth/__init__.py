"""Music-like audio for the ten GTZAN genre names, generated from a seed (`genre synth`, the demo)."""

from genre.synth.collection import SynthConfig, synthesize_collection
from genre.synth.styles import GENRES

__all__ = ["GENRES", "SynthConfig", "synthesize_collection"]
