import math

import pandas as pd

from genre import reports
from genre.sweep.results_text import results_markdown

HEADER = {
    "data": "data",
    "manifest_sha256": "0" * 64,
    "split_protocol": "by-track",
    "leaky": False,
    "created": "now",
}


def row(model, epochs, stopped_early):
    scores = dict.fromkeys(reports.metric_columns(), 0.5)
    return {
        "model": model,
        "trial_id": model,
        "status": "completed",
        "error": "",
        "epochs": epochs,
        "best_epoch": 1,
        "train_time_s": 1.0,
        "samples_per_s": 10.0,
        "params": 1000,
        "amp": "off",
        "pretrained": "no",
        reports.STOPPED_EARLY: stopped_early,
        **scores,
    }


def test_a_trial_that_patience_ended_says_so_in_the_training_table():
    table = pd.DataFrame([row("cnn3", 4, 3), row("cnn4", 10, math.nan)])
    lines = {line.split(" | ")[0]: line for line in results_markdown(table, HEADER).splitlines()}
    assert "| 4 (stopped early: --patience) |" in lines["| cnn3"]
    assert "| 10 |" in lines["| cnn4"]
