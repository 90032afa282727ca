"""The sweep driver: the `genre sweep` (and `genre demo`) process after its arguments are parsed.

It checks the request, fits the trials to the cluster, runs them with Ray Tune and writes the
results. It imports Ray and the model registry (so torch) but never runs a model: the trials do.
"""
