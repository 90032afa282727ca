"""The study across folds and seeds: intervals, paired comparisons, their text and figure."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from genre.sweep.summary import (
    NO_FOLD,
    compare_pairs,
    cv_test_train_ratio,
    holm,
    plot_summary,
    protocol_text,
    summarize,
    summary_markdown,
)


def runs(model, scores, folds=None, seeds=None, status="completed"):
    """Rows of a results table: one trial per score, on folds 0.. and seed 0 unless given."""
    folds = range(len(scores)) if folds is None else folds
    seeds = [0] * len(scores) if seeds is None else seeds
    return [
        {
            "model": model,
            "status": status,
            "fold": fold,
            "seed": seed,
            "test_track_accuracy": score,
            "test_segment_accuracy": score - 0.1,
            **{f"test_{level}_{m}": score for level in ("segment", "track") for m in ("precision", "recall")},
        }
        for score, fold, seed in zip(scores, folds, seeds, strict=True)
    ]


def row(summary, model, metric="test_track_accuracy"):
    return summary[(summary["model"] == model) & (summary["metric"] == metric)].iloc[0]


def test_the_interval_is_the_student_t_interval_of_the_mean():
    summary = summarize(pd.DataFrame(runs("cnn3", [0.6, 0.7, 0.8])))
    cnn3 = row(summary, "cnn3")
    assert cnn3["n"] == 3
    assert cnn3["mean"] == pytest.approx(0.7)
    assert cnn3["sd"] == pytest.approx(0.1)
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert half == pytest.approx(0.2484, abs=1e-4)
    assert (cnn3["ci_low"], cnn3["ci_high"]) == pytest.approx((0.7 - half, 0.7 + half))


def test_every_test_metric_of_every_model_is_summarized():
    table = pd.DataFrame(runs("cnn3", [0.6, 0.7]) + runs("vgg11", [0.5, 0.6]))
    summary = summarize(table)
    assert list(summary["model"].unique()) == ["cnn3", "vgg11"]
    assert len(summary) == 2 * 6
    assert row(summary, "vgg11", "test_segment_accuracy")["mean"] == pytest.approx(0.45)


def test_a_single_run_has_no_interval_and_the_text_says_so():
    summary = summarize(pd.DataFrame(runs("cnn3", [0.7]) + runs("cnn4", [0.8])))
    cnn3 = row(summary, "cnn3")
    assert cnn3["n"] == 1 and cnn3["mean"] == pytest.approx(0.7)
    assert math.isnan(cnn3["sd"]) and math.isnan(cnn3["ci_low"]) and math.isnan(cnn3["ci_high"])
    assert cnn3["interval"] == "single run: no interval"
    table = pd.DataFrame(runs("cnn3", [0.7]) + runs("cnn4", [0.8]))
    text = summary_markdown(summary, compare_pairs(table), "one fixed split")
    assert "no interval can be given from a single run" in text
    assert "0.700 (single run)" in text
    assert "No pair of models could be tested" in text


def test_failed_trials_are_left_out_of_the_summary():
    table = pd.DataFrame(runs("cnn3", [0.6, 0.7, 0.8]) + runs("cnn3", [0.1], folds=[3], status="error"))
    assert row(summarize(table), "cnn3")["n"] == 3
    assert row(summarize(table), "cnn3")["mean"] == pytest.approx(0.7)


def test_a_model_without_a_completed_run_is_listed_with_none():
    table = pd.DataFrame(runs("cnn3", [0.6, 0.7]) + runs("vgg11", [0.5], status="error"))
    vgg11 = row(summarize(table), "vgg11")
    assert vgg11["n"] == 0 and math.isnan(vgg11["mean"])


def test_the_markdown_shows_mean_half_width_and_interval():
    summary = summarize(pd.DataFrame(runs("cnn3", [0.6, 0.7, 0.8]) + runs("cnn4", [0.5, 0.6, 0.8])))
    text = summary_markdown(summary, compare_pairs(pd.DataFrame(runs("cnn3", [0.6]))), "PROTOCOL")
    assert "0.700 ± 0.248 (0.452\u20130.948)" in text
    assert "Protocol: PROTOCOL." in text


def test_a_consistent_difference_holds():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, size=5)
    noise = rng.normal(0, 0.005, size=5)
    table = pd.DataFrame(runs("cnn4", base + 0.05 + noise) + runs("cnn3", base))
    pair = compare_pairs(table).iloc[0]
    assert (pair["model_a"], pair["model_b"]) == ("cnn4", "cnn3")
    assert pair["n_pairs"] == 5
    assert pair["mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert pair["ci_low"] < 0.05 < pair["ci_high"]
    assert pair["p_value"] < 0.001
    assert pair["holds"]
    assert pair["test"] == "paired t-test"


def test_the_plain_test_is_scipys_paired_t_test():
    a, b = [0.7, 0.8, 0.9, 0.75], [0.65, 0.76, 0.84, 0.74]
    pair = compare_pairs(pd.DataFrame(runs("a", a) + runs("b", b))).iloc[0]
    assert pair["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_identical_models_have_no_p_value_and_do_not_hold():
    table = pd.DataFrame(runs("cnn3", [0.6, 0.7, 0.8]) + runs("cnn4", [0.6, 0.7, 0.8]))
    pair = compare_pairs(table).iloc[0]
    assert pair["mean_diff"] == 0
    assert math.isnan(pair["p_value"]) and math.isnan(pair["p_holm"])
    assert not pair["holds"]
    assert "identical scores on every unit" in pair["reason"]


def test_pairs_are_the_fold_and_seed_units_both_models_completed():
    table = pd.DataFrame(
        runs("a", [0.9, 0.8, 0.7, 0.6], folds=[0, 0, 1, 1], seeds=[0, 1, 0, 1])
        + runs("b", [0.85, 0.70, 0.64], folds=[0, 0, 1], seeds=[0, 1, 1])
        + runs("b", [0.1], folds=[1], seeds=[0], status="error")
    )
    pair = compare_pairs(table).iloc[0]
    assert pair["n_pairs"] == 3
    # Units (0, 0), (0, 1), (1, 1); a's run on (1, 0) has no partner.
    assert pair["mean_diff"] == pytest.approx(np.mean([0.05, 0.10, -0.04]))


def test_fewer_than_two_pairs_are_not_tested():
    table = pd.DataFrame(runs("a", [0.9, 0.8]) + runs("b", [0.7], folds=[1]))
    pair = compare_pairs(table).iloc[0]
    assert pair["n_pairs"] == 1
    assert math.isnan(pair["p_value"]) and not pair["holds"]
    assert "a paired test needs 2" in pair["reason"]


def test_several_trials_on_one_unit_are_not_paired():
    table = pd.DataFrame(runs("a", [0.9, 0.8], folds=[0, 0]) + runs("b", [0.7, 0.6], folds=[0, 0]))
    pair = compare_pairs(table).iloc[0]
    assert math.isnan(pair["p_value"]) and not pair["holds"]
    assert "cannot be paired" in pair["reason"]


@pytest.mark.parametrize("fold", [NO_FOLD, None])
def test_runs_without_cross_validation_pair_on_seeds(fold):
    # NO_FOLD is what a sweep writes; a row without a fold reads the same.
    same = [fold] * 3
    table = pd.DataFrame(
        runs("a", [0.9, 0.8, 0.75], same, seeds=[0, 1, 2])
        + runs("b", [0.7, 0.65, 0.6], same, seeds=[0, 1, 2])
    )
    assert compare_pairs(table).iloc[0]["n_pairs"] == 3


def test_holm_multiplies_the_ranked_p_values_and_keeps_their_order():
    adjusted = holm(np.array([0.01, 0.04, 0.03, np.nan, 0.5]))
    # Ranked 0.01, 0.03, 0.04, 0.5 of 4 tests: x4, x3, x2, x1, never below the one before.
    assert adjusted[[0, 2, 1, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert math.isnan(adjusted[3])


def test_holm_caps_adjusted_p_values_at_one():
    assert holm(np.array([0.4, 0.6])) == pytest.approx([0.8, 0.8])


def test_holds_is_decided_on_the_adjusted_p_value():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 0.7, size=4)
    models = {"a": base, "b": base + 0.05 + rng.normal(0, 0.005, 4), "c": base + rng.normal(0, 0.03, 4)}
    table = pd.DataFrame([r for name, scores in models.items() for r in runs(name, scores)])
    pairs = compare_pairs(table)
    assert list(zip(pairs["model_a"], pairs["model_b"], strict=True)) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pairs["p_holm"].to_numpy() == pytest.approx(holm(pairs["p_value"].to_numpy()))
    assert (pairs["holds"] == (pairs["p_holm"] < 0.05)).all()


def test_the_corrected_resampled_test_is_more_cautious_than_the_plain_one():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 0.7, size=5)
    table = pd.DataFrame(runs("a", base + 0.03 + rng.normal(0, 0.02, 5)) + runs("b", base))
    plain = compare_pairs(table).iloc[0]
    corrected = compare_pairs(table, test_train_ratio=cv_test_train_ratio(5)).iloc[0]
    assert corrected["p_value"] > plain["p_value"]
    assert corrected["ci_high"] - corrected["ci_low"] > plain["ci_high"] - plain["ci_low"]
    assert corrected["mean_diff"] == pytest.approx(plain["mean_diff"])
    assert corrected["test"].startswith("corrected resampled t-test (Nadeau & Bengio)")


def test_the_corrected_test_scales_the_variance_by_one_over_n_plus_the_test_train_ratio():
    diff = np.array([0.05, 0.02, 0.04, 0.01, 0.03])
    table = pd.DataFrame(runs("a", 0.6 + diff) + runs("b", [0.6] * 5))
    ratio = cv_test_train_ratio(5)
    t = diff.mean() / math.sqrt((1 / 5 + ratio) * diff.var(ddof=1))
    pair = compare_pairs(table, test_train_ratio=ratio).iloc[0]
    assert pair["p_value"] == pytest.approx(2 * stats.t.sf(t, 4))


def test_k_fold_with_a_validation_fold_trains_on_k_minus_two_folds():
    assert cv_test_train_ratio(5) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least 3 folds"):
        cv_test_train_ratio(2)


def test_an_unknown_metric_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="test_track_accuracy"):
        compare_pairs(pd.DataFrame(runs("a", [0.6])), metric="test_track_f1")


def test_the_pairwise_markdown_names_the_test_and_the_holm_adjustment():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, size=5)
    table = pd.DataFrame(runs("cnn4", base + 0.05 + rng.normal(0, 0.005, 5)) + runs("cnn3", base))
    text = summary_markdown(
        summarize(table), compare_pairs(table, test_train_ratio=1 / 3), protocol_text(5, 1, "by track")
    )
    assert "| cnn4 | cnn3 | 5 | +0.05" in text
    assert "corrected resampled t-test (Nadeau & Bengio)" in text
    assert "Holm" in text and "| yes |" in text


def test_the_protocol_in_words():
    assert protocol_text(5, 2, "by track, stratified by genre") == (
        "5-fold cross-validation by track, stratified by genre, 2 seeds: 10 runs per model; "
        "trial k tests on fold k, validates on fold k+1 (fold 0 after the last) and trains on the rest"
    )
    assert protocol_text(None, 1, "by-track (stratified)") == (
        "one fixed split (by-track (stratified)), 1 seed: 1 run per model"
    )
    assert "same test split" in protocol_text(None, 3, "by-track")


def test_the_plot_is_written(tmp_path):
    table = pd.DataFrame(runs("cnn3", [0.6, 0.7, 0.8]) + runs("vgg11", [0.5]))
    path = plot_summary(summarize(table), tmp_path / "plots" / "summary.png", runs=table)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
