"""The training recipe: optimizers, per-batch learning-rate schedules, patience, gradient clipping and
label smoothing, in the Ray-free loop (seconds); then once through a whole sweep (Ray)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from genre.config import BEST_BY, ModelDefaults, TrainConfig, TrialConfig
from genre.reports import EPOCH, FINAL, STOPPED_EARLY
from genre.train.fit import TrialState, fit, train_epoch
from genre.train.recipe import make_scheduler
from tests.test_fit import CLASSES, training, windows

LR = 0.05
STEPS = 8  # windows() in batches of 8: 8 batches an epoch
RECIPE_OPTIONS = {
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "lr_schedule": "cosine",
    "warmup_epochs": 1,
    "patience": 2,
    "grad_clip": 1.0,
    "label_smoothing": 0.1,
}


def rates_per_batch(epochs: int, **recipe) -> list[float]:
    """The learning rate each batch was stepped with, over `epochs` epochs of the toy data."""
    trainer = training(lr=LR, epochs=epochs, steps_per_epoch=STEPS, **recipe)
    rates: list[float] = []
    trainer.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: rates.append(optimizer.param_groups[0]["lr"])
    )
    data = windows()
    fit(
        trainer,
        TrialState(),
        epochs=epochs,
        batches=lambda epoch: data.shuffled(8, 0, epoch),
        validate=lambda model: {},
        report=lambda metrics, state, best: None,
    )
    return rates


def cosine_annealed(start: float, end: float, done: float) -> float:
    """OneCycleLR's cosine from `start` to `end`, `done` of the way."""
    return end + (start - end) / 2 * (1 + math.cos(math.pi * done))


def test_cosine_with_warm_up_rises_linearly_per_batch_then_follows_a_half_cosine():
    rates = rates_per_batch(3, schedule="cosine", warmup_epochs=1)
    total, warmup = 3 * STEPS, STEPS
    expected = [
        LR * (step + 1) / warmup
        if step < warmup
        else LR * cosine_annealed(1, 0, (step - warmup) / (total - warmup))
        for step in range(total)
    ]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[warmup - 1] == pytest.approx(LR) and 0 < rates[-1] < LR / 50


def test_constant_with_warm_up_rises_then_holds_and_without_it_nothing_steps_the_rate():
    rates = rates_per_batch(2, schedule="constant", warmup_epochs=1)
    assert rates == pytest.approx([LR * (step + 1) / STEPS for step in range(STEPS)] + [LR] * STEPS)
    optimizer = torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=LR)
    assert make_scheduler(optimizer, "constant", epochs=2, steps_per_epoch=STEPS) is None


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_onecycle_rises_over_the_warm_up_or_torchs_share_then_falls_as_onecycle_does(warmup_epochs):
    epochs = 3
    rates = rates_per_batch(epochs, schedule="onecycle", warmup_epochs=warmup_epochs)
    total = epochs * STEPS
    rise_end = (warmup_epochs / epochs if warmup_epochs else 0.3) * total - 1
    first, last = LR / 25, LR / 25 / 1e4  # OneCycleLR's div_factor and final_div_factor
    expected = [
        cosine_annealed(first, LR, step / rise_end)
        if step <= rise_end
        else cosine_annealed(LR, last, (step - rise_end) / (total - 1 - rise_end))
        for step in range(total)
    ]
    assert rates == pytest.approx(expected, rel=1e-9)
    assert max(rates) == pytest.approx(LR, rel=0.05)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_every_schedule_steps_through_epochs_of_a_single_batch(schedule):
    optimizer = torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=LR)
    scheduler = make_scheduler(optimizer, schedule, epochs=3, steps_per_epoch=1, warmup_epochs=1)
    rates = []
    for _ in range(3):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert all(0 <= rate <= LR for rate in rates)


def verdicts_run(verdicts: list[float], epochs: int, patience: int) -> tuple[TrialState, list[int]]:
    """A run whose validation scores are `verdicts`, epoch by epoch; and the epochs it reported."""
    scores = iter(verdicts)
    reported: list[int] = []
    state = TrialState()
    data = windows()
    fit(
        training(),
        state,
        epochs=epochs,
        batches=lambda epoch: data.shuffled(8, 0, epoch),
        validate=lambda model: {BEST_BY: next(scores)},
        report=lambda metrics, state, best: reported.append(metrics["epoch"]),
        patience=patience,
    )
    return state, reported


def test_patience_ends_the_trial_once_that_many_epochs_bring_no_better_score_and_says_so():
    # Best at epoch 2; epochs 3 and 4 no better (equal is not better): stopped after epoch 4.
    state, reported = verdicts_run([0.5, 0.4, 0.6, 0.6, 0.55, 0.9, 0.9], epochs=7, patience=2)
    assert reported == [0, 1, 2, 3, 4]
    assert (state.epoch, state.best_epoch, state.stopped_early) == (4, 2, True)


def test_patience_that_runs_out_only_at_the_last_epoch_or_never_is_no_early_stop():
    state, reported = verdicts_run([0.5, 0.4, 0.3], epochs=3, patience=2)
    assert reported == [0, 1, 2] and not state.stopped_early
    state, reported = verdicts_run([0.5, 0.4, 0.3, 0.2], epochs=4, patience=0)
    assert reported == [0, 1, 2, 3] and not state.stopped_early


def test_the_live_view_tells_a_trial_that_patience_ended_by_its_last_epoch(capsys):
    from types import SimpleNamespace

    from genre.sweep.live_view import LiveView

    trial = SimpleNamespace(trial_id="t1", status="RUNNING", config={"model": "cnn3", "epochs": 9})
    final = {FINAL: 1, EPOCH: 4, STOPPED_EARLY: 4, "test_segment_accuracy": 0.5, "test_track_accuracy": 0.5}
    LiveView({}).on_trial_result(0, [trial], trial, final)
    assert (
        "finished: test accuracy 0.500 (segment), 0.500 (track); stopped early by --patience after "
        "epoch 5" in capsys.readouterr().out
    )


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_gradient_clipping_bounds_the_norm_of_the_gradients_each_step_uses(amp):
    def step_norms(**recipe) -> list[float]:
        trainer = training(amp=amp, **recipe)
        norms: list[float] = []

        def record(optimizer, args, kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        trainer.optimizer.register_step_pre_hook(record)
        train_epoch(trainer, windows().shuffled(8, 0, 0))
        return norms

    # fp16's scaler multiplies the loss by 65536: the bound holds for the unscaled gradients.
    assert max(step_norms(grad_clip=0.01)) <= 0.01 * (1 + 1e-5)
    assert max(step_norms()) > 0.1


def one_batch_loss(label_smoothing: float, augmenter=None) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The reported loss of one batch at a zero rate (the weights stay put), the logits and labels."""
    trainer = training(lr=0.0, label_smoothing=label_smoothing)
    batch = next(windows().shuffled(8, 0, 0))
    logits = trainer.model(batch["mel"].float()).detach()
    trained, _ = train_epoch(trainer, [batch], augmenter)
    return trained["train_loss"], logits, batch["label"]


def test_label_smoothing_mixes_the_targets_with_the_uniform_distribution_as_cross_entropy_does():
    eps = 0.2
    loss, logits, labels = one_batch_loss(eps)
    log_p = torch.log_softmax(logits, dim=1)
    smoothed = (1 - eps) * -log_p.gather(1, labels[:, None]).squeeze(1) - eps / CLASSES * log_p.sum(dim=1)
    assert loss == pytest.approx(float(smoothed.mean()), rel=1e-5)
    plain = -log_p.gather(1, labels[:, None]).mean()
    assert one_batch_loss(0.0)[0] == pytest.approx(float(plain), rel=1e-5) != loss


def test_label_smoothing_smooths_mixups_soft_targets_too():
    eps, soft = 0.2, None

    def mixup_like(mel, labels, epoch, batch):  # what an Augmenter with mixup hands the loss
        nonlocal soft
        soft = (
            nn.functional.one_hot(labels, CLASSES).float() * 0.7
            + nn.functional.one_hot((labels + 1) % CLASSES, CLASSES).float() * 0.3
        )
        return mel, soft

    loss, logits, _ = one_batch_loss(eps, mixup_like)
    targets = (1 - eps) * soft + eps / CLASSES
    expected = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_adamw_decays_weights_apart_from_the_gradient_where_adams_decay_is_an_l2_term():
    def trained_weights(**recipe) -> torch.Tensor:
        trainer = training(seed=1, **recipe)
        data = windows()
        for epoch in range(2):
            train_epoch(trainer, data.shuffled(8, 0, epoch))
        return trainer.plain_model.state_dict()["2.weight"]

    adam, adamw = trained_weights(weight_decay=0.1), trained_weights(optimizer="adamw", weight_decay=0.1)
    assert not torch.allclose(adam, adamw)
    undecayed = trained_weights(optimizer="adamw")
    assert adamw.norm() < undecayed.norm()  # decoupled decay shrinks the weights


def test_the_study_recipe_is_the_default_and_reaches_the_trial_and_its_record():
    assert {name: getattr(TrainConfig(), name) for name in RECIPE_OPTIONS} == {
        "optimizer": "adam",
        "weight_decay": 0.0,
        "lr_schedule": "constant",
        "warmup_epochs": 0,
        "patience": 0,
        "grad_clip": None,
        "label_smoothing": 0.0,
    }
    trial = TrialConfig.resolve(TrainConfig(epochs=3, **RECIPE_OPTIONS), "cnn3", ModelDefaults(1e-3, 0.2))
    assert {name: trial.to_dict()[name] for name in RECIPE_OPTIONS} == RECIPE_OPTIONS
    # A checkpoint's config from before the recipe reads as the study's.
    older = {k: v for k, v in trial.to_dict().items() if k not in RECIPE_OPTIONS}
    assert TrialConfig.from_dict(older).lr_schedule == "constant"


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"optimizer": "sgd"}, "--optimizer"),
        ({"weight_decay": -0.1}, "--weight-decay"),
        ({"lr_schedule": "step"}, "--lr-schedule"),
        ({"warmup_epochs": 3, "epochs": 3}, "--warmup-epochs"),
        ({"warmup_epochs": -1}, "--warmup-epochs"),
        ({"patience": -1}, "--patience"),
        ({"grad_clip": 0.0}, "--grad-clip"),
        ({"label_smoothing": 1.0}, "--label-smoothing"),
    ],
)
def test_a_recipe_value_out_of_range_is_refused_in_one_line_naming_its_flag(options, flag):
    with pytest.raises(ValueError, match=f"^{flag} ") as refused:
        TrainConfig(**options)
    assert "\n" not in str(refused.value)


def test_a_sweep_with_the_whole_recipe_records_it_in_the_row_the_checkpoint_and_sweep_yaml(
    tiny_dataset, tmp_path
):
    from genre.sweep.record import read_sweep_record
    from genre.train.checkpoints import load_checkpoint
    from tests.conftest import sweep

    table = sweep(tiny_dataset, tmp_path, ("cnn3",), epochs=3, batch_size=8, **RECIPE_OPTIONS)
    (row,) = table.to_dict("records")
    assert row["status"] == "completed", row["error"]
    # Patience 2 runs out after a 3-epoch trial's last epoch at the soonest: never early.
    assert pd.isna(row[STOPPED_EARLY]) and row["epochs"] == 3
    recorded = json.loads(row["config"])
    assert {name: recorded[name] for name in RECIPE_OPTIONS} == RECIPE_OPTIONS
    checkpoint = load_checkpoint(tmp_path / row["checkpoint"])["config"]
    assert {name: checkpoint[name] for name in RECIPE_OPTIONS} == RECIPE_OPTIONS
    saved = read_sweep_record(tmp_path).options  # OUT/sweep.yaml, as --resume reads it
    assert {name: saved[name] for name in RECIPE_OPTIONS} == RECIPE_OPTIONS
    history = pd.read_parquet(tmp_path / "history.parquet")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert all(math.isfinite(loss) for loss in history["train_loss"])


def test_the_schedule_steps_only_with_optimizer_steps_the_fp16_scaler_did_not_skip():
    trainer = training(amp="fp16", lr=LR, epochs=2, steps_per_epoch=STEPS, schedule="cosine", warmup_epochs=1)
    # A scale that overflows the first batches' gradients (halved after each), as fp16's first steps
    # often do on a GPU.
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    taken: list[int] = []
    trainer.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: taken.append(1))
    train_epoch(trainer, windows().shuffled(8, 0, 0))
    assert 0 < len(taken) < STEPS  # some steps skipped, some taken
    assert trainer.scheduler.last_epoch == len(taken)
