"""Tune's search algorithms over a sweep's units: each model (with its fold and seed) searched apart.

`--num-samples N` is N configurations per model, and the models run side by side, so one searcher of
the whole sweep would neither give each model its N nor keep one model's scores from steering
another's. `UnitSearch`, a Tune `Searcher`, holds one searcher per unit (random, OptunaSearch or
HyperOptSearch over that model's space), hands trials out unit by unit in turn until each has had N,
and routes each trial's results back to its unit's searcher. Tune saves it with the experiment
(`save`), and `Tuner.restore` restores it (`restore`), so `--resume` continues the search.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray import tune
from ray.tune.search import Searcher

from data_pipeline.errors import UserInputError
from genre.config import BEST_BY
from genre.reports import is_final

# The package each search algorithm needs, and the extra of genre-ray that installs it.
SEARCH_PACKAGES = {"optuna": "optuna", "hyperopt": "hyperopt"}
# The TPE searchers draw their first trials at random: up to half of each unit's, at most what
# Optuna (10) and HyperOpt (20) draw by default, so a short search still models the rest.
MAX_RANDOM_START = {"optuna": 10, "hyperopt": 20}


def check_search_package(search: str) -> None:
    """Refuse a search algorithm whose package is not installed, before anything runs."""
    package = SEARCH_PACKAGES.get(search)
    if package and importlib.util.find_spec(package) is None:
        raise UserInputError(
            f"--search {search} needs the {package} package, which is not installed: "
            f"pip install 'genre-ray[{search}]'"
        )


def tune_space(space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """A parsed search space (genre.sweep.options.parse_search_space) as Tune's distributions."""
    domains = {}
    for name, distribution in space.items():
        ((kind, values),) = distribution.items()
        domains[name] = tune.choice(values) if kind == "choice" else getattr(tune, kind)(*values)
    return domains


def unit_search(
    search: str,
    units: Sequence[dict[str, Any]],
    spaces: Sequence[dict[str, dict[str, list[Any]]]],
    samples: int,
    seed: int,
) -> UnitSearch:
    """A UnitSearch of `search` (random, optuna, hyperopt): `samples` trials for each unit, unit i
    drawn from spaces[i], each unit's searcher seeded apart from `seed`."""
    make = {"random": _random, "optuna": _optuna, "hyperopt": _hyperopt}[search]
    searchers = [
        make(tune_space(space), seed=seed + index, samples=samples) for index, space in enumerate(spaces)
    ]
    return UnitSearch(units, searchers, samples)


class UnitSearch(Searcher):
    """One searcher per unit of the sweep; `samples` trials for each, handed out unit by unit in turn.

    A trial's config is its unit's searcher's suggestion with the unit's own values (model, fold,
    seed) over it.
    """

    def __init__(
        self,
        units: Sequence[dict[str, Any]],
        searchers: Sequence[Searcher],
        samples: int,
        metric: str = BEST_BY,
        mode: str = "max",
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        if len(units) != len(searchers):
            raise ValueError(f"{len(units)} units but {len(searchers)} searchers")
        # Not `searcher`: Tune's SearchGenerator takes an object with that attribute for a wrapper.
        self._units = [dict(unit) for unit in units]
        self._searchers = list(searchers)
        self._samples = samples
        self._issued = [0] * len(self._units)
        self._turn = 0  # the unit whose turn is next
        self._unit_of: dict[str, int] = {}  # trial id: its unit

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        count = len(self._units)
        for step in range(count):
            index = (self._turn + step) % count
            if self._issued[index] >= self._samples:
                continue
            suggestion = self._searchers[index].suggest(trial_id)
            if suggestion == Searcher.FINISHED:  # it has no more to give: the unit ends short
                self._issued[index] = self._samples
                continue
            if suggestion is None:  # not now: another unit's turn
                continue
            self._issued[index] += 1
            self._turn = (index + 1) % count
            self._unit_of[trial_id] = index
            return {**{k: _plain(v) for k, v in suggestion.items()}, **self._units[index]}
        return Searcher.FINISHED if self.finished() else None

    def finished(self) -> bool:
        """Whether every unit has had its trials."""
        return all(issued >= self._samples for issued in self._issued)

    def issued(self) -> list[tuple[dict[str, Any], int]]:
        """Each unit and how many trials it has been given."""
        return [(dict(unit), issued) for unit, issued in zip(self._units, self._issued, strict=True)]

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        # Epochs only: the final report is the trial's end (on_trial_complete), not one more step.
        index = self._unit_of.get(trial_id)
        if index is not None and self.metric in result and not is_final(result):
            self._searchers[index].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        index = self._unit_of.get(trial_id)
        if index is None:
            return
        if not error and (not result or self.metric not in result):
            # Nothing scored: HyperOpt would fail on the missing score; to a search it is a failed trial.
            result, error = None, True
        self._searchers[index].on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict[str, Any]:
        return {
            "units": [dict(unit) for unit in self._units],
            "samples": self._samples,
            "issued": list(self._issued),
            "turn": self._turn,
            "unit_of": dict(self._unit_of),
            # Each through its own save(), the one format every Tune searcher restores from.
            "searchers": [_saved(searcher) for searcher in self._searchers],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state["units"] != self._units or state["samples"] != self._samples:
            raise ValueError(
                f"the saved search is of other units or sample counts ({state['units']}, "
                f"{state['samples']} each) than this sweep's ({self._units}, {self._samples} each)"
            )
        self._issued = list(state["issued"])
        self._turn = state["turn"]
        self._unit_of = dict(state["unit_of"])
        for searcher, saved in zip(self._searchers, state["searchers"], strict=True):
            _restore(searcher, saved)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.get_state(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.set_state(pickle.load(file))


class RandomSearch(Searcher):
    """Draws every value at random from Tune's distributions, from a seeded generator: the same sweep
    draws the same values, and a resumed one goes on with the generator where it was."""

    def __init__(self, space: dict[str, Any], seed: int) -> None:
        super().__init__()
        self._space = space
        self._rng = np.random.default_rng(seed)

    def suggest(self, trial_id: str) -> dict[str, Any]:
        return {name: domain.sample(random_state=self._rng) for name, domain in self._space.items()}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        pass  # random draws learn nothing from scores

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self._rng.bit_generator.state, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self._rng.bit_generator.state = pickle.load(file)


def _random(space: dict[str, Any], seed: int, samples: int) -> Searcher:
    return RandomSearch(space, seed)


def _optuna(space: dict[str, Any], seed: int, samples: int) -> Searcher:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # Optuna logs every trial it is told of; the sweep's live view says what happened.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=_random_start("optuna", samples))
    # Converted here: given Tune's distributions, OptunaSearch converts them too, warning that it does.
    return OptunaSearch(OptunaSearch.convert_search_space(space), metric=BEST_BY, mode="max", sampler=sampler)


def _hyperopt(space: dict[str, Any], seed: int, samples: int) -> Searcher:
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(
        HyperOptSearch.convert_search_space(space),
        metric=BEST_BY,
        mode="max",
        n_initial_points=_random_start("hyperopt", samples),
        random_state_seed=seed,
    )


def _random_start(search: str, samples: int) -> int:
    return max(1, min(MAX_RANDOM_START[search], samples // 2))


def _plain(value: Any) -> Any:
    """A numpy number as Python's: the trial's config goes to YAML, JSON and Parquet."""
    return value.item() if isinstance(value, np.generic) else value


def _saved(searcher: Searcher) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "searcher.pkl")
        searcher.save(path)
        with open(path, "rb") as file:
            return file.read()


def _restore(searcher: Searcher, saved: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "searcher.pkl")
        with open(path, "wb") as file:
            file.write(saved)
        searcher.restore(path)
