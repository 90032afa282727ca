"""Audio -> log-mel Parquet shards, in parallel with Ray Data. Knows nothing of models."""

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig, LogMelExtractor
from data_pipeline.prepare import PrepareConfig, PrepareResult, prepare

__all__ = [
    "FeatureConfig",
    "LogMelExtractor",
    "PrepareConfig",
    "PrepareResult",
    "UserInputError",
    "prepare",
]
