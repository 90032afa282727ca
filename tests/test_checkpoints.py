"""Loading checkpoints: only tensors and plain values, and errors that never advise running code."""

import io
import os

import pytest
import torch

from data_pipeline.errors import UserInputError
from genre.train.checkpoints import CHECKPOINT_FORMAT, load_checkpoint


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
