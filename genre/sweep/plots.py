"""The study's figures: train vs validation accuracy per epoch, one PNG per trial and one overview.

The one module that chooses matplotlib's backend: every other figure's `plt` is imported from here.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from genre import reports

VAL_ACCURACY = reports.metric_column("val", "segment", "accuracy")


def write_plots(history: pd.DataFrame, folder: Path) -> list[Path]:
    """plots/<model>-<trial>.png (train and val accuracy) and plots/val_accuracy.png (all trials)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    overview, overview_axes = plt.subplots(figsize=(7, 4.5))
    for (model, trial_id), rows in history.groupby(["model", "trial_id"], sort=False):
        rows = rows.sort_values(reports.EPOCH)
        epochs = rows[reports.EPOCH] + 1
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot(epochs, rows[reports.TRAIN_RUNNING_ACCURACY], marker="o", label="train (running)")
        axes.plot(epochs, rows[VAL_ACCURACY], marker="o", label="validation")
        axes.set(title=f"{model} ({trial_id})", xlabel="epoch", ylabel="segment accuracy", ylim=(0, 1))
        axes.legend()
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.tight_layout()
        path = folder / f"{model}-{trial_id}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
        overview_axes.plot(epochs, rows[VAL_ACCURACY], marker="o", label=f"{model} ({trial_id})")
    overview_axes.set(title="validation accuracy", xlabel="epoch", ylabel="segment accuracy", ylim=(0, 1))
    overview_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if written:
        overview_axes.legend(fontsize="small")
    overview.tight_layout()
    overview_path = folder / "val_accuracy.png"
    overview.savefig(overview_path, dpi=100)
    plt.close(overview)
    return [overview_path, *written]
