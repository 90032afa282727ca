"""Using a trained model: `genre predict` on any audio, `genre evaluate` on a test split."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from data_pipeline.shards import read_mels, read_split
from genre.cli import main
from genre.evaluate import evaluate
from genre.inference import segment_probabilities
from genre.predict import Predictor
from genre.run_folder import RunFolder
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


def test_evaluate_refuses_a_dataset_with_other_features(six_model_run, prepared):
    from data_pipeline.errors import UserInputError

    out, table = six_model_run
    with pytest.raises(UserInputError, match="not the ones the model was trained on"):
        evaluate(prepared.out, out / table.loc[0, "checkpoint"], out / "nowhere")
