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
