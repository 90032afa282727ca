"""The training loop without Ray: epochs, the best epoch, restarts, faults and scoring, in seconds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from genre.config import BEST_BY
from genre.reports import (
    BEST_EPOCH,
    EPOCH,
    EPOCH_TIME_S,
    REPORT_S,
    TRAIN_LOSS,
    TRAIN_RUNNING_ACCURACY,
    TRAIN_S,
    VALIDATE_S,
    metric_columns,
)
from genre.train.amp import grad_scaler
from genre.train.faults import Fault, InjectedFailure
from genre.train.fit import Training, TrialState, fit, score, seed_everything
from genre.train.recipe import make_optimizer, make_scheduler
from genre.train.windows import Windows

CLASSES, MELS, FRAMES = 3, 4, 5


def windows(count: int = 60, seed: int = 0) -> Windows:
    """Separable toy windows: the class is written into the first mel band."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % CLASSES
    mels = torch.randn(count, MELS, FRAMES, generator=generator) * 0.3
    mels[:, 0, :] += labels[:, None].float() * 2 - 2
    tracks = tuple(f"t{i // 2}" for i in range(count))  # two windows per track, same label
    return Windows(mels.half(), labels, tracks)


def training(seed: int = 0, dropout: float = 0.0, amp: str = "off", **recipe) -> Training:
    """A toy model and its Training; `recipe`: make_optimizer's, make_scheduler's and Training's
    settings (optimizer, weight_decay, lr, schedule, epochs, steps_per_epoch, warmup_epochs, grad_clip,
    label_smoothing)."""
    seed_everything(seed)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(MELS * FRAMES, CLASSES))
    device = torch.device("cpu")
    optimizer = make_optimizer(
        model.parameters(),
        recipe.pop("optimizer", "adam"),
        recipe.pop("lr", 0.05),
        recipe.pop("weight_decay", 0.0),
    )
    scheduling = ("schedule", "epochs", "steps_per_epoch", "warmup_epochs")
    schedule = {name: recipe.pop(name) for name in scheduling if name in recipe}
    scheduler = make_scheduler(optimizer, **schedule) if schedule else None
    return Training(
        model, optimizer, grad_scaler(amp, device), device, amp, CLASSES, scheduler=scheduler, **recipe
    )


def run(
    trainer: Training,
    data: Windows,
    epochs: int,
    state: TrialState | None = None,
    best: dict | None = None,
    seed: int = 0,
    reports: list | None = None,
    validate=None,
) -> tuple[TrialState, dict]:
    state = state or TrialState()
    reports = [] if reports is None else reports

    def report(metrics, state, best_weights):
        reports.append((dict(metrics), copy.deepcopy(state), copy.deepcopy(best_weights)))

    best = fit(
        trainer,
        state,
        epochs=epochs,
        batches=lambda epoch: data.shuffled(8, seed, epoch),
        validate=validate or (lambda model: score(model, data, "val", trainer.device, trainer.amp)),
        report=report,
        best_weights=best,
    )
    return state, best


def test_training_learns_and_every_epoch_is_reported_once_with_the_state_advanced():
    reports: list = []
    state, _ = run(training(), windows(), epochs=4, reports=reports)
    assert [metrics["epoch"] for metrics, _, _ in reports] == [0, 1, 2, 3]
    assert [saved.epoch for _, saved, _ in reports] == [0, 1, 2, 3]
    assert [row["epoch"] for row in state.history] == [0, 1, 2, 3]
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]
    assert state.best_val > 0.9
    assert state.samples == 4 * 60 and state.train_seconds > 0


def test_an_epochs_report_carries_the_named_report_keys_and_its_record_what_reporting_cost():
    reports: list = []
    state, _ = run(training(), windows(), epochs=1, reports=reports)
    epoch_keys = {EPOCH, TRAIN_LOSS, TRAIN_RUNNING_ACCURACY, BEST_EPOCH, EPOCH_TIME_S, TRAIN_S, VALIDATE_S}
    assert set(reports[0][0]) == epoch_keys | set(metric_columns(("val",)))
    assert set(state.history[0]) == set(reports[0][0]) | {REPORT_S}


def test_the_best_epochs_weights_are_kept_when_later_epochs_score_worse():
    trainer = training()
    data = windows()
    verdicts = iter([0.5, 0.9, 0.4])  # val accuracy by epoch: epoch 1 is the best
    weights_after: list = []

    def validate(model):
        weights_after.append(copy.deepcopy(model.state_dict()))
        return {BEST_BY: next(verdicts)}

    state, best = run(trainer, data, epochs=3, validate=validate)
    assert state.best_epoch == 1 and state.best_metrics[BEST_BY] == 0.9
    assert all(torch.equal(best[name], weights_after[1][name]) for name in best)
    assert not torch.equal(best["2.weight"], trainer.plain_model.state_dict()["2.weight"])
    assert [row["best_epoch"] for row in state.history] == [0, 1, 1]


def test_a_restart_from_an_epochs_report_ends_exactly_where_an_uninterrupted_run_ends():
    data = windows()
    whole, _ = run(training(), data, epochs=4)
    uninterrupted = training()
    run(uninterrupted, data, epochs=4)

    reports: list = []
    first = training()
    run(first, data, epochs=2, reports=reports)
    checkpoint = copy.deepcopy(first.state_dict())  # what the epoch-1 report carried
    _, saved_state, saved_best = reports[-1]

    resumed = training(seed=99)  # a fresh worker: other initial weights, until it loads the checkpoint
    resumed.load_state_dict(checkpoint)
    state, _ = run(
        resumed, data, epochs=4, state=TrialState.from_dict(saved_state.to_dict()), best=saved_best
    )
    assert [row["epoch"] for row in state.history] == [0, 1, 2, 3]
    assert [row["train_loss"] for row in state.history] == [row["train_loss"] for row in whole.history]
    for name, tensor in uninterrupted.plain_model.state_dict().items():
        assert torch.equal(tensor, resumed.plain_model.state_dict()[name])


def test_the_same_seed_gives_the_same_epochs_and_another_seed_others():
    data = windows()
    first, _ = run(training(seed=1), data, epochs=2, seed=1)
    again, _ = run(training(seed=1), data, epochs=2, seed=1)
    other, _ = run(training(seed=2), data, epochs=2, seed=2)
    losses = [[row["train_loss"] for row in state.history] for state in (first, again, other)]
    assert losses[0] == losses[1] != losses[2]


def test_a_worker_that_does_not_score_keeps_its_last_weights_and_reports_each_epoch():
    trainer = training()
    reports: list = []
    state, best = run(trainer, windows(), epochs=2, reports=reports, validate=lambda model: {})
    assert [metrics["best_epoch"] for metrics, _, _ in reports] == [0, 1]
    assert BEST_BY not in reports[0][0] and state.best_epoch == -1
    assert all(torch.equal(best[k], v) for k, v in trainer.plain_model.state_dict().items())


def test_bf16_autocast_trains_on_the_cpu():
    state, _ = run(training(amp="bf16"), windows(), epochs=2)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in state.history)


def test_an_epoch_without_batches_reports_no_loss_and_does_not_fail():
    empty = Windows(torch.empty(0, MELS, FRAMES).half(), torch.empty(0).long())
    state, _ = run(training(), empty, epochs=1, validate=lambda model: {})
    assert state.samples == 0 and state.history[0]["train_loss"] != state.history[0]["train_loss"]


def test_a_fault_at_a_step_stops_the_epoch_before_that_batch():
    data = windows()  # 60 windows: 8 batches of 8 per epoch
    trainer = training()
    steps: list[int] = []
    trainer.model.register_forward_hook(lambda module, inputs, output: steps.append(1))
    reports: list = []
    with pytest.raises(InjectedFailure, match="epoch 1, step 2"):
        fit(
            trainer,
            TrialState(),
            epochs=3,
            batches=Fault.parse("raise@1:2").around_batches(lambda epoch: data.shuffled(8, 0, epoch), "toy"),
            validate=lambda model: {},
            report=lambda metrics, state, best: reports.append(metrics["epoch"]),
        )
    assert reports == [0] and len(steps) == 8 + 2


def test_a_fault_at_end_comes_after_validation_and_before_the_report():
    validated: list[int] = []
    reports: list[int] = []

    def validate(model):
        validated.append(len(validated))
        return {}

    with pytest.raises(InjectedFailure, match="epoch 1, step -1"):
        fit(
            training(),
            TrialState(),
            epochs=3,
            batches=lambda epoch: windows().shuffled(8, 0, epoch),
            validate=validate,
            report=Fault.parse("raise@1:end").before(
                lambda metrics, state, best: reports.append(metrics["epoch"]), "toy"
            ),
        )
    assert validated == [0, 1] and reports == [0]


def test_scoring_runs_in_eval_mode_and_gives_segment_and_track_scores():
    trainer = training(dropout=0.5)
    data = windows()
    first = score(trainer.model, data, "val", trainer.device, "off")
    assert first == score(trainer.model, data, "val", trainer.device, "off")  # dropout off: repeatable
    assert trainer.model.training  # and back to training mode afterwards
    assert set(first) == {
        f"val_{level}_{m}" for level in ("segment", "track") for m in ("accuracy", "precision", "recall")
    }
    assert score(trainer.model, Windows(data.mels[:0], data.labels[:0]), "val", trainer.device, "off") == {}


def test_rank_shares_are_disjoint_equal_and_cover_all_but_the_remainder():
    data = windows(count=11)
    shares = [data.rank_share(rank, 3) for rank in range(3)]
    assert [len(share) for share in shares] == [3, 3, 3]
    labels = sorted(torch.cat([share.mels[:, 0, 0].float() for share in shares]).tolist())
    assert labels == sorted(data.mels[:9, 0, 0].float().tolist())
    assert data.rank_share(0, 1).mels.data_ptr() == data.mels.data_ptr()  # one worker: no copy


def test_the_training_loop_imports_no_ray():
    """Read from the source, not imported: no module the loop imports, within genre, imports Ray."""
    import ast
    import importlib.util

    seen, pending = set(), ["genre.train.fit"]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for imported in names:
                assert imported.split(".")[0] != "ray", f"{name} imports {imported}"
                if imported.split(".")[0] in ("genre", "data_pipeline"):
                    pending.append(imported)
    assert {"genre.train.fit", "genre.train.windows", "genre.train.metrics", "genre.train.forward"} <= seen


def test_augmentation_changes_the_training_batches_only_and_repeats_with_the_seed():
    from genre.train.augment import Augment, Augmenter

    data = windows()
    # Masks of up to 2 of the 4 bands and 3 of the 5 frames, and mixup: every augmented batch differs.
    augment = Augment(freq_mask=2, time_mask=3, masks=1, mixup_alpha=0.4)
    seen: dict[str, list] = {"plain": [], "augmented": [], "again": []}
    for name, augmenter in (
        ("plain", None),
        ("augmented", Augmenter(augment, CLASSES, seed=7)),
        ("again", Augmenter(augment, CLASSES, seed=7)),
    ):
        trainer = training(seed=1)
        metrics = fit(
            trainer,
            TrialState(),
            epochs=2,
            batches=lambda epoch: data.shuffled(8, 0, epoch),
            validate=lambda model, trainer=trainer: score(model, data, "val", trainer.device, "off"),
            report=lambda metrics, state, best, name=name: seen[name].append(metrics["train_loss"]),
            augmenter=augmenter,
        )
        seen[name].append(metrics)
    assert seen["augmented"][:2] != seen["plain"][:2]  # the training batches were augmented
    assert seen["augmented"][:2] == seen["again"][:2]  # the same seed, the same augmented batches
    assert all(torch.equal(seen["augmented"][2][k], seen["again"][2][k]) for k in seen["augmented"][2])
