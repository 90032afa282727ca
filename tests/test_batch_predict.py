"""Batch prediction on Ray Data: `genre predict SOURCE --out FILE` over folders, lists and prefixes."""

from pathlib import Path
from types import SimpleNamespace

import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from data_pipeline.errors import UserInputError
from genre.batch_predict import parts as parts_module
from genre.batch_predict.parts import PartsFolder
from genre.batch_predict.plan import plan_scorers
from genre.cli import main
from genre.cli.exit_codes import EXIT_INTERRUPTED, EXIT_USER_ERROR
from genre.predict import Predictor
from genre.run_folder import RunFolder
from tests.audio_factory import make_clip
from tests.s3_server import CREDENTIALS, bucket, s3_endpoint_fixture  # noqa: F401 (s3_endpoint)

# Batch norm and a GRU: the layers that could mix the windows of the files sharing a forward pass.
MODEL = "cnn4_gru"


def make_music(root: Path) -> SimpleNamespace:
    """Good files of each format below a folder (1.5 s windows: 2, 6, 3 and 2 of them), files that cannot
    be predicted, and files that are not the folder's audio."""
    good = [
        make_clip(root / "a.wav", 4.0, seed=1),
        make_clip(root / "sub" / "b.flac", 9.5, sample_rate=44100, channels=2, seed=2),
        make_clip(root / "sub" / "deeper" / "c.mp3", 5.0, seed=3),
        make_clip(root / "d.ogg", 3.2, format="OGG", subtype="VORBIS", seed=4),
    ]
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00")
    short = make_clip(root / "short.wav", 1.0)
    (root / "cover.mp3").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF artwork, not audio")
    (root / "notes.txt").write_text("liner notes")
    make_clip(root / ".trash" / "old.wav", 4.0)
    bad = {root / "corrupt.wav": "not decodable audio", short: "shorter than one 1.5 s window"}
    bad[root / "cover.mp3"] = "not decodable audio"
    return SimpleNamespace(root=root, good=good, bad=bad)


def predict(run: Path, *arguments: str) -> int:
    return main(["predict", *arguments, "--run", str(run), "--model", MODEL])


def rows_by_path(table) -> dict[str, dict]:
    return {row["path"]: row for row in table.to_pylist()}


@pytest.fixture(scope="module")
def predictor(six_model_run) -> Predictor:
    out, _ = six_model_run
    return Predictor(RunFolder(out).best_checkpoint(MODEL))


@pytest.fixture(scope="module")
def folder_run(ray_session, six_model_run, tmp_path_factory) -> SimpleNamespace:
    """A folder predicted into Parquet, once for the tests that read it."""
    run, _ = six_model_run
    music = make_music(tmp_path_factory.mktemp("music"))
    out = tmp_path_factory.mktemp("predicted") / "predictions.parquet"
    code = predict(run, str(music.root), "--out", str(out))
    return SimpleNamespace(music=music, out=out, code=code, rows=rows_by_path(pq.read_table(out)))


def assert_as_predict_file(row: dict, predictor: Predictor, path: Path) -> None:
    alone = predictor.predict_file(path)
    assert row["error"] == "" and row["model"] == MODEL
    assert row["segments"] == alone.segments
    assert row["genre"] == alone.top[0][0]
    # Rounded to 4 decimals each way: the same windows through the same model, batched otherwise.
    assert [t["genre"] for t in row["top"]] == [g for g, _ in alone.top]
    assert [t["probability"] for t in row["top"]] == pytest.approx([p for _, p in alone.top], abs=2e-4)


def test_every_audio_file_below_a_folder_gets_one_row_and_no_other_file_does(folder_run):
    music = folder_run.music
    assert folder_run.code == 0
    assert set(folder_run.rows) == {str(p) for p in [*music.good, *music.bad]}  # no notes.txt, no .trash/
    assert not folder_run.out.with_name("predictions.parquet.parts").exists()


def test_files_of_a_folder_get_the_genres_and_probabilities_that_predict_file_gives(folder_run, predictor):
    for path in folder_run.music.good:
        assert_as_predict_file(folder_run.rows[str(path)], predictor, path)


def test_a_file_that_cannot_be_predicted_is_a_row_with_its_error(folder_run):
    for path, error in folder_run.music.bad.items():
        row = folder_run.rows[str(path)]
        assert error in row["error"]
        assert row["genre"] is None and row["probability"] is None and row["top"] == []
        assert row["segments"] == 0 and row["model"] == MODEL


def test_a_list_file_names_files_relative_to_itself_each_once_into_csv(
    ray_session, six_model_run, folder_run, tmp_path
):
    run, _ = six_model_run
    music = folder_run.music
    listing = music.root / "sub" / "batch.txt"
    a, b = music.good[0], music.good[1]
    listing.write_text(f"# a comment\n../a.wav\n\n{b}\n{a}\nmissing.wav\n../notes.txt\n")
    out = tmp_path / "predictions.csv"
    assert predict(run, str(listing), "--out", str(out)) == 0
    table = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    rows = {row["path"]: row for row in table.to_pylist()}
    missing, notes = str(music.root / "sub" / "missing.wav"), str(music.root / "notes.txt")
    assert sorted(rows) == sorted([str(a), str(b), missing, notes])  # a.wav, listed twice, once
    assert table.column_names == [
        "path", "genre", "probability", "genre_2", "probability_2", "genre_3", "probability_3",
        "segments", "model", "error", "note",
    ]  # fmt: skip
    for path in (a, b):
        parquet_row = folder_run.rows[str(path)]
        flat = [rows[str(path)][f] for f in ("genre", "probability", "genre_2", "probability_2")]
        expected = [(t["genre"], t["probability"]) for t in parquet_row["top"][:2]]
        assert flat == [value for pair in expected for value in pair]
    assert "cannot read file" in rows[missing]["error"] and rows[missing]["genre"] is None
    assert "not decodable audio" in rows[notes]["error"]


def test_an_s3_prefix_is_listed_and_its_files_read_by_the_tasks_without_recording_credentials(
    ray_session, six_model_run, s3_endpoint, folder_run, predictor, tmp_path
):
    run, _ = six_model_run
    query = bucket(s3_endpoint, "genre-predict")
    prefix = f"s3://{CREDENTIALS}genre-predict/music?{query}"
    filesystem, root = pafs.FileSystem.from_uri(prefix)
    music = folder_run.music
    uploads = {"a.wav": music.good[0], "sub/b.flac": music.good[1], "corrupt.wav": music.root / "corrupt.wav"}
    uploads[".trash/a.wav"] = music.good[0]  # hidden: not listed
    for name, local in uploads.items():
        with filesystem.open_output_stream(f"{root}/{name}") as stream:
            stream.write(local.read_bytes())
    out = tmp_path / "predictions.parquet"
    assert predict(run, prefix, "--out", str(out)) == 0
    rows = rows_by_path(pq.read_table(out))
    public = f"s3://genre-predict/music/{{}}?{query}"
    assert sorted(rows) == sorted(public.format(name) for name in ("a.wav", "sub/b.flac", "corrupt.wav"))
    for name in ("a.wav", "sub/b.flac"):
        assert_as_predict_file(rows[public.format(name)], predictor, uploads[name])
    assert "not decodable audio" in rows[public.format("corrupt.wav")]["error"]


def test_an_interrupted_run_keeps_its_rows_and_the_rerun_predicts_only_the_rest(
    ray_session, six_model_run, folder_run, tmp_path, monkeypatch, capsys
):
    run, _ = six_model_run
    music = tmp_path / "music"
    clips = [make_clip(music / f"clip{i:02d}.wav", 1.6, seed=10 + i) for i in range(12)]
    out = tmp_path / "predictions.parquet"
    parts = PartsFolder(out)
    written = parts_module.PartWriter.flush

    def interrupt_after_first_part(writer):
        written(writer)
        if any(parts.folder.glob("part-*.parquet")):
            raise KeyboardInterrupt

    # One file per decoding task and one part per block: the first part lands before the last file.
    monkeypatch.setattr("genre.batch_predict.job.FILES_PER_DECODE_TASK", 1)
    monkeypatch.setattr(parts_module, "PART_ROWS", 1)
    monkeypatch.setattr(parts_module.PartWriter, "flush", interrupt_after_first_part)
    assert predict(run, str(music), "--out", str(out)) == EXIT_INTERRUPTED
    monkeypatch.undo()
    kept = rows_by_path(parts.read())
    assert 0 < len(kept) < len(clips) and not out.exists()
    # Another model must not finish these parts: refused, and the parts are left as they are.
    capsys.readouterr()
    assert main(["predict", str(music), "--run", str(run), "--model", "cnn3", "--out", str(out)]) == 2
    assert "holds an unfinished prediction by cnn4_gru" in capsys.readouterr().err
    gone = Path(next(iter(kept)))
    gone.unlink()  # predicted before the interruption, then deleted: its row comes from the parts
    assert predict(run, str(music), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"{len(clips) - 1} files with {MODEL}" in printed
    assert f"{len(clips) - len(kept)} predicted by this run" in printed
    rows = pq.read_table(out)["path"].to_pylist()
    assert sorted(rows) == sorted(str(c) for c in clips) and len(rows) == len(set(rows))
    assert not parts.folder.exists()


def test_the_exit_code_is_1_only_when_no_file_could_be_predicted(
    ray_session, six_model_run, tmp_path, capsys
):
    run, _ = six_model_run
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "empty.wav").write_bytes(b"")
    make_clip(tmp_path / "music" / "short.flac", 0.5)
    assert predict(run, str(tmp_path / "music"), "--out", str(tmp_path / "predictions.parquet")) == 1
    assert capsys.readouterr().err.strip().endswith("genre predict: error: no file could be predicted")
    assert pq.read_table(tmp_path / "predictions.parquet").num_rows == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{music}"], "names many files: they are predicted on Ray Data into a table; add --out"),
        (["{music}", "--out", "{music}/x.parquet", "--json"], "--json prints each file's line here"),
        (["{music}", "--out", "{music}/x.json"], "must end with .parquet or .csv"),
        (["{music}/nowhere", "--out", "{music}/x.csv"], "SOURCE '{music}/nowhere' does not exist"),
    ],
)
def test_what_the_batch_path_cannot_do_is_a_one_line_error(
    six_model_run, tmp_path, capsys, arguments, message
):
    run, _ = six_model_run
    make_clip(tmp_path / "a.wav", 2.0)
    filled = [a.format(music=tmp_path) for a in arguments]
    assert predict(run, *filled) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert message.format(music=tmp_path) in error and len(error.splitlines()) == 1


def test_the_actors_take_the_gpus_or_half_the_cpus_and_leave_cpus_to_decode():
    assert (plan := plan_scorers(cpus=2, gpus=0)).actors == 1 and plan.device == "cpu"
    assert plan_scorers(cpus=16, gpus=0).actors == 8
    assert plan_scorers(cpus=16, gpus=0, actors=15).actors == 15
    with pytest.raises(UserInputError, match="2 CPUs: 1 model actor"):
        plan_scorers(cpus=2, gpus=0, actors=2)
    on_gpus = plan_scorers(cpus=16, gpus=2)
    assert (on_gpus.actors, on_gpus.device, on_gpus.actor_gpus) == (2, "cuda", 1.0)
    assert on_gpus.window_batch > plan_scorers(cpus=16, gpus=0).window_batch
    shared = plan_scorers(cpus=8, gpus=1, actors=2)
    assert (shared.actors, shared.actor_gpus) == (2, 0.5)
    assert plan_scorers(cpus=16, gpus=2, device="cpu").device == "cpu"
    with pytest.raises(UserInputError, match="the Ray cluster has no GPU"):
        plan_scorers(cpus=16, gpus=0, device="cuda")
    with pytest.raises(UserInputError, match="each model actor gets the GPU that Ray gives it"):
        plan_scorers(cpus=16, gpus=2, device="cuda:1")
