"""Using a trained model: `genre predict` on any audio, `genre evaluate` on a test split."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from data_pipeline.errors import UserInputError
from data_pipeline.shards import read_mels, read_split
from genre.cli import main
from genre.evaluate import evaluate
from genre.predict import Predictor
from genre.run_folder import RunFolder
from genre.train.checkpoints import read_checkpoint
from genre.train.forward import resolve_device, segment_probabilities, window_batch
from tests.audio_factory import make_clip


def test_predicting_a_prepared_test_clip_gives_the_sweeps_probabilities(
    six_model_run, tiny_dataset, tiny_audio
):
    out, _table = six_model_run
    predictor = Predictor(RunFolder(out).best_checkpoint("cnn4"))
    test = read_split(tiny_dataset, "test")
    track_id = test.column("track_id")[0].as_py()
    rows = [i for i, t in enumerate(test.column("track_id").to_pylist()) if t == track_id]
    from_shards = segment_probabilities(predictor.loaded.model, [read_mels(test)[rows]], torch.device("cpu"))
    from_audio = predictor.file_probabilities(tiny_audio / track_id)
    # The same float16 features through the same model: equal up to float rounding of the batch.
    torch.testing.assert_close(from_audio, from_shards, atol=1e-6, rtol=1e-6)


def test_the_best_model_of_the_run_is_the_default(six_model_run):
    out, table = six_model_run
    completed = table[table["status"] == "completed"]
    best = completed.sort_values(["val_segment_accuracy", "val_track_accuracy"], ascending=False).iloc[0]
    assert RunFolder(out).best_checkpoint() == str(out / best["checkpoint"])


def test_a_copied_run_folder_uses_its_own_checkpoints(six_model_run, tmp_path):
    out, table = six_model_run
    # Stored relative to the run folder, so a copy (or a moved folder) is self-contained.
    assert all(not Path(c).is_absolute() for c in table["checkpoint"])
    copy = shutil.copytree(out, tmp_path / "copied-run", ignore=shutil.ignore_patterns("tune", "train"))
    checkpoint = RunFolder(copy).best_checkpoint("cnn3")
    assert Path(checkpoint).is_relative_to(copy)
    predictor = Predictor(checkpoint)
    assert predictor.model_name == "cnn3"


def test_a_checkpoints_bytes_load_the_model_its_path_does_anywhere_the_path_is_not(six_model_run, tmp_path):
    out, _ = six_model_run
    path = RunFolder(out).best_checkpoint("cnn3")
    read = read_checkpoint(path)
    shutil.move(path, tmp_path / "moved.pt")  # what a node without the run folder sees
    try:
        from_bytes = Predictor(read)
        assert from_bytes.checkpoint == path and from_bytes.model_name == "cnn3"
        clip = make_clip(tmp_path / "clip.wav", 4.0)
        torch.testing.assert_close(
            from_bytes.file_probabilities(clip), Predictor(tmp_path / "moved.pt").file_probabilities(clip)
        )
    finally:
        shutil.move(tmp_path / "moved.pt", path)


def test_a_long_file_and_a_stereo_44k_flac_and_mp3_are_predicted(six_model_run, tmp_path):
    out, _ = six_model_run
    predictor = Predictor(RunFolder(out).best_checkpoint("cnn3"))
    long = predictor.predict_file(make_clip(tmp_path / "long.wav", 120.0))
    assert long.error == "" and long.segments == 80  # 1.5 s windows of the tiny dataset
    for name in ("stereo.flac", "stereo.mp3"):
        prediction = predictor.predict_file(make_clip(tmp_path / name, 5.0, sample_rate=44100, channels=2))
        assert prediction.error == "" and prediction.segments >= 3
        assert len(prediction.top) == 3 and sum(p for _, p in prediction.top) <= 1.0 + 1e-3  # 4 decimals


def test_a_corrupt_file_among_good_ones_gets_an_error_line_and_the_rest_are_predicted(
    six_model_run, tmp_path, capsys
):
    out, _ = six_model_run
    good = make_clip(tmp_path / "good.wav", 4.0)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00")
    short = make_clip(tmp_path / "short.ogg", 1.0, format="OGG", subtype="VORBIS")
    assert main(["predict", str(good), str(tmp_path / "corrupt.wav"), str(short), "--run", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{good}: genre" in captured.out
    assert "corrupt.wav: error: not decodable audio" in captured.err
    assert "short.ogg: error: shorter than one 1.5 s window" in captured.err


def test_predict_exits_non_zero_only_when_nothing_could_be_predicted(six_model_run, tmp_path):
    out, _ = six_model_run
    (tmp_path / "empty.wav").write_bytes(b"")
    assert main(["predict", str(tmp_path / "empty.wav"), "--run", str(out)]) == 1


def test_json_output_has_one_object_per_file_with_the_top_three(six_model_run, tmp_path, capsys):
    out, _ = six_model_run
    good = make_clip(tmp_path / "good.wav", 4.0)
    (tmp_path / "bad.wav").write_text("nope")
    main(["predict", str(good), str(tmp_path / "bad.wav"), "--run", str(out), "--model", "cnn4", "--json"])
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["path"] for o in objects] == [str(good), str(tmp_path / "bad.wav")]
    assert set(objects[0]) == {"path", "genre", "probability", "top", "segments", "model"}
    assert objects[0]["model"] == "cnn4" and len(objects[0]["top"]) == 3
    assert objects[0]["genre"] == objects[0]["top"][0]["genre"]
    assert "error" in objects[1]


def test_files_batched_together_get_the_probabilities_each_gets_alone_in_their_order(six_model_run, tmp_path):
    out, _ = six_model_run
    # 1.5 s windows: 2, 6, none, none, 1 and 5 windows; batches of 4 span files and split them.
    files = [
        make_clip(tmp_path / "two.wav", 3.2, seed=1),
        make_clip(tmp_path / "six.flac", 9.5, sample_rate=44100, channels=2, seed=2),
        make_clip(tmp_path / "short.wav", 1.0),
        tmp_path / "undecodable.wav",
        make_clip(tmp_path / "one.ogg", 2.0, format="OGG", subtype="VORBIS", seed=3),
        make_clip(tmp_path / "five.wav", 7.6, seed=4),
    ]
    files[3].write_bytes(b"RIFF\x00\x00")
    # cnn4_gru: batch norm and a GRU, the layers that could mix the windows of a batch.
    predictor = Predictor(RunFolder(out).best_checkpoint("cnn4_gru"), "cpu", batch_size=4)
    predictions = list(predictor.predict_files(files))
    assert [p.path for p in predictions] == [str(f) for f in files]
    assert [p.segments for p in predictions] == [2, 6, 0, 0, 1, 5]
    assert "shorter than one 1.5 s window" in predictions[2].error
    assert "not decodable audio" in predictions[3].error
    for path, prediction in zip(files, predictions, strict=True):
        if not prediction.error:
            alone = predictor.file_probabilities(path).mean(dim=0)
            torch.testing.assert_close(prediction.probabilities, alone, atol=1e-5, rtol=1e-5)


def test_auto_is_the_gpu_where_torch_sees_one_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_a_gpu_that_is_not_there_or_an_unknown_device_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserInputError, match=r"torch sees no CUDA GPU here.*use --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UserInputError, match="torch sees 2 GPU"):
        resolve_device("cuda:2")
    with pytest.raises(UserInputError, match="device must be auto, cpu, cuda or cuda:N, not 'gpu'"):
        resolve_device("gpu")


def test_the_batch_size_defaults_by_device_and_must_be_positive():
    assert window_batch(torch.device("cuda")) > window_batch(torch.device("cpu"))
    assert window_batch(torch.device("cpu"), 7) == 7
    with pytest.raises(UserInputError, match="at least 1"):
        window_batch(torch.device("cpu"), 0)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_device_cuda_without_a_gpu_is_a_one_line_error(
    six_model_run, tiny_dataset, tmp_path, capsys, monkeypatch, command
):
    out, _ = six_model_run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    target = make_clip(tmp_path / "good.wav", 4.0) if command == "predict" else tiny_dataset
    assert main([command, str(target), "--run", str(out), "--device", "cuda"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"genre {command}: error: device cuda was asked for, but torch sees no CUDA GPU")
    assert "Traceback" not in error and len(error.splitlines()) == 1


def test_predict_and_evaluate_run_on_the_cpu_when_told(six_model_run, tiny_dataset, tmp_path, capsys):
    out, _ = six_model_run
    good = make_clip(tmp_path / "good.wav", 4.0)
    assert main(["predict", str(good), "--run", str(out), "--device", "cpu", "--batch-size", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].endswith(" on cpu") and f"{good}: genre" in printed
    report = tmp_path / "evaluation"
    assert (
        main(["evaluate", str(tiny_dataset), "--run", str(out), "--device", "cpu", "--out", str(report)]) == 0
    )
    assert json.loads((report / "metrics.json").read_text())["device"] == "cpu"


def test_evaluate_matches_the_sweeps_test_scores_and_writes_a_confusion_matrix(
    six_model_run, tiny_dataset, tmp_path
):
    _out, table = six_model_run
    row = table.set_index("model").loc["cnn4_gru"]
    result = evaluate(tiny_dataset, _out / row["checkpoint"], tmp_path)
    for name, value in result.scores.items():
        assert value == pytest.approx(row[name], abs=1e-6)
    assert result.confusion["track"].to_numpy().sum() == 3  # one test track per genre
    assert result.confusion["segment"].to_numpy().sum() == 6
    assert list(result.per_genre["genre"]) == ["genre0", "genre1", "genre2"]
    assert result.files["confusion_png"].stat().st_size > 1000


def test_evaluate_scores_do_not_depend_on_the_batch_size(six_model_run, tiny_dataset, tmp_path):
    out, table = six_model_run
    checkpoint = out / table.set_index("model").loc["cnn4_gru", "checkpoint"]
    whole = evaluate(tiny_dataset, checkpoint, tmp_path / "whole").scores
    one_by_one = evaluate(tiny_dataset, checkpoint, tmp_path / "one", batch_size=1).scores
    assert one_by_one == pytest.approx(whole, abs=1e-6)


def test_evaluate_refuses_a_dataset_with_other_features(six_model_run, prepared):
    out, table = six_model_run
    with pytest.raises(UserInputError, match="not the ones the model was trained on"):
        evaluate(prepared.out, out / table.loc[0, "checkpoint"], out / "nowhere")
