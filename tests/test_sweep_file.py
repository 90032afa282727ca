"""`genre sweep --config FILE`: options from YAML under the command line's; OUT/sweep.yaml; MLflow."""

from __future__ import annotations

import pytest
import yaml

from data_pipeline.errors import UserInputError
from genre.config import TrainConfig
from genre.sweep.options import SweepConfig
from genre.sweep.options_file import read_options_file
from genre.sweep.record import SWEEP_FILE, SweepRecord, read_sweep_record, resume_changes, write_sweep_record
from tests.test_refusals import one_line_error


def write_yaml(path, text: str):
    path.write_text(text)
    return path


def test_keys_as_flags_or_names_nulls_and_genres_own_record_keys(tmp_path):
    path = write_yaml(
        tmp_path / "sweep.yaml",
        "batch-size: 32\nweights: /w\nlr: null\nmodels: [cnn3]\nresumed: []\nmanifest_sha256: abc\n",
    )
    assert read_options_file(path) == {"batch_size": 32, "weights_dir": "/w", "models": ["cnn3"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("epoch: 3\n", "unknown option(s) epoch; known: data, out"),
        ("- epochs\n", "must be a mapping of option: value, not a list"),
        ("epochs: [1\n", "is not YAML"),
        ("epochs: ten\n", "argument --epochs: invalid int value: 'ten'"),
        ("scheduler: hyperband\n", "argument --scheduler: invalid choice: 'hyperband'"),
        ("search: grid\n", "argument --search: invalid choice: 'grid'"),
        ("search:\n  lr: {loguniform: [0, 1.0e-2]}\n", "search: lr: loguniform needs low > 0, not 0.0"),
        ("search: {lr: {choice: [0.1]}}\nsearch_space: {dropout: {choice: [0.1]}}\n", "under both"),
        ("per_model: {cnn5: {epochs: 2}}\n", "per_model: unknown model 'cnn5'; known: cnn3"),
        ("per_model: {vgg11: {epoch: 2}}\n", "per_model: vgg11: epoch: unknown setting; settable: epochs"),
        ("per_model: {vgg11: {seed: 2}}\n", "per_model: vgg11: seed cannot be set for one model"),
        ("per_model: {vgg11: {epochs: two}}\n", "per_model: vgg11: epochs: 'two' is not a value epochs"),
        ("per_model: {vgg11: 2}\n", "per_model: vgg11: a mapping of setting: value"),
    ],
)
def test_a_bad_file_is_refused_in_one_line_naming_it(capsys, tmp_path, text, expected):
    path = write_yaml(tmp_path / "bad.yaml", text)
    error = one_line_error(capsys, ["sweep", "--config", str(path), "DATA", str(tmp_path / "out")])
    assert f"--config {str(path)!r}" in error and expected in error
    assert not (tmp_path / "out").exists()


def test_a_missing_file_and_missing_data_are_refused(capsys, tmp_path):
    error = one_line_error(capsys, ["sweep", "--config", str(tmp_path / "none.yaml"), str(tmp_path / "o")])
    assert "cannot be read: No such file or directory" in error
    path = write_yaml(tmp_path / "epochs.yaml", "epochs: 2\n")
    error = one_line_error(capsys, ["sweep", "--config", str(path), str(tmp_path / "o")])
    assert "give DATA and OUT" in error


def test_per_model_settings_replace_the_sweeps_for_that_model_only(tmp_path):
    path = write_yaml(
        tmp_path / "sweep.yaml",
        "epochs: 8\nlr: 3.0e-3\nmodels: [cnn4, vgg11]\n"
        "per_model:\n  vgg11: {epochs: 1, lr: 1.0e-4, amp: off}\n",
    )
    options = read_options_file(path)
    config = SweepConfig.from_options(options, data="DATA", out=tmp_path / "out")
    assert config.train_for("cnn4") == config.train  # epochs 8, lr 3e-3
    vgg = config.train_for("vgg11")
    assert (vgg.epochs, vgg.lr, vgg.amp, vgg.batch_size) == (1, 1e-4, "off", config.train.batch_size)
    assert config.longest_epochs() == 8
    # What sweep.yaml records, and a resume with other per-model settings is a change it names.
    assert config.options()["per_model"] == {"vgg11": {"epochs": 1, "lr": 1e-4, "amp": "off"}}


def test_per_model_settings_the_sweep_cannot_run_are_refused(tmp_path):
    config = SweepConfig(data="d", out=tmp_path, models=("cnn4",), per_model={"vgg11": {"epochs": 1}})
    with pytest.raises(
        UserInputError, match=r"per_model: cnn4: --warmup-epochs must be .* than --epochs .2."
    ):
        SweepConfig(
            data="d", out=tmp_path, train=TrainConfig(epochs=2), per_model={"cnn4": {"warmup_epochs": 3}}
        )
    with pytest.raises(UserInputError, match=r"per_model: vgg11 is not among the sweep's models \(cnn4\)"):
        config.check({"split": {"protocol": "track"}, "counts": {}, "features": {}})


def test_yaml_booleans_mean_the_words_the_flags_take(capsys, tmp_path):
    # YAML reads `pretrained: no` and `amp: off` as false: they mean --pretrained no and --amp off.
    path = write_yaml(tmp_path / "pretrained.yaml", "pretrained: no\namp: off\nepochs: 0\n")
    error = one_line_error(capsys, ["sweep", "--config", str(path), str(tmp_path / "d"), str(tmp_path / "o")])
    assert "epochs must be at least 1" in error


def test_a_sweep_from_a_file_runs_with_the_command_lines_overrides_and_logs_to_mlflow(
    cv_file_run, monkeypatch
):
    out, table = cv_file_run.out, cv_file_run.table
    assert set(table["status"]) == {"completed"} and set(table["epochs"]) == {2}  # the command line's 2
    # OUT's record holds the effective options, and reads back as a --config file of the same sweep.
    record = read_sweep_record(out)
    assert record.options["epochs"] == 2 and record.options["batch_size"] == 8 and record.options["cv"]
    assert record.options["mlflow"] == cv_file_run.tracking
    assert record.data == str(cv_file_run.data.resolve())
    written = yaml.safe_load((out / SWEEP_FILE).read_text())
    assert "storage" not in written  # the run storage is OUT itself: a copy of the file can start anew
    # Fed back through the command line's own parser, OUT's file starts the same sweep elsewhere.
    from genre.cli import build_parser
    from genre.cli.sweep import options_given, with_config_file

    args = build_parser().parse_args(["sweep", "--config", str(out / SWEEP_FILE), str(out.parent / "again")])
    args = with_config_file(args)
    assert args.out == out.parent / "again" and args.data == record.data
    again = SweepConfig.from_options(options_given(args), data=args.data, out=args.out)
    assert again.options() == record.options

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(cv_file_run.tracking)
    runs = client.search_runs([client.get_experiment_by_name("genre").experiment_id])
    assert len(runs) == len(table) == 3  # one MLflow run per trial
    for run in runs:
        assert run.data.tags["genre.out"] == str(out.resolve())
        history = client.get_metric_history(run.info.run_id, "val_segment_accuracy")
        assert len({point.step for point in history}) >= 2  # every epoch, not only the last
        assert "test_track_accuracy" in run.data.metrics


def test_a_tracker_whose_package_is_missing_is_refused_before_ray_starts(monkeypatch, tmp_path):
    import importlib.util

    from genre.sweep import trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name)
    )
    with pytest.raises(UserInputError, match=r"--wandb needs the wandb package.*genre-ray\[wandb\]"):
        trackers.check_trackers(None, "my-project")


def test_sweep_yaml_records_the_search_and_its_space_and_a_resume_with_another_is_refused(tmp_path):
    from data_pipeline.storage import open_storage
    from genre.run_folder import RunStorage

    space = {"lr": {"loguniform": ["1e-4", 1.0e-2]}, "batch_size": {"choice": [16, 32]}}
    config = SweepConfig(data="d", out=tmp_path, search="optuna", search_space=space, num_samples=2)
    storage = RunStorage(open_storage(tmp_path)).location
    write_sweep_record(tmp_path, SweepRecord(storage, "d", "", config.options()))
    recorded = read_sweep_record(tmp_path).options
    assert recorded["search"] == "optuna"
    assert recorded["search_space"] == {
        "lr": {"loguniform": [1e-4, 1e-2]},
        "batch_size": {"choice": [16, 32]},
    }
    # The record is a --config file of the same search.
    assert read_options_file(tmp_path / SWEEP_FILE)["search_space"] == recorded["search_space"]
    assert resume_changes(recorded, config.options()) == {}
    wider = SweepConfig(data="d", out=tmp_path, search="optuna", search_space={"lr": {"uniform": [0.1, 0.2]}})
    with pytest.raises(UserInputError, match=r"--search-space \{.*\} \(the sweep has \{.*\}\)"):
        resume_changes(recorded, {**wider.options(), "num_samples": 2})
