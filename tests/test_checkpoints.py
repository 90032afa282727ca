"""Checkpoints: only tensors and plain values, errors that never advise running code, and a model rebuilt
from its own record."""

import io
import os

import pytest
import torch
from torch import nn

from data_pipeline.errors import UserInputError
from genre.config import ModelDefaults, TrainConfig, TrialConfig
from genre.models import create_model
from genre.train.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    model_from_checkpoint,
    save_best,
)


class _RunsCode:
    """Unpickling this would run a shell command that leaves `marker` behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _save(path, payload):
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def test_a_checkpoint_of_tensors_and_plain_values_loads(tmp_path):
    path = _save(tmp_path / "best.pt", {"format": CHECKPOINT_FORMAT, "state_dict": {"w": torch.ones(2)}})
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


def test_a_file_that_could_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    path = _save(tmp_path / "best.pt", {"format": CHECKPOINT_FORMAT, "payload": _RunsCode(marker)})
    with pytest.raises(UserInputError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert "holds objects other than tensors and plain values" in message
    assert "refused because loading it could run code" in message
    assert "weights_only" not in message
    assert "\n" not in message
    assert not marker.exists()


def test_a_truncated_checkpoint_is_one_line_without_torchs_advice(tmp_path):
    good = _save(tmp_path / "good.pt", {"format": CHECKPOINT_FORMAT, "state_dict": {"w": torch.ones(64)}})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(UserInputError, match="is not a readable genre checkpoint: it is truncated") as failed:
        load_checkpoint(tmp_path / "cut.pt")
    assert "\n" not in str(failed.value)
    assert "weights_only" not in str(failed.value)


def test_a_saved_checkpoint_rebuilds_its_trials_model_with_the_trials_dropout(tmp_path):
    config = TrialConfig.resolve(TrainConfig(dropout=0.3), "cnn3", ModelDefaults(lr=1e-4, dropout=0.5))
    model = create_model("cnn3", num_classes=2, dropout=config.dropout)
    labels = {"0": "blues", "1": "jazz"}
    location = save_best(
        str(tmp_path / "best.pt"), model, config=config, features={}, labels=labels, epoch=0, metrics={}
    )
    payload = load_checkpoint(location)
    rebuilt = model_from_checkpoint(payload)
    assert payload["version"] == CHECKPOINT_VERSION and payload["config"] == config.to_dict()
    assert {layer.p for layer in rebuilt.modules() if isinstance(layer, nn.Dropout)} == {0.3}
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())
