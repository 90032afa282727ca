"""The `genre` command: one-line errors and exit codes for bad input, a summary when it works."""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline.errors import UserInputError
from data_pipeline.loopback import is_loopback_address
from genre.cli import (
    EXIT_ALL_TRIALS_FAILED,
    EXIT_SOME_TRIALS_FAILED,
    EXIT_USER_ERROR,
    build_parser,
    main,
    sweep_exit_code,
)
from genre.cli.sweep import options_given
from genre.sweep.options import (
    SWEEP_LEVEL,
    TRAIN_OPTIONS,
    SweepConfig,
    gpus_or_auto,
    per_model_text,
    search_space_text,
)
from genre.sweep.record import flag
from tests.audio_factory import make_clip, make_collection


def run_genre(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genre", *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == EXIT_USER_ERROR
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        (["completed", "completed"], 0),
        (["completed", "stopped"], 0),  # stopped early by ASHA: a result, not a failure
        (["completed", "error", "stopped"], EXIT_SOME_TRIALS_FAILED),
        (["error", "error"], EXIT_ALL_TRIALS_FAILED),
    ],
)
def test_a_sweep_exits_zero_only_when_no_trial_failed(statuses, code):
    assert sweep_exit_code(statuses) == code
    # Apart from each other and from 1, Python's code for a crash.
    assert len({0, 1, EXIT_USER_ERROR, EXIT_SOME_TRIALS_FAILED, EXIT_ALL_TRIALS_FAILED}) == 5


def test_a_missing_source_exits_non_zero_with_one_line(tmp_path):
    result = run_genre("prepare", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "out").exists()


def test_a_source_without_audio_exits_non_zero_with_one_line(tmp_path):
    (tmp_path / "src" / "rock").mkdir(parents=True)
    (tmp_path / "src" / "rock" / "readme.md").write_text("no music here")
    result = run_genre("prepare", str(tmp_path / "src"), str(tmp_path / "out"))
    assert_one_line_error(result, "no audio files")


def test_a_genre_too_small_to_split_exits_non_zero_with_one_line(tmp_path):
    make_collection(tmp_path / "src", genres=2, tracks=3)
    make_clip(tmp_path / "src" / "lonely" / "only.wav", 4.0)
    result = run_genre("prepare", str(tmp_path / "src"), str(tmp_path / "out"))
    assert_one_line_error(result, "genre 'lonely' has 1 track(s)")


@pytest.mark.parametrize(
    ("option", "fragment"),
    [(["--ratios", "0.9,0.2,0.2"], "must sum to 1"), (["--segment-seconds", "0.01"], "FFT window")],
)
def test_bad_options_exit_non_zero_with_one_line(tmp_path, option, fragment):
    make_collection(tmp_path / "src", genres=2, tracks=3)
    result = run_genre("prepare", str(tmp_path / "src"), str(tmp_path / "out"), *option)
    assert_one_line_error(result, fragment)


def test_prepare_prints_progress_and_a_summary(ray_session, collection, tmp_path, capsys):
    assert main(["prepare", str(collection), str(tmp_path / "out"), "--n-mels", "64"]) == 0
    printed = capsys.readouterr().out
    assert "15/15 tracks" in printed
    assert "total       15        30" in printed
    assert "audio s/s" in printed


def test_models_lists_the_six_with_parameters_and_weights_status(tmp_path, capsys):
    assert main(["models", "--weights", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name, params in [("cnn3", "163,402"), ("efficientnet_b0 ", "4,019,782"), ("vgg11", "9,353,226")]:
        assert any(line.startswith(name) and params in line for line in printed.splitlines())
    assert f"not found in {tmp_path}" in printed


def test_version_names_genre_python_and_the_libraries_without_importing_them():
    result = subprocess.run(
        [sys.executable, "-m", "genre", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    line = result.stdout.strip()
    assert line.startswith("genre 0.") and f"Python {sys.version.split()[0]}" in line
    assert "ray 2." in line and "torch 2." in line


def complete(tmp_path, line: str) -> list[str]:
    """What the shell's completion hook gets for `line` (argcomplete's protocol, its output to a file)."""
    answer = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    result = subprocess.run(
        [sys.executable, "-m", "genre"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return answer.read_text().split()


def test_the_shell_completes_commands_and_options(tmp_path):
    assert complete(tmp_path, "genre sw") == ["sweep"]
    assert complete(tmp_path, "genre sweep --gpu") == ["--gpus-per-trial"]
    assert "--config" in complete(tmp_path, "genre sweep --c")


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:6379", True),
        ("127.0.1.1:6379", True),
        ("localhost:6379", True),
        ("[::1]:6379", True),
        ("[::ffff:127.0.0.1]:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("10.0.0.5:6379", False),
        ("head.cluster.local:6379", False),
        ("auto", False),
    ],
)
def test_a_head_on_loopback_is_told_from_a_cluster_address(address, loopback):
    assert is_loopback_address(address) is loopback


@pytest.mark.parametrize("auth_mode", [None, "token"])
def test_a_cluster_that_refuses_the_connection_is_one_line_naming_token_auth_when_it_may_be_that(
    monkeypatch, auth_mode
):
    # What Ray raises when a head with token authentication is joined without the token (seen with
    # cluster/local-head.sh; the reason itself is only in Ray's own log line).
    import ray

    from data_pipeline import ray_connect

    def refuse(**_: object) -> None:
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379")

    monkeypatch.setattr(ray_connect, "check_answers", lambda address: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    if auth_mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", auth_mode)
    with pytest.raises(UserInputError) as refused:
        ray_connect.connect_ray("127.0.0.1:6379")
    message = str(refused.value)
    assert message.startswith("cannot connect to Ray at '127.0.0.1:6379': Failed to connect"), message
    assert ("RAY_AUTH_MODE=token" in message) is (auth_mode is None)


def a_value_it_takes(action: argparse.Action) -> list[str]:
    """What may follow the flag: nothing for a switch, else its last choice, or a number or a path."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [list(action.choices)[-1]]
    if action.type is search_space_text:
        return ["{dropout: {uniform: [0.1, 0.5]}}"]
    if action.type is per_model_text:
        return ["{cnn3: {epochs: 2}}"]
    return ["3" if action.type is int else "0.5" if action.type in (float, gpus_or_auto) else "/x"]


def test_every_sweep_option_has_one_flag_in_the_help_and_the_flag_sets_it():
    # The flags are generated from the options' fields: a field added without its help fails here.
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = commands.choices["sweep"]
    help_text = parser.format_help()
    for name in (*TRAIN_OPTIONS, *SWEEP_LEVEL):
        (action,) = [action for action in parser._actions if action.dest == name]
        assert action.option_strings == [flag(name)], name  # the flag a --config key becomes
        # (?![\w-]): --lr, not the start of --lr-schedule.
        assert len(re.findall(rf"^  {re.escape(flag(name))}(?![\w-])", help_text, re.MULTILINE)) == 1, name
        value = a_value_it_takes(action)
        expected = action.type(value[0]) if value else True
        given = options_given(build_parser().parse_args(["sweep", flag(name), *value]))
        assert given == {name: expected}, name
        config = SweepConfig.from_options({**given, "models": ["cnn3"]}, data="DATA", out=Path("OUT"))
        assert config.options()[name] == expected, name
