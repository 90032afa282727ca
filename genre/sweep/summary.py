"""The study across folds and seeds: each model's mean with a 95% interval, models compared in pairs,
their text for results.md and one figure. Pure: pandas, numpy, scipy and matplotlib, no Ray, no torch.

A results table row is one trial; its `fold` (the test fold of a cross-validated sweep, NO_FOLD when
the sweep has one fixed split) and `seed` name the unit on which two models' runs are paired.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from genre.reports import LEVELS, METRIC_NAMES, metric_columns
from genre.sweep.plots import plt

NO_FOLD = -1  # the `fold` of a trial in a sweep without cross-validation (one fixed split)
CONFIDENCE = 0.95  # of every interval
ALPHA = 0.05  # a difference "holds" when its Holm-adjusted p-value is below this
TEST_METRICS = metric_columns(("test",))
PLOTTED = ("test_track_accuracy", "test_segment_accuracy")
SUMMARY_COLUMNS = ["model", "metric", "n", "mean", "sd", "ci_low", "ci_high", "interval"]
PAIR_COLUMNS = [
    "model_a",
    "model_b",
    "metric",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "holds",
    "test",
    "reason",
]
T_INTERVAL = f"Student t {CONFIDENCE:.0%}"
SINGLE_RUN = "single run: no interval"
PLAIN_TEST = "paired t-test"
RANGE_DASH = "\u2013"  # an interval's en dash, written as an escape for the linter


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and test metric, over its completed runs (folds x seeds): n, mean, sd (n-1) and the
    95% interval of the mean, mean ± t(0.975, n-1)·sd/√n; NaN from a single run (`interval` says so)."""
    completed = _completed(table)
    rows = []
    for model in _models(table):
        runs = completed[completed["model"] == model]
        for metric in TEST_METRICS:
            values = pd.to_numeric(runs[metric], errors="coerce").dropna().to_numpy(float)
            rows.append({"model": model, "metric": metric, **_interval(values)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def compare_pairs(
    table: pd.DataFrame, metric: str = "test_track_accuracy", test_train_ratio: float | None = None
) -> pd.DataFrame:
    """Every pair of models on the (fold, seed) units both completed: mean difference (a - b), its 95%
    interval and a paired t-test, Holm-adjusted across the pairs; `holds` is p_holm < 0.05.

    Without `test_train_ratio` the test is scipy's ttest_rel. Cross-validation folds share training
    tracks, which makes that test optimistic; pass n_test/n_train (`cv_test_train_ratio(K)`) for
    Nadeau & Bengio's corrected resampled t-test, whose variance is sd²·(1/n + n_test/n_train).
    """
    if metric not in table:
        raise ValueError(f"no column {metric!r} in the results table; the test metrics are {TEST_METRICS}")
    if test_train_ratio is not None and not test_train_ratio > 0:
        raise ValueError(f"test_train_ratio is n_test/n_train, a positive number; got {test_train_ratio}")
    test = (
        PLAIN_TEST
        if test_train_ratio is None
        else f"corrected resampled t-test (Nadeau & Bengio), n_test/n_train = {test_train_ratio:.3g}"
    )
    scores = _completed(table).assign(fold=_unit(table, "fold"), seed=_unit(table, "seed"))
    scores = scores[scores[metric].notna()]
    rows = []
    for a, b in combinations(_models(table), 2):
        row = {"model_a": a, "model_b": b, "metric": metric, "test": test}
        rows.append(row | _paired(scores, a, b, metric, test_train_ratio))
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    pairs["p_holm"] = holm(pairs["p_value"].to_numpy(float))
    pairs["holds"] = (pairs["p_holm"] < ALPHA).astype(bool)
    return pairs


def cv_test_train_ratio(folds: int) -> float:
    """n_test/n_train of K-fold cross-validation where one fold tests, the next validates, K-2 train."""
    if folds < 3:
        raise ValueError(f"cross-validation needs at least 3 folds (test, validation, training); got {folds}")
    return 1 / (folds - 2)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment for multiple tests; NaN p-values (no test) are not counted."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def protocol_text(folds: int | None, seeds: int, split: str) -> str:
    """The protocol in words for results.md; `split` says how tracks are divided, e.g. 'by track,
    stratified by genre'."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1; got {seeds}")
    seed_words = f"{seeds} seed{'s' if seeds > 1 else ''}"
    if folds is None:
        runs = f"{seeds} run{'s' if seeds > 1 else ''} per model"
        text = f"one fixed split ({split}), {seed_words}: {runs}"
        if seeds > 1:
            text += (
                ", all tested on the same test split (the intervals cover training randomness, "
                "not the choice of test tracks)"
            )
        return text
    cv_test_train_ratio(folds)  # refuses too few folds
    return (
        f"{folds}-fold cross-validation {split}, {seed_words}: {folds * seeds} runs per model; "
        f"trial k tests on fold k, validates on fold k+1 (fold 0 after the last) and trains on the rest"
    )


def summary_markdown(summary: pd.DataFrame, pairs: pd.DataFrame, protocol: str) -> str:
    """results.md's section on the runs taken together: each model's means with 95% intervals, the
    pairwise comparisons, and how to read both."""
    lines = ["## Across folds and seeds", "", f"Protocol: {protocol}.", ""]
    most_runs = int(summary["n"].max()) if len(summary) else 0
    if most_runs <= 1:
        lines += [
            "One run per model: no interval can be given from a single run, and no two models can be "
            "compared beyond their single scores. Repeat the sweep with `--seeds` or `--cv` for intervals.",
            "",
        ]
    else:
        lines += [
            f"Each cell: the mean over a model's completed runs ± the half-width of its {CONFIDENCE:.0%} "
            "confidence interval (Student t: mean ± t(0.975, n-1)·sd/√n), the interval in brackets. "
            "A model with a single completed run shows its score alone: no interval can be given from "
            "a single run.",
            "",
        ]
    for level in LEVELS:
        lines += [f"### Test {level}-level scores", "", "| model | runs | " + " | ".join(METRIC_NAMES) + " |"]
        lines.append("|---|---:|" + "---:|" * len(METRIC_NAMES))
        for model, rows in summary.groupby("model", sort=False):
            cells = {row["metric"]: row for _, row in rows.iterrows()}
            first = cells[f"test_{level}_{METRIC_NAMES[0]}"]
            lines.append(
                f"| {model} | {first['n']} | "
                + " | ".join(_mean_cell(cells[f"test_{level}_{m}"]) for m in METRIC_NAMES)
                + " |"
            )
        lines.append("")
    lines += _pairs_markdown(pairs)
    return "\n".join(lines) + "\n"


def plot_summary(summary: pd.DataFrame, path: Path, runs: pd.DataFrame | None = None) -> Path:
    """One PNG: each model's mean test track and segment accuracy with 95% interval bars, and each
    completed run of `runs` (the results table) as a point beside them."""
    models = list(dict.fromkeys(summary["model"]))
    completed = _completed(runs) if runs is not None else None
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(models) + 2), 4.5))
    x = np.arange(len(models))
    width = 0.35
    for offset, metric in zip((-width / 2, width / 2), PLOTTED, strict=True):
        rows = summary[summary["metric"] == metric].set_index("model").reindex(models)
        below = (rows["mean"] - rows["ci_low"]).fillna(0)
        above = (rows["ci_high"] - rows["mean"]).fillna(0)
        label = metric.removeprefix("test_").replace("_", " ")
        bars = axes.errorbar(
            x + offset, rows["mean"], yerr=[below, above], fmt="o", capsize=4, markersize=7, label=label
        )
        if completed is not None:
            for i, model in enumerate(models):
                values = completed.loc[completed["model"] == model, metric].dropna().to_numpy(float)
                # Spread the runs sideways so equal scores stay visible.
                spread = np.linspace(-0.06, 0.06, len(values)) if len(values) > 1 else np.zeros(len(values))
                axes.scatter(
                    x[i] + offset + 0.1 + spread, values, s=12, alpha=0.5, color=bars.lines[0].get_color()
                )
    axes.set_xticks(x, models, rotation=20, ha="right")
    axes.set(
        title=f"test accuracy: mean and {CONFIDENCE:.0%} interval over runs", ylabel="accuracy", ylim=(0, 1)
    )
    axes.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _interval(values: np.ndarray) -> dict[str, Any]:
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
    interval = T_INTERVAL if n > 1 else SINGLE_RUN if n == 1 else "no completed run"
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "interval": interval,
    }


def _paired(
    scores: pd.DataFrame, a: str, b: str, metric: str, test_train_ratio: float | None
) -> dict[str, Any]:
    # An untested pair says why in `reason`; a tested one's reason is empty.
    untested = {"n_pairs": 0, "mean_diff": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
    runs = {m: scores[scores["model"] == m].set_index(["fold", "seed"])[metric] for m in (a, b)}
    for model, values in runs.items():
        if values.index.has_duplicates:
            reason = f"{model} has several completed trials on one (fold, seed): they cannot be paired"
            return untested | {"reason": reason}
    joined = pd.concat(runs, axis=1, join="inner").to_numpy(float)
    diff = joined[:, 0] - joined[:, 1]
    n = len(diff)
    untested["n_pairs"] = n
    if n < 2:
        units = f"{n} (fold, seed) unit{'' if n == 1 else 's'}"
        return untested | {"reason": f"{units} completed by both: a paired test needs 2"}
    mean = float(diff.mean())
    if np.allclose(diff, diff[0], rtol=0, atol=1e-12):
        # No spread to weigh the difference against: the t statistic is 0/0 or infinite.
        same = "identical scores on every unit" if abs(mean) < 1e-12 else f"the same difference {mean:+.3g}"
        return untested | {"mean_diff": mean, "reason": f"{same}: a t-test needs differences that vary"}
    if test_train_ratio is None:
        result = stats.ttest_rel(joined[:, 0], joined[:, 1])
        low, high = result.confidence_interval(CONFIDENCE)
        p = float(result.pvalue)
    else:
        se = math.sqrt((1 / n + test_train_ratio) * diff.var(ddof=1))
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
        low, high = mean - half, mean + half
    tested = {"n_pairs": n, "mean_diff": mean, "ci_low": float(low), "ci_high": float(high)}
    return tested | {"p_value": p, "reason": ""}


def _pairs_markdown(pairs: pd.DataFrame) -> list[str]:
    if pairs.empty:
        return ["### Models compared", "", "One model: nothing to compare.", ""]
    metric, test = pairs["metric"].iloc[0], pairs["test"].iloc[0]
    lines = [f"### Models compared on {metric.replace('_', ' ')}", ""]
    tested = int(pairs["p_value"].notna().sum())
    if tested == 0:
        reasons = "; ".join(dict.fromkeys(pairs["reason"]))
        return [*lines, f"No pair of models could be tested: {reasons}.", ""]
    lines += [
        "| model a | model b | pairs | a - b | 95% interval | p | p (Holm) | holds | note |",
        "|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for _, row in pairs.iterrows():
        interval = "-" if pd.isna(row["ci_low"]) else f"{row['ci_low']:+.3f} to {row['ci_high']:+.3f}"
        diff = "-" if pd.isna(row["mean_diff"]) else f"{row['mean_diff']:+.3f}"
        lines.append(
            f"| {row['model_a']} | {row['model_b']} | {row['n_pairs']} | {diff} | {interval} | "
            f"{_p(row['p_value'])} | {_p(row['p_holm'])} | {'yes' if row['holds'] else 'no'} | "
            f"{row['reason']} |"
        )
    lines += [
        "",
        "Each pair is compared on the (fold, seed) units both models completed: `a - b` is the mean "
        f"difference, with its {CONFIDENCE:.0%} interval. Test: {test}. The p-values are adjusted by "
        f"Holm's method for the {tested} pair{'s' if tested > 1 else ''} tested, and a difference holds "
        f"when the adjusted p-value is below {ALPHA:.2f}. A difference that does not hold is not shown "
        "to be zero: these runs cannot tell the two models apart.",
    ]
    if test == PLAIN_TEST:
        lines.append(
            "Runs whose training sets overlap (cross-validation folds) make the plain paired t-test "
            "optimistic, its p-values too small; the corrected resampled t-test allows for the overlap."
        )
    else:
        lines.append(
            "The corrected test widens the variance of the mean difference from sd²/n to "
            "sd²·(1/n + n_test/n_train), because cross-validation folds share training tracks."
        )
    return [*lines, ""]


def _mean_cell(row: pd.Series) -> str:
    if row["n"] == 0:
        return "-"
    if row["n"] == 1:
        return f"{row['mean']:.3f} (single run)"
    half = (row["ci_high"] - row["ci_low"]) / 2
    return f"{row['mean']:.3f} ± {half:.3f} ({row['ci_low']:.3f}{RANGE_DASH}{row['ci_high']:.3f})"


def _p(value: float) -> str:
    if pd.isna(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _completed(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "completed"]


def _models(table: pd.DataFrame) -> list[str]:
    """The models in the table's order (the study's), failed ones included."""
    return list(dict.fromkeys(table["model"]))


def _unit(table: pd.DataFrame, column: str) -> pd.Series:
    """`fold` or `seed` as integers, NO_FOLD where a row has none."""
    return pd.to_numeric(table[column], errors="coerce").fillna(NO_FOLD).astype(int)
