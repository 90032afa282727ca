"""Search algorithms and spaces: `--search`, `--search-space` (a `search:` section), trials per unit."""

from __future__ import annotations

import json
import pickle
import signal
from collections import Counter
from typing import Any

import pandas as pd
import pytest
import yaml

from data_pipeline.errors import UserInputError
from genre.config import BEST_BY, ModelDefaults, TrainConfig, TrialConfig
from genre.models import get_spec
from genre.sweep.options import (
    NOT_SEARCHABLE,
    TRAIN_OPTIONS,
    SweepConfig,
    parse_search_space,
    searchable_settings,
)
from genre.sweep.options_file import read_options_file
from genre.sweep.search import RandomSearch, UnitSearch, check_search_package, tune_space, unit_search

SPACE = {
    "lr": {"loguniform": [1.0e-4, 1.0e-2]},
    "batch_size": {"choice": [16, 32, 64]},
    "dropout": {"uniform": [0.1, 0.5]},
    "shuffle_buffer": {"randint": [64, 128]},
}
MANIFEST = {"features": {"n_mels": 64, "frames": 65}, "split": {}}
UNITS = [{"model": "cnn3", "seed": 0}, {"model": "cnn3", "seed": 1}, {"model": "cnn4", "seed": 0}]


def within(value: Any, distribution: dict[str, list[Any]]) -> bool:
    ((kind, values),) = distribution.items()
    if kind == "choice":
        return value in values
    low, high = values
    return low <= value < high if kind == "randint" else low <= value <= high


def test_a_space_is_read_in_one_form_numbers_written_as_yaml_text_included():
    # PyYAML reads 1e-4 (no dot) as text; flags' spellings name the settings too.
    space = parse_search_space({"lr": {"loguniform": ["1e-4", 0.01]}, "batch-size": {"choice": [16, "32"]}})
    assert space == {"lr": {"loguniform": [1e-4, 0.01]}, "batch_size": {"choice": [16, 32]}}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lrr": {"uniform": [0.1, 0.2]}}, "search: unknown setting 'lrr'; searchable: "),
        ({"epochs": {"choice": [1, 2]}}, "search: epochs cannot be searched: --epochs is every trial's"),
        ({"lr": {"normal": [0, 1]}}, "search: lr: unknown distribution 'normal'; one of loguniform"),
        ({"lr": {"loguniform": [0, 0.01]}}, "search: lr: loguniform needs low > 0, not 0.0"),
        ({"dropout": {"uniform": [0.5, 0.1]}}, "search: dropout: uniform needs low < high, not [0.5, 0.1]"),
        ({"shuffle_buffer": {"randint": [8, 8]}}, "search: shuffle_buffer: randint needs low < high"),
        ({"batch_size": {"choice": []}}, "search: batch_size: choice needs at least one value"),
        ({"batch_size": {"uniform": [8, 64]}}, "search: batch_size: uniform draws fractions"),
        ({"batch_size": {"choice": [16.5]}}, "search: batch_size: 16.5 is not a value batch_size takes"),
        ({"augment": {"choice": ["loud"]}}, "search: augment: 'loud' is not a value augment takes (one of"),
        ({"lr": {"uniform": [0.1]}}, "search: lr: uniform takes [low, high], not [0.1]"),
        ({"lr": 0.001}, "search: lr: one distribution, e.g. {uniform: [0.1, 0.5]}, not 0.001"),
        ({}, "search: a mapping of setting: {distribution: [...]}"),
    ],
)
def test_a_bad_space_is_refused_in_one_line_naming_the_setting_and_the_problem(space, message):
    with pytest.raises(UserInputError) as refused:
        parse_search_space(space)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_words_yaml_reads_as_booleans_are_the_choices_they_spell():
    space = yaml.safe_load("amp: {choice: [off, bf16]}")
    assert space == {"amp": {"choice": [False, "bf16"]}}  # what YAML hands over
    assert parse_search_space(space) == {"amp": {"choice": ["off", "bf16"]}}


def test_every_setting_of_a_trial_is_searchable_but_those_decided_before_the_trials():
    # New TrainConfig fields are searchable as they come, with nothing to add here.
    assert set(searchable_settings()) == set(TRAIN_OPTIONS) - set(NOT_SEARCHABLE)
    assert {"lr", "batch_size", "dropout", "augment", "freq_mask"} <= set(searchable_settings())


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"dropout": {"uniform": [0.1, 1.0]}}, "search: dropout: 1.0 is refused: dropout must be in [0, 1)"),
        ({"time_mask": {"randint": [1, 100]}}, "search: time_mask: 99 is refused: --time-mask 99 is wider"),
        ({"random_offsets": {"choice": [False, True]}}, "search: random_offsets: True is refused: --random-"),
    ],
)
def test_a_space_that_reaches_a_setting_the_sweep_refuses_is_refused_at_its_end(space, message):
    config = SweepConfig(data="d", out="o", search_space=space)
    with pytest.raises(UserInputError) as refused:
        config.check_space(config.search_space, MANIFEST, config.train)
    assert str(refused.value).startswith(message)


def test_a_search_with_cv_is_refused_the_folds_would_train_apart():
    config = SweepConfig(
        data="d", out="o", models=("cnn3",), cv=True, search_space={"lr": {"uniform": [1e-4, 1e-3]}}
    )
    with pytest.raises(UserInputError, match="--search-space samples each trial's configuration apart"):
        config.check({**MANIFEST, "split": {"folds": 3}})


def test_a_searcher_whose_package_is_missing_is_refused_naming_the_extra(monkeypatch):
    from genre.sweep import search

    monkeypatch.setattr(search.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserInputError, match=r"--search optuna needs the optuna package.*\[optuna\]'$"):
        check_search_package("optuna")
    check_search_package("random")  # nothing to install


def test_a_models_own_space_keeps_its_rate_a_decade_either_side_of_its_own_or_of_lr():
    spec = get_spec("cnn4")
    space = parse_search_space(spec.search_space())
    assert space["lr"] == {"loguniform": [pytest.approx(spec.lr / 10), pytest.approx(spec.lr * 10)]}
    assert set(space) == {"lr", "batch_size", "dropout"}
    assert parse_search_space(spec.search_space(lr=1e-3))["lr"]["loguniform"][1] == pytest.approx(1e-2)


def test_a_trial_takes_any_drawn_setting_the_augmentation_ones_resolved_as_one():
    sampled = {"model": "cnn4", "lr": 2e-3, "batch_size": 32, "augment": "light", "freq_mask": 5}
    trial = TrialConfig.resolve(TrainConfig(lr=1e-4), "cnn4", ModelDefaults(lr=1e-4, dropout=0.2), sampled)
    assert (trial.lr, trial.batch_size, trial.dropout) == (2e-3, 32, 0.2)
    assert trial.augment["freq_mask"] == 5
    with pytest.raises(ValueError, match="dropout must be in"):  # checked as a flag's value is
        TrialConfig.resolve(TrainConfig(), "cnn4", ModelDefaults(lr=1e-4, dropout=0.2), {"dropout": 2.0})


def test_a_search_file_section_is_the_space_and_a_word_there_the_algorithm(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("search:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    assert read_options_file(path) == {"search_space": {"lr": {"loguniform": [1e-4, 1e-2]}}}
    path.write_text("search: optuna\n")
    assert read_options_file(path) == {"search": "optuna"}


def random_units(samples: int = 3) -> UnitSearch:
    spaces = [parse_search_space(SPACE)] * len(UNITS)
    return unit_search("random", UNITS, spaces, samples=samples, seed=7)


def suggest_all(search: UnitSearch, start: int = 0) -> list[dict[str, Any]]:
    suggestions = []
    while (suggestion := search.suggest(f"trial{start + len(suggestions)}")) != UnitSearch.FINISHED:
        assert suggestion is not None
        suggestions.append(suggestion)
    return suggestions


def test_every_unit_gets_exactly_its_samples_in_turn_its_own_values_over_the_drawn_ones():
    suggestions = suggest_all(random_units(samples=3))
    units = [(s["model"], s["seed"]) for s in suggestions]
    assert Counter(units) == {("cnn3", 0): 3, ("cnn3", 1): 3, ("cnn4", 0): 3}
    assert units[:3] == [("cnn3", 0), ("cnn3", 1), ("cnn4", 0)]  # in turn: the models run side by side
    for suggestion in suggestions:
        assert all(within(suggestion[name], distribution) for name, distribution in SPACE.items())
        assert type(suggestion["batch_size"]) is int and type(suggestion["lr"]) is float  # not numpy's


class Recording(RandomSearch):
    """A random searcher that keeps what it is told."""

    def __init__(self, seed: int) -> None:
        super().__init__(tune_space(parse_search_space(SPACE)), seed)
        self.results: list[tuple[str, dict]] = []
        self.completed: list[tuple[str, dict | None, bool]] = []

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.results.append((trial_id, result))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.completed.append((trial_id, result, error))


def test_each_trials_scores_reach_its_own_units_searcher_epochs_as_results():
    searchers = [Recording(seed) for seed in range(len(UNITS))]
    search = UnitSearch(UNITS, searchers, samples=1)
    for trial_id in ("a", "b", "c"):
        search.suggest(trial_id)
    epoch = {BEST_BY: 0.5, "training_iteration": 1}
    search.on_trial_result("b", epoch)
    search.on_trial_result("b", {BEST_BY: 0.6, "final": 1})  # the final report is the trial's end
    search.on_trial_result("b", {"training_iteration": 2})  # no score: nothing to learn from
    search.on_trial_complete("b", {BEST_BY: 0.6, "final": 1})
    search.on_trial_complete("c", {"training_iteration": 1})  # ended without a score: a failure
    assert searchers[0].results == searchers[0].completed == []
    assert searchers[1].results == [("b", epoch)]
    assert searchers[1].completed == [("b", {BEST_BY: 0.6, "final": 1}, False)]
    assert searchers[2].completed == [("c", None, True)]


def test_a_restored_search_goes_on_where_the_saved_one_was(tmp_path):
    search = random_units(samples=3)
    first = suggest_all_but(search, 4)
    search.save(str(tmp_path / "state.pkl"))
    rest = suggest_all(search, start=4)

    restored = random_units(samples=3)  # as Tune unpickles it from the Tuner, before its state
    restored.restore(str(tmp_path / "state.pkl"))
    assert suggest_all(restored, start=4) == rest  # the same draws, for the units still short
    assert Counter(s["model"] for s in first + rest) == {"cnn3": 6, "cnn4": 3}
    other = unit_search("random", UNITS[:2], [parse_search_space(SPACE)] * 2, samples=3, seed=7)
    with pytest.raises(ValueError, match="other units"):
        other.restore(str(tmp_path / "state.pkl"))


def suggest_all_but(search: UnitSearch, count: int) -> list[dict[str, Any]]:
    return [search.suggest(f"trial{i}") for i in range(count)]


@pytest.mark.parametrize("algorithm", ["optuna", "hyperopt"])
def test_a_tpe_search_is_restored_with_what_its_searchers_were_told(tmp_path, algorithm):
    spaces = [parse_search_space(SPACE)] * 2
    search = unit_search(algorithm, UNITS[:2], spaces, samples=4, seed=3)
    for i, suggestion in enumerate(suggest_all_but(search, 4)):
        assert all(within(suggestion[name], spec) for name, spec in SPACE.items())
        search.on_trial_complete(f"trial{i}", {BEST_BY: suggestion["dropout"], "final": 1})
    search.save(str(tmp_path / "state.pkl"))
    restored = unit_search(algorithm, UNITS[:2], spaces, samples=4, seed=3)
    restored.restore(str(tmp_path / "state.pkl"))
    assert suggest_all(restored, start=4) == suggest_all(search, start=4)
    assert restored.issued() == [(UNITS[0], 4), (UNITS[1], 4)]


SEARCH_FILE = """\
models: [cnn3, cnn4]
num_samples: 2
epochs: 1
batch_size: 8
pretrained: no
seed: 5
max_concurrent: 1
search:
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  batch_size: {choice: [8, 16]}
  dropout: {uniform: [0.1, 0.5]}
"""


def test_an_optuna_search_from_a_file_resumes_after_a_kill_with_its_searchers_state(tiny_dataset, tmp_path):
    """2 models x 2 samples, one trial at a time; killed in cnn4's first trial, then --resume."""
    from genre.cli import main
    from tests.test_faults import start_sweep, stop_and_wait, wait_for_file

    config, out, paused = tmp_path / "search.yaml", tmp_path / "run", tmp_path / "cnn4.pid"
    config.write_text(SEARCH_FILE)
    fault = ["--inject-fault", f"cnn4=pause@0:end:{paused}"]
    first = start_sweep(tiny_dataset, out, "--config", str(config), "--search", "optuna", *fault)
    wait_for_file(paused)
    stop_and_wait(first, signal.SIGKILL)

    assert main(["sweep", str(tiny_dataset), str(out), "--resume"]) == 0
    table = pd.read_parquet(out / "results.parquet")
    # Exactly the trials left: the finished one kept, the killed one restarted, the other two drawn.
    assert len(table) == 4 and set(table["status"]) == {"completed"}
    assert Counter(table["model"]) == {"cnn3": 2, "cnn4": 2}
    assert sorted(table["retries"]) == [0, 0, 0, 1]
    space = parse_search_space(yaml_search(SEARCH_FILE))
    for _, row in table.iterrows():
        sampled = json.loads(row["sampled"])
        assert set(sampled) == set(space) and all(within(sampled[k], space[k]) for k in space)
        assert (row["lr"], row["batch_size"], row["dropout"]) == (
            sampled["lr"],
            sampled["batch_size"],
            sampled["dropout"],
        )
    # Each model's Optuna study, saved by Tune with the experiment, was told of both its trials: the
    # one scored before the kill included.
    state = newest_search_state(out)
    assert state["issued"] == [2, 2]
    for unit, saved in zip(state["units"], state["searchers"], strict=True):
        study = pickle.loads(saved)["_ot_study"]
        told = sorted(trial.params["lr"] for trial in study.trials if trial.state.name == "COMPLETE")
        assert told == sorted(table[table["model"] == unit["model"]]["lr"])


def yaml_search(text: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text)["search"]


def newest_search_state(out) -> dict[str, Any]:
    from genre.run_folder import EXPERIMENT

    newest = max((out / EXPERIMENT).glob("searcher-state-*.pkl"))
    return pickle.loads(newest.read_bytes())
