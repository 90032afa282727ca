"""A reduced `genre demo`, end to end: generated audio -> Ray Data -> Ray Tune -> table."""

from genre.cli import main


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
            "--epochs",
            "1",
            "--models",
            "cnn3",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "1/3 synth" in printed and "2/3 prepare" in printed and "3/3 sweep" in printed
    table_lines = [line for line in printed.splitlines() if line.startswith("cnn3 ")]
    assert len(table_lines) == 1 and "completed" in table_lines[0]
    assert "stages: synth" in printed
    assert (out / "audio" / "rock" / "rock.00002.wav").is_file()
    assert (out / "data" / "manifest.json").is_file()
    assert (out / "run" / "results.md").is_file()


def test_the_note_under_the_table_names_each_model_that_learned_little_and_why():
    import pandas as pd

    from genre.demo import slow_learners_note

    table = pd.DataFrame(
        {"model": ["cnn4", "vgg11", "cnn3"], "test_track_accuracy": [0.7, 0.1, float("nan")]}
    )
    note = slow_learners_note(table, 4)
    assert note == (
        "note: little learned in 4 epochs from random weights on a CPU by vgg11 (ImageNet-sized, no batch "
        "norm); --epochs trains longer"
    )
    assert "cnn4" not in note and "cnn3" not in note and "\n" not in note  # a failed row has no score
    assert slow_learners_note(table.iloc[:1], 4) is None
