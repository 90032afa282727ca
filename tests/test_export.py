"""`genre export`: a sweep's model as a TorchScript or ONNX file that a program without genre loads, and
that gives `genre predict`'s probabilities for the same windows of audio."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.audio import load_mono
from genre import export as export_module
from genre.cli import main
from genre.predict import Predictor
from genre.run_folder import RunFolder
from tests.audio_factory import make_clip
from tests.conftest import SIX

EXPORTS = [(model, format) for model in SIX for format in ("torchscript", "onnx")]
# Run by a fresh interpreter: loads the file with torch alone (or ONNX Runtime alone), as a program without
# genre does, and gives each window's probabilities run one at a time and all as one batch.
LOAD_WITHOUT_GENRE = """
import json, sys
import numpy as np
folder, windows_file, out_file = sys.argv[1:]
description = json.load(open(f"{folder}/genre.json"))
path, input_name = f"{folder}/{description['file']}", description["input"]["name"]
windows = np.load(windows_file)
if path.endswith(".onnx"):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    run = lambda batch: session.run([description["output"]["name"]], {input_name: batch})[0]
else:
    import torch
    model = torch.jit.load(path)
    run = lambda batch: model(torch.from_numpy(batch)).detach().numpy()
one_at_a_time = np.concatenate([run(windows[i : i + 1]) for i in range(len(windows))])
all_at_once = run(windows)
builders = {"genre", "data_pipeline", "torchaudio", "timm"}
loaded = sorted({name.split(".")[0] for name in sys.modules} & builders)
np.savez(out_file, one_at_a_time=one_at_a_time, all_at_once=all_at_once, loaded=np.array(loaded, dtype=str))
"""


@pytest.fixture(scope="module", params=EXPORTS, ids=[f"{m}-{f}" for m, f in EXPORTS])
def exported(request, six_model_run, tmp_path_factory) -> tuple[str, str, Path]:
    """Each of the six models in each format, exported once by `genre export`."""
    model, format = request.param
    out, _ = six_model_run
    dest = tmp_path_factory.mktemp(f"export-{model}-{format}") / "exported"
    assert main(["export", "--run", str(out), "--model", model, "--format", format, str(dest)]) == 0
    return model, format, dest


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """6.2 s: four 1.5 s windows of the tiny dataset's features, and a tail that no window takes."""
    return make_clip(tmp_path_factory.mktemp("export-clip") / "clip.wav", 6.2, seed=7)


def windows_of(path: Path, sample_rate: int, window_samples: int) -> np.ndarray:
    """The windows LogMelExtractor cuts: back to back from the start, a shorter tail dropped."""
    waveform, _, _ = load_mono(path, sample_rate)
    count = waveform.numel() // window_samples
    return waveform[: count * window_samples].reshape(count, window_samples).numpy()


def run_without_genre(dest: Path, windows: np.ndarray, scratch: Path) -> dict[str, np.ndarray]:
    np.save(scratch / "windows.npy", windows)
    command = [sys.executable, "-c", LOAD_WITHOUT_GENRE, str(dest), str(scratch / "windows.npy")]
    subprocess.run([*command, str(scratch / "out.npz")], check=True, cwd=scratch, timeout=300)
    return dict(np.load(scratch / "out.npz"))


def test_an_exported_file_loaded_without_genre_gives_predicts_probabilities_for_each_window(
    exported, six_model_run, clip, tmp_path
):
    model, _format, dest = exported
    description = json.loads((dest / "genre.json").read_text())
    predictor = Predictor(RunFolder(six_model_run[0]).best_checkpoint(model), "cpu")
    # The exported graph runs float32: compare with predict's float32 path, wherever this CPU runs bf16.
    predictor.loaded.amp = "off"
    expected = predictor.file_probabilities(clip).numpy()
    windows = windows_of(clip, description["sample_rate"], description["window_samples"])
    assert len(windows) == len(expected) == 4
    result = run_without_genre(dest, windows, tmp_path)
    assert list(result["loaded"]) == []  # neither genre nor the libraries it builds models with
    for batch in ("one_at_a_time", "all_at_once"):
        np.testing.assert_allclose(result[batch], expected, rtol=0, atol=export_module.TOLERANCE)
    assert description["tolerance"] == export_module.TOLERANCE


def test_genre_json_says_how_to_feed_the_file_and_which_trial_it_came_from(exported, six_model_run):
    model, format, dest = exported
    out, table = six_model_run
    checkpoint = RunFolder(out).best_checkpoint(model)
    row = table[table["checkpoint"] == str(Path(checkpoint).relative_to(out))].iloc[0]
    predictor = Predictor(checkpoint, "cpu")
    description = json.loads((dest / "genre.json").read_text())
    assert sorted(p.name for p in dest.iterdir()) == sorted([description["file"], "genre.json"])
    assert description["file"] == {"torchscript": "model.pt", "onnx": "model.onnx"}[format]
    assert description["model"] == model and description["format"] == format
    assert description["checkpoint"] == str(Path(checkpoint).resolve())
    assert description["labels"] == predictor.loaded.labels
    features = predictor.features
    assert description["sample_rate"] == features.sample_rate == 22050
    assert description["window_samples"] == features.segment_samples == 33075
    assert description["window_seconds"] == 1.5
    assert description["input"]["shape"] == ["batch", 33075]
    assert description["output"]["shape"] == ["batch", len(predictor.loaded.labels)]
    assert description["genre_version"] == version("genre-ray")
    assert description["trial"]["trial_id"] == row["trial_id"]
    for split in ("val", "test"):
        for score in (f"{split}_segment_accuracy", f"{split}_track_accuracy"):
            assert description["scores"][score] == pytest.approx(float(row[score]))
    # Written whole: no temporary folder is left beside DEST.
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_a_dest_that_is_not_empty_is_refused_in_one_line_and_left_alone(six_model_run, tmp_path, capsys):
    out, _ = six_model_run
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    assert main(["export", "--run", str(out), "--format", "torchscript", str(dest)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("genre export: error: ") and "not empty" in error and error.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]


def test_an_unknown_model_is_refused_in_one_line_and_nothing_is_written(six_model_run, tmp_path, capsys):
    out, _ = six_model_run
    dest = tmp_path / "dest"
    assert main(["export", "--run", str(out), "--model", "resnet", "--format", "onnx", str(dest)]) == 2
    error = capsys.readouterr().err
    assert "no completed trial of 'resnet'" in error and error.count("\n") == 1
    assert not dest.exists()


def test_onnx_without_its_packages_is_refused_with_the_install_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is absent
    assert main(["export", "--run", str(tmp_path), "--format", "onnx", str(tmp_path / "dest")]) == 2
    error = capsys.readouterr().err
    assert "onnxruntime" in error and "pip install 'genre-ray[onnx]'" in error and error.count("\n") == 1


def test_an_empty_dest_folder_is_filled(six_model_run, tmp_path):
    out, _ = six_model_run
    dest = tmp_path / "dest"
    dest.mkdir()
    assert main(["export", "--run", str(out), "--model", "cnn3", "--format", "torchscript", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["genre.json", "model.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]


def test_a_file_that_fails_its_check_is_not_written(six_model_run, tmp_path, capsys, monkeypatch):
    out, _ = six_model_run
    # As if the file came out wrong: what it gives, loaded back, is off by more than the tolerance.
    loaded_back = export_module.run_exported
    monkeypatch.setattr(export_module, "run_exported", lambda path, batch: loaded_back(path, batch) + 0.01)
    dest = tmp_path / "dest"
    assert main(["export", "--run", str(out), "--model", "cnn3", "--format", "torchscript", str(dest)]) == 1
    assert "differs from the checkpoint's model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither DEST nor its temporary folder


def test_the_command_offers_every_format_the_library_writes():
    from genre.cli import export as export_command

    assert export_command.FORMATS == export_module.FORMATS
