"""The sweep's live view: a trial that reports nothing for long is said to be waiting, once a while."""

from types import SimpleNamespace

from genre.reports import EPOCH, FINAL, TRAIN_LOSS
from genre.sweep import live_view
from genre.sweep.live_view import LiveView


def trial(status: str = "RUNNING") -> SimpleNamespace:
    return SimpleNamespace(trial_id="t1", status=status, config={"model": "cnn3"})


def test_a_trial_silent_for_long_is_said_to_wait_and_not_once_it_reports(capsys, monkeypatch):
    view, waiting = LiveView({}), trial()
    view.on_trial_start(0, [waiting], waiting)
    view.on_step_end(0, [waiting])
    assert "reported nothing" not in capsys.readouterr().out  # not yet long
    monkeypatch.setattr(live_view, "WAITING_NOTICE_S", 0.0)
    view.on_step_end(1, [waiting])
    assert "cnn3 (t1) has reported nothing for 0 min: its workers wait for a node" in capsys.readouterr().out
    view.on_trial_result(2, [waiting], waiting, {"epoch": 0, "train_loss": 1.0})
    view.on_step_end(3, [waiting])
    assert "reported nothing" not in capsys.readouterr().out


def test_a_trials_final_report_is_told_as_its_test_accuracy_and_an_epochs_as_its_progress(capsys):
    view, running = LiveView({"cnn3": 2}), trial()
    view.on_trial_result(0, [running], running, {EPOCH: 0, TRAIN_LOSS: 1.25, "val_segment_accuracy": 0.5})
    assert "cnn3 (t1) epoch 1/2: loss 1.250, val accuracy 0.500" in capsys.readouterr().out
    final = {FINAL: 1, EPOCH: 1, "test_segment_accuracy": 0.625, "test_track_accuracy": 0.75}
    view.on_trial_result(1, [running], running, final)
    assert "cnn3 (t1) finished: test accuracy 0.625 (segment), 0.750 (track)" in capsys.readouterr().out
