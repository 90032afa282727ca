"""The results table as people read it: the study's tables in Markdown, and the terminal view."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from genre import reports


def row_labels(table: pd.DataFrame) -> list[str]:
    """Model names, with the trial id where a model has several trials (--num-samples)."""
    repeated = table["model"].duplicated(keep=False)
    return [
        f"{model} ({trial})" if twice else str(model)
        for model, trial, twice in zip(table["model"], table["trial_id"], repeated, strict=True)
    ]


def results_markdown(table: pd.DataFrame, header: dict[str, Any]) -> str:
    """The study's tables: accuracy, precision, recall per split and model; training time per model."""
    lines = [
        "# Sweep results",
        "",
        f"- dataset: `{header['data']}` (manifest sha256 `{header['manifest_sha256'][:12]}`)",
        f"- split protocol: **{header['split_protocol']}**"
        + (" (segments of one track in several splits: scores are inflated)" if header["leaky"] else ""),
        f"- created: {header['created']}",
        "",
    ]
    for level in ("segment", "track"):
        lines += [f"## {level.capitalize()}-level scores", ""]
        columns = [
            f"{s}_{level}_{m}" for s in ("train", "val", "test") for m in ("accuracy", "precision", "recall")
        ]
        titles = [
            f"{s} {m[:4]}." for s in ("train", "val", "test") for m in ("accuracy", "precision", "recall")
        ]
        lines.append("| model | " + " | ".join(titles) + " |")
        lines.append("|---|" + "---:|" * len(columns))
        for label, (_, row) in zip(row_labels(table), table.iterrows(), strict=True):
            lines.append(f"| {label} | " + " | ".join(_number(row[c]) for c in columns) + " |")
        lines.append("")
    lines += [
        "## Training",
        "",
        "| model | status | epochs | best epoch | train time (s) | samples/s | params | amp | pretrained |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for label, (_, row) in zip(row_labels(table), table.iterrows(), strict=True):
        status = row["status"] if not row["error"] else f"{row['status']}: {row['error']}"
        epochs = _number(row["epochs"], "{:.0f}")
        if _number(row.get(reports.STOPPED_EARLY)) != "-":
            epochs += " (stopped early: --patience)"
        lines.append(
            f"| {label} | {status} | {epochs} | "
            f"{_number(row['best_epoch'], '{:.0f}')} | {_number(row['train_time_s'], '{:.1f}')} | "
            f"{_number(row['samples_per_s'], '{:.1f}')} | {_number(row['params'], '{:,.0f}')} | "
            f"{row['amp'] or ''} | {row['pretrained'] or ''} |"
        )
    return "\n".join(lines) + "\n"


def render_table(table: pd.DataFrame) -> str:
    """The terminal view: test scores, time and status per trial."""
    header = (
        f"{'model':<22} {'status':<10} {'test seg acc':>12} {'test trk acc':>12} "
        f"{'val seg acc':>11} {'time s':>7}"
    )
    lines = [header, "-" * len(header)]
    for label, (_, row) in zip(row_labels(table), table.iterrows(), strict=True):
        lines.append(
            f"{label:<22} {row['status']:<10} {_number(row['test_segment_accuracy']):>12} "
            f"{_number(row['test_track_accuracy']):>12} {_number(row['val_segment_accuracy']):>11} "
            f"{_number(row['train_time_s'], '{:.1f}'):>7}"
        )
        if row["error"]:
            lines.append(f"    error: {row['error']}")
    return "\n".join(lines)


def _number(value: Any, pattern: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern.format(value)
