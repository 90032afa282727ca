"""A reduced `genre demo`, end to end: generated audio -> Ray Data -> Ray Tune -> table."""

import pandas as pd

from genre.cli import main
from genre.config import DEMO_EPOCHS


def test_a_reduced_demo_runs_end_to_end_and_prints_the_table(ray_session, tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            str(out),
            "--tracks-per-genre",
            "3",
            "--seconds",
            "6.5",
            "--models",
            "cnn3,cnn4",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "1/3 synth" in printed and "2/3 prepare" in printed and "3/3 sweep" in printed
    table_lines = [line for line in printed.splitlines() if line.startswith("cnn3 ")]
    assert len(table_lines) == 1 and "completed" in table_lines[0]
    # Each model its own epochs (the sweep's per_model), as sweep.yaml records them.
    epochs = pd.read_parquet(out / "run" / "results.parquet").set_index("model")["epochs"]
    assert epochs.to_dict() == {"cnn3": DEMO_EPOCHS["cnn3"], "cnn4": DEMO_EPOCHS["cnn4"]}
    assert f"epoch {DEMO_EPOCHS['cnn3']}/{DEMO_EPOCHS['cnn3']}" in printed  # the live view's budget
    assert "stages: synth" in printed
    assert (out / "audio" / "rock" / "rock.00002.wav").is_file()
    assert (out / "data" / "manifest.json").is_file()
    assert (out / "run" / "results.md").is_file()


def test_the_note_under_the_table_names_each_model_that_learned_little_and_why():
    from genre.demo import slow_learners_note

    table = pd.DataFrame(
        {
            "model": ["cnn4", "vgg11", "cnn3", "efficientnet_b0"],
            "epochs": [10, 1, 20, 2],
            "test_track_accuracy": [0.7, 0.1, float("nan"), 0.3],
        }
    )
    note = slow_learners_note(table)
    assert note == (
        "note: little learned from random weights on a CPU in the demo's minutes by vgg11 (1 epoch; "
        "ImageNet-sized, no batch norm), efficientnet_b0 (2 epochs; ImageNet-sized); with ImageNet weights "
        "on a GPU they lead (docs/demo.md); --epochs trains every model longer"
    )
    assert "cnn4" not in note and "cnn3" not in note and "\n" not in note  # a failed row has no score
    assert slow_learners_note(table.iloc[:1]) is None


def test_the_demo_trains_each_model_its_own_epochs_unless_told_one_number():
    from genre.config import DemoConfig

    assert DemoConfig().epochs_of("cnn3") == DEMO_EPOCHS["cnn3"] > DemoConfig().epochs_of("vgg11")
    assert {DemoConfig(epochs=3).epochs_of(model) for model in DEMO_EPOCHS} == {3}


def test_the_demos_per_model_settings_give_each_model_its_epochs_and_its_own_rate():
    from genre.config import DEMO_LR, DemoConfig

    models = ("cnn3", "cnn4", "cnn4_gru")
    settings = DemoConfig().per_model(models)
    # The longest-training model takes the sweep's epochs; the others say their own.
    longest = max(models, key=DEMO_EPOCHS.__getitem__)
    assert "epochs" not in settings.get(longest, {})
    assert all(settings[m]["epochs"] == DEMO_EPOCHS[m] for m in models if m != longest)
    assert settings["cnn4_gru"]["lr"] == DEMO_LR["cnn4_gru"] and "lr" not in settings.get("cnn4", {})
    # One --epochs for all: only the rates are a model's own.
    assert DemoConfig(epochs=3).per_model(models) == {"cnn4_gru": {"lr": DEMO_LR["cnn4_gru"]}}
