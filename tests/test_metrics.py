"""Segment- and track-level metrics."""

import pytest
import torch

from genre.train.metrics import classification_metrics, split_metrics, track_probabilities


def test_precision_and_recall_are_macro_averaged_over_classes():
    # Class 0: 2 of 3 predicted right; class 1: predicted once, wrongly never; class 2 never predicted.
    probs = torch.eye(3)[[0, 0, 1, 0, 1]]
    labels = torch.tensor([0, 0, 1, 2, 2])
    scores = classification_metrics(probs, labels)
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["precision"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert scores["recall"] == pytest.approx((1 + 1 + 0) / 3)


def test_a_track_is_the_mean_of_its_segments_probabilities():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([0, 0, 1, 1])
    track_probs, track_labels, tracks = track_probabilities(probs, labels, ["a", "a", "b", "b"])
    assert tracks == ["a", "b"]
    torch.testing.assert_close(track_probs, torch.tensor([[0.55, 0.45], [0.45, 0.55]]))
    assert track_labels.tolist() == [0, 1]


def test_split_metrics_name_every_level_and_measure():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    scores = split_metrics("test", probs, torch.tensor([0, 0, 1, 1]), ["a", "a", "b", "b"])
    assert scores["test_segment_accuracy"] == pytest.approx(0.5)
    assert scores["test_track_accuracy"] == pytest.approx(1.0)
    assert len(scores) == 6


def test_models_with_several_trials_are_told_apart_in_the_tables():
    import pandas as pd

    from genre.sweep.results_text import row_labels

    table = pd.DataFrame({"model": ["cnn3", "cnn4", "cnn4"], "trial_id": ["a_0", "a_1", "a_2"]})
    assert row_labels(table) == ["cnn3", "cnn4 (a_1)", "cnn4 (a_2)"]
