"""Cross-validation by track: folds in prepare, K trials per model in a sweep, a summary with intervals."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from data_pipeline.errors import UserInputError
from data_pipeline.prepare import PrepareConfig, prepare
from data_pipeline.shards import read_split
from data_pipeline.split import fold_name
from genre.config import TrainConfig
from genre.sweep.driver import SweepConfig, run_sweep
from tests.conftest import FOLDS, quiet


def test_every_track_is_in_exactly_one_fold_and_every_fold_holds_every_genre(folded):
    manifest = folded.manifest
    assert manifest["split"]["folds"] == FOLDS and manifest["split"]["protocol"] == "track"
    tracks_of = {}
    for k in range(FOLDS):
        table = read_split(folded.out, fold_name(k), columns=["track_id", "genre"])
        assert set(table.column("genre").to_pylist()) == {"genre0", "genre1", "genre2"}  # stratified
        tracks_of[k] = set(table.column("track_id").to_pylist())
        assert manifest["counts"][fold_name(k)]["tracks"] == len(tracks_of[k])
    everything = [t for tracks in tracks_of.values() for t in tracks]
    assert len(everything) == len(set(everything)) == manifest["counts"]["total"]["tracks"] == 15


def test_folds_with_split_lists_or_the_segment_protocol_are_refused(tiny_audio, tmp_path):
    for options, reason in (
        ({"split": "segment"}, "--split segment draws segments"),
        ({"split_lists": "gtzan-filtered"}, "--split-lists fixes the test tracks"),
    ):
        with pytest.raises(UserInputError, match=reason):
            prepare(PrepareConfig(source=tiny_audio, out=tmp_path / "x", folds=3, **options), progress=quiet)


def test_a_cv_sweep_tests_each_fold_once_per_model_and_writes_the_summary(cv_file_run):
    out, table = cv_file_run.out, cv_file_run.table
    assert len(table) == FOLDS and set(table["status"]) == {"completed"}
    assert sorted(table["fold"]) == list(range(FOLDS))  # each fold tested once
    summary = pd.read_csv(out / "summary.csv")
    accuracy = summary[summary["metric"] == "test_track_accuracy"].set_index("model")
    assert accuracy.loc["cnn3", "n"] == FOLDS
    assert accuracy.loc["cnn3", "mean"] == pytest.approx(table["test_track_accuracy"].mean())
    assert accuracy.loc["cnn3", "ci_low"] <= accuracy.loc["cnn3", "mean"] <= accuracy.loc["cnn3", "ci_high"]
    results = (out / "results.md").read_text()
    assert f"{FOLDS}-fold cross-validation" in results
    assert (out / "plots" / "summary.png").is_file()
    assert json.loads(table.iloc[0]["config"])["folds"] == FOLDS


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({}, "run the sweep with --cv"),
        ({"cv": True, "scheduler": "asha"}, "use fifo with --cv"),
        ({"cv": True, "num_samples": 2}, "the folds of a model would train with different settings"),
        (
            {"cv": True, "train": TrainConfig(freq_mask=100)},
            "--freq-mask 100 is wider than the dataset's windows: 64 mel bands",
        ),
    ],
)
def test_what_cross_validation_cannot_do_is_refused_before_any_trial(folded, tmp_path, options, reason):
    with pytest.raises(UserInputError, match=reason):
        run_sweep(SweepConfig(data=folded.out, out=tmp_path / "run", models=("cnn3",), **options), quiet)
    assert not (tmp_path / "run").exists()


def test_cv_on_a_dataset_with_a_fixed_split_and_seeds_under_asha_are_refused(tiny_dataset, tmp_path):
    with pytest.raises(UserInputError, match="--cv needs a dataset prepared in folds"):
        run_sweep(SweepConfig(data=tiny_dataset, out=tmp_path / "run", models=("cnn3",), cv=True), quiet)
    with pytest.raises(UserInputError, match="use fifo with --seeds"):
        config = SweepConfig(data=tiny_dataset, out=tmp_path / "run", seeds=3, scheduler="asha")
        run_sweep(config, quiet)
    with pytest.raises(UserInputError, match="the seeds of a model would train with different settings"):
        run_sweep(SweepConfig(data=tiny_dataset, out=tmp_path / "run", seeds=2, num_samples=2), quiet)
    assert not (tmp_path / "run").exists()


def test_evaluate_on_a_folded_dataset_takes_a_fold_and_refuses_a_split_it_lacks(cv_file_run, tmp_path):
    from genre.evaluate import evaluate
    from genre.run_folder import RunFolder

    checkpoint = RunFolder(cv_file_run.out).best_checkpoint()
    with pytest.raises(UserInputError, match="has no 'test' split; it has fold-0, fold-1, fold-2"):
        evaluate(cv_file_run.data, checkpoint, tmp_path / "evaluation")
    scores = evaluate(cv_file_run.data, checkpoint, tmp_path / "evaluation", split="fold-1").scores
    assert 0.0 <= scores["fold-1_track_accuracy"] <= 1.0


def test_predict_and_evaluate_choose_the_model_by_its_mean_validation_score_over_folds(tmp_path):
    from genre.run_folder import RunFolder
    from genre.sweep.results import TABLE_COLUMNS

    rows = [
        {"model": model, "status": "completed", "fold": fold, "val_segment_accuracy": value,
         "val_track_accuracy": value, "checkpoint": f"checkpoints/{model}-{fold}/best.pt"}
        for model, values in (("cnn3", [0.9, 0.1, 0.1]), ("cnn4", [0.5, 0.6, 0.4]))
        for fold, value in enumerate(values)
    ]  # fmt: skip
    pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS).to_parquet(tmp_path / "results.parquet")
    run = RunFolder(tmp_path)
    # cnn3 has the single best fold (0.9) but the lower mean (0.37 against 0.5).
    assert run.best_checkpoint() == str(tmp_path / "checkpoints/cnn4-1/best.pt")
    assert run.best_checkpoint("cnn3") == str(tmp_path / "checkpoints/cnn3-0/best.pt")
