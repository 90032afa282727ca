"""A trial resumed from its checkpoint repeats the uninterrupted run exactly, whatever its recipe (a
schedule, a patience), and a loss that stops being a number ends the trial; without Ray, in seconds
(genre.train.fit, as genre.train.worker drives it)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from genre.sweep.results import failure_line
from genre.train.augment import Augment, Augmenter
from genre.train.fit import TrialState, checkpoint_payload, fit, restore_payload, score
from tests.test_fit import CLASSES, training, windows

SEED = 11
# Seconds differ from run to run; everything else an epoch records must not.
TIMINGS = {"train_s", "validate_s", "epoch_time_s", "report_s"}
STEPS_PER_EPOCH = 8  # windows() in batches of 8
# Each recipe with the epochs it runs for and the epochs after which a run is interrupted.
FULL_RECIPE = {
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "schedule": "cosine",
    "warmup_epochs": 1,
    "grad_clip": 1.0,
    "label_smoothing": 0.1,
}
RECIPES = {
    "study": ({}, 4, (0, 2)),
    "cosine with warm-up": ({"schedule": "cosine", "warmup_epochs": 1}, 4, (0, 2)),
    "onecycle": ({"schedule": "onecycle"}, 4, (1,)),
    # Best at epochs 0 and 2, then no better: stopped after epoch 4; interrupted there, the restored
    # run stops without another epoch.
    "patience": ({**FULL_RECIPE, "patience": 2}, 8, (0, 2, 4)),
}
CASES = [(name, stop) for name, (_, _, stops) in RECIPES.items() for stop in stops]


class Interrupted(Exception):
    """The worker lost right after an epoch's checkpoint was written."""


def worker_run(
    data,
    epochs: int,
    *,
    stop_after: int | None = None,
    checkpoint: Path | None = None,
    recipe: dict | None = None,
):
    """What genre.train.worker does: seed, build the model (and its recipe's optimizer and schedule),
    restore the checkpoint if there is one, fit."""
    recipe = dict(recipe or {})
    patience = recipe.pop("patience", 0)
    if "schedule" in recipe:
        recipe.update(epochs=epochs, steps_per_epoch=STEPS_PER_EPOCH)
    trainer = training(seed=SEED, dropout=0.3, **recipe)  # seed_everything(seed + rank), then the model
    state, best = TrialState(), None
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state, best = restore_payload(trainer, saved)

    def report(metrics, state, best_weights):
        if checkpoint is not None:
            torch.save(checkpoint_payload(trainer, state, best_weights), checkpoint)
        if state.epoch == stop_after:
            raise Interrupted

    augment = Augment(freq_mask=2, time_mask=2, mixup_alpha=0.4, gain_db=10.0)
    best = fit(
        trainer,
        state,
        epochs=epochs,
        batches=lambda epoch: data.shuffled(8, SEED, epoch),
        validate=lambda model: score(model, data, "val", trainer.device, trainer.amp),
        report=report,
        best_weights=best,
        augmenter=Augmenter(augment, CLASSES, SEED),
        seed=SEED,
        patience=patience,
    )
    return trainer, state, best


def scramble_global_generators() -> None:
    """A new process's generators: whatever drew from them before the worker started."""
    random.seed(12345)
    np.random.seed(54321)
    torch.manual_seed(999)
    torch.rand(17)


def without_timings(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


@pytest.mark.parametrize(("recipe", "stop_after"), CASES)
def test_a_trial_interrupted_after_an_epoch_and_resumed_ends_bit_identical(tmp_path, recipe, stop_after):
    data = windows()
    settings, epochs, _ = RECIPES[recipe]
    whole_trainer, whole, whole_best = worker_run(data, epochs=epochs, recipe=settings)

    checkpoint = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        worker_run(data, epochs=epochs, stop_after=stop_after, checkpoint=checkpoint, recipe=settings)
    scramble_global_generators()
    resumed_trainer, resumed, resumed_best = worker_run(
        data, epochs=epochs, checkpoint=checkpoint, recipe=settings
    )

    trained = 5 if recipe == "patience" else epochs
    assert [row["epoch"] for row in resumed.history] == list(range(trained))
    assert resumed.stopped_early == whole.stopped_early == (recipe == "patience")
    # Every loss, accuracy and score of every epoch, to the last bit (== on floats).
    assert without_timings(resumed.history) == without_timings(whole.history)
    assert (resumed.epoch, resumed.best_epoch, resumed.best_val, resumed.samples) == (
        whole.epoch,
        whole.best_epoch,
        whole.best_val,
        whole.samples,
    )
    final, expected = resumed_trainer.plain_model.state_dict(), whole_trainer.plain_model.state_dict()
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    assert all(torch.equal(resumed_best[name], whole_best[name]) for name in whole_best)
    moments = resumed_trainer.optimizer.state_dict()["state"]
    for slot, expected_moments in whole_trainer.optimizer.state_dict()["state"].items():
        assert all(torch.equal(moments[slot][k], v) for k, v in expected_moments.items())
    # The rate, betas and weight decay where the run ended, and the schedule's step count and phases.
    assert resumed_trainer.optimizer.param_groups[0].keys() == whole_trainer.optimizer.param_groups[0].keys()
    for name, value in whole_trainer.optimizer.param_groups[0].items():
        if name != "params":
            assert resumed_trainer.optimizer.param_groups[0][name] == value, name
    if "schedule" in settings:
        assert resumed_trainer.scheduler.state_dict() == whole_trainer.scheduler.state_dict()
        assert resumed_trainer.scheduler.last_epoch == STEPS_PER_EPOCH * trained


def test_a_batch_that_makes_the_loss_nan_ends_the_trial_before_the_weights_take_it():
    data = windows()
    trainer = training()
    reports: list[int] = []

    def batches(epoch):
        for index, batch in enumerate(data.shuffled(8, 0, epoch)):
            if (epoch, index) == (1, 2):
                batch = {**batch, "mel": batch["mel"].clone()}
                batch["mel"][0, 1, 1] = float("nan")
            yield batch

    with pytest.raises(FloatingPointError) as raised:
        fit(
            trainer,
            TrialState(),
            epochs=3,
            batches=batches,
            validate=lambda model: score(model, data, "val", trainer.device, trainer.amp),
            report=lambda metrics, state, best: reports.append(metrics["epoch"]),
        )
    assert reports == [0]  # epoch 1 was never reported, so never checkpointed
    assert all(torch.isfinite(tensor).all() for tensor in trainer.plain_model.state_dict().values())
    # The results row's error column.
    assert failure_line(raised.value) == (
        "FloatingPointError: the training loss became nan at epoch 1, batch 2: look for non-finite values "
        "in DATA, or lower the learning rate (--lr)"
    )
