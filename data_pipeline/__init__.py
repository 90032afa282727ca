"""Audio -> log-mel Parquet shards, in parallel with Ray Data. Knows nothing of models.

The package imports nothing heavy on its own (no Ray, no torch): `genre`'s command line decides how
Ray may bind before Ray is first imported (see `data_pipeline.loopback`). Import from the modules:
`data_pipeline.prepare`, `data_pipeline.features`, `data_pipeline.shards`.
"""
