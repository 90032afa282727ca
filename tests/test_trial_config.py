"""A trial's settings, worked out once from the sweep's options, the model's defaults and Tune's samples."""

from types import SimpleNamespace

from genre.config import ModelDefaults, TrainConfig, TrialConfig
from genre.models import get_spec
from genre.sweep.results import failure_line, trial_dirname, trial_id_of

DEFAULTS = ModelDefaults(lr=3e-4, dropout=0.3)


def test_the_models_defaults_fill_what_the_sweep_leaves_open():
    trial = TrialConfig.resolve(TrainConfig(), "cnn4", DEFAULTS, folder="somewhere")
    assert (trial.lr, trial.dropout, trial.batch_size, trial.epochs) == (3e-4, 0.3, 16, 15)
    assert trial.folder == "somewhere"


def test_the_sweeps_options_win_over_the_models_defaults():
    trial = TrialConfig.resolve(TrainConfig(lr=1e-3, dropout=0.0, batch_size=64), "cnn4", DEFAULTS)
    assert (trial.lr, trial.dropout, trial.batch_size) == (1e-3, 0.0, 64)


def test_sampled_values_replace_the_sweeps_and_the_models():
    sampled = {"model": "cnn4", "lr": 3e-3, "batch_size": 32, "dropout": 0.45, "weight_decay": 0.01}
    trial = TrialConfig.resolve(TrainConfig(lr=1e-3), "cnn4", DEFAULTS, sampled)
    assert (trial.lr, trial.batch_size, trial.dropout, trial.weight_decay) == (3e-3, 32, 0.45, 0.01)


def test_a_trial_takes_its_models_per_model_settings_and_a_sampled_value_over_them(tmp_path):
    from data_pipeline.storage import open_storage
    from genre.sweep.options import SweepConfig
    from genre.trial.trainable import TrialSetup

    sweep = SweepConfig(
        data="d", out=tmp_path, models=("cnn3", "cnn4"), train=TrainConfig(epochs=4, lr=1e-3),
        per_model={"cnn3": {"epochs": 12, "lr": 1e-2}},
    )  # fmt: skip
    setup = TrialSetup(
        train={model: sweep.train_for(model) for model in sweep.models},
        data=open_storage(tmp_path), manifest_sha256="0" * 64, features={}, labels={},
        storage=open_storage(tmp_path), num_workers=1, cpus_per_worker=1.0, gpus_per_worker=0.0,
        max_failures=0, torch_threads=1, train_held=True, local_ray=True,
        defaults={"cnn3": DEFAULTS, "cnn4": DEFAULTS}, pretrained={},
    )  # fmt: skip
    cnn3 = setup.trial_config({"model": "cnn3"}, "t0")
    cnn4 = setup.trial_config({"model": "cnn4"}, "t1")
    assert (cnn3.epochs, cnn3.lr, cnn4.epochs, cnn4.lr) == (12, 1e-2, 4, 1e-3)
    assert setup.trial_config({"model": "cnn3", "lr": 5e-3}, "t2").lr == 5e-3  # a search's value wins


def test_a_registered_models_defaults_are_its_specs():
    spec = get_spec("efficientnet_b0")
    assert spec.defaults == ModelDefaults(lr=spec.lr, dropout=spec.dropout)


def test_a_trial_config_round_trips_through_a_dict_and_ignores_unknown_keys():
    trial = TrialConfig.resolve(TrainConfig(), "cnn3", DEFAULTS, fault="raise@0:0")
    assert TrialConfig.from_dict({**trial.to_dict(), "from_a_newer_genre": 1}) == trial


def test_a_trial_id_is_read_back_from_the_folder_tune_named_for_it():
    trial = SimpleNamespace(config={"model": "cnn4_gru"}, trial_id="a1b2c_00003")
    assert trial_id_of(f"/runs/tune/{trial_dirname(trial)}") == "a1b2c_00003"


def test_a_failure_is_the_innermost_error_of_rays_wrappers_in_one_line():
    from ray.exceptions import RayTaskError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from genre.train.faults import InjectedFailure

    worker = InjectedFailure("injected failure in cnn4 at epoch 0, step 0 (test hook)\nmore lines")
    group = WorkerGroupError("Training failed due to worker errors", {1: ValueError("rank 1"), 0: worker})
    wrapped = RayTaskError("genre_trial", "Traceback (most recent call last):\n ...", group)
    assert failure_line(wrapped) == "InjectedFailure: injected failure in cnn4 at epoch 0, step 0 (test hook)"


def test_running_out_of_memory_says_what_to_do():
    import torch

    assert "lower --batch-size" not in failure_line(ValueError("something else"))
    error = RuntimeError("trial failed")
    error.__cause__ = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    assert failure_line(error).startswith("OutOfMemoryError: CUDA out of memory")
    assert "lower --batch-size" in failure_line(error)
