"""genre: train, tune and compare music-genre classifiers on Ray."""
