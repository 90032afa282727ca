"""Credentials written into a location (`s3://KEY:SECRET@...`, `?secret_key=SECRET`) never reach a file,
a log or a message: not OUT, not the bucket, not Ray's session folder, not a command's output."""

from __future__ import annotations

import base64
import io
import json
import logging
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import pyarrow.fs as pafs
import pytest
import ray
import yaml

from data_pipeline.errors import UserInputError
from data_pipeline.storage import first_line, open_storage, public_location, redact
from genre.cli import main
from genre.run_folder import RunStorage
from tests.s3_server import bucket, s3_endpoint_fixture  # noqa: F401 (s3_endpoint)

# Distinct from tests.s3_server's CREDENTIALS, so that a hit here is this module's.
RUN_SECRET, DATA_SECRET, TOKEN = "RunSecretXq7Zr2", "DataSecretVb9Kw4", "SessionTokenJp3Ld8"
SECRETS = (RUN_SECRET, DATA_SECRET, TOKEN)
SWEEP = ["--models", "cnn3", "--epochs", "1", "--pretrained", "no", "--seed", "5"]


def _forms(secret: str) -> list[bytes]:
    """The secret as text, and as Ray and Tune encode what they pickle into files (hex, base64)."""
    raw = secret.encode()
    # Base64 of a string depends on its offset in the encoded bytes: every offset's stable middle.
    shifted = [base64.b64encode(b"\0" * pad + raw)[4:-4] for pad in range(3)]
    return [raw, raw.hex().encode(), *shifted]


def holders(files: dict[str, bytes]) -> dict[str, str]:
    """{name: the secret found in it} for the files that hold one of SECRETS in any form."""
    found = {}
    for name, data in files.items():
        for secret in SECRETS:
            if any(form in data for form in _forms(secret)):
                found[name] = secret
    return found


def folder_files(root: Path) -> dict[str, bytes]:
    found = root.rglob("*")
    return {str(path): path.read_bytes() for path in found if path.is_file() and not path.is_symlink()}


def bucket_files(options: dict[str, str], name: str) -> dict[str, bytes]:
    filesystem, _ = pafs.FileSystem.from_uri(f"s3://genre-key:genre-secret@{name}?{urlencode(options)}")
    listing = filesystem.get_file_info(pafs.FileSelector(name, recursive=True))
    found = {}
    for info in listing:
        if info.type == pafs.FileType.File:
            with filesystem.open_input_stream(info.path) as stream:
                found[info.path] = stream.read()
    return found


def ray_session_files() -> dict[str, bytes]:
    """Every file of this Ray session's folder: logs of every process, and what Ray stages there."""
    context = ray.get_runtime_context()
    return folder_files(Path(context.get_temp_dir()) / context.get_session_name())


def run_command(argv: list[str]) -> tuple[int, str]:
    """`genre ARGV` in this process: its exit code, and everything it printed or logged."""
    printed, logged = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(logged)
    loggers = [logging.getLogger(), logging.getLogger("ray")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with redirect_stdout(printed), redirect_stderr(printed):
            code = main(argv)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    return code, printed.getvalue() + logged.getvalue()


@pytest.fixture(scope="module")
def secret_sweep(s3_endpoint, tiny_dataset, tmp_path_factory):
    """A sweep whose run storage and DATA both carry credentials in their URIs, then its --resume.

    (pyarrow takes S3 credentials in a URI's user part only: a query's `secret_key` is refused.)"""
    query = bucket(s3_endpoint, "genre-secret-runs")
    storage = f"s3://genre-key:{RUN_SECRET}@genre-secret-runs/sweeps/one?{query}"
    data_query = bucket(s3_endpoint, "genre-secret-data")
    data = f"s3://genre-key:{DATA_SECRET}@genre-secret-data/tiny?{data_query}"
    filesystem, root = pafs.FileSystem.from_uri(data)
    pafs.copy_files(str(tiny_dataset), root, destination_filesystem=filesystem)
    out = tmp_path_factory.mktemp("secret-sweep") / "run"

    first, first_output = run_command(["sweep", data, str(out), *SWEEP, "--storage", storage])
    resumed, resumed_output = run_command(["sweep", data, str(out), *SWEEP, "--storage", storage, "--resume"])
    return SimpleNamespace(
        out=out,
        storage=storage,
        data=data,
        codes=(first, resumed),
        output=first_output + resumed_output,
        options=s3_endpoint,
    )


def test_the_sweep_and_its_resume_run_on_the_credentials_of_their_uris(secret_sweep):
    assert secret_sweep.codes == (0, 0), secret_sweep.output
    results = (secret_sweep.out / "results.csv").read_text()
    assert "completed" in results
    record = yaml.safe_load((secret_sweep.out / "sweep.yaml").read_text())
    # Recorded without credentials, so that the machine's own (environment, ~/.aws) open them again.
    assert record["storage"] == public_location(secret_sweep.storage)
    assert record["storage"].startswith("s3://genre-secret-runs/sweeps/one?")
    assert "genre-key" not in record["storage"]
    assert record["data"] == public_location(secret_sweep.data)
    assert record["data"].startswith("s3://genre-secret-data/tiny?")


def test_no_secret_reaches_out_the_bucket_ray_s_logs_or_the_output(secret_sweep):
    assert secret_sweep.codes == (0, 0), secret_sweep.output
    out = folder_files(secret_sweep.out)
    stored = bucket_files(secret_sweep.options, "genre-secret-runs")
    assert any(name.endswith("/tuner.pkl") for name in stored) and any("best.pt" in n for n in stored)
    assert holders(out) == {}
    assert holders(stored) == {}
    assert holders(ray_session_files()) == {}
    assert holders({"output": secret_sweep.output.encode()}) == {}


def test_a_failed_open_names_the_location_without_a_secret(
    secret_sweep, tiny_dataset, tiny_audio, tmp_path, monkeypatch
):
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance to ask for credentials
    # pyarrow refuses credentials in a query, and its message named the URI whole.
    in_query = f"access_key=k&secret_key={RUN_SECRET}&session_token={TOKEN}"
    unopenable = f"s3://genre-secret-runs/x?{in_query}&{urlencode(secret_sweep.options)}"
    missing_bucket = f"s3://genre-key:{DATA_SECRET}@no-such-bucket/x?{urlencode(secret_sweep.options)}"
    commands = [
        ["sweep", str(tiny_dataset), str(tmp_path / "a"), *SWEEP, "--storage", unopenable],
        ["sweep", str(tiny_dataset), str(tmp_path / "b"), *SWEEP, "--storage", missing_bucket],
        ["sweep", unopenable, str(tmp_path / "c"), *SWEEP],
        ["prepare", str(tiny_audio), unopenable],
        ["prepare", unopenable, str(tmp_path / "d")],
        ["evaluate", unopenable, "--run", str(secret_sweep.out)],
        ["sweep", secret_sweep.data, str(secret_sweep.out), *SWEEP, "--resume", "--storage", missing_bucket],
        # The record names the storage without credentials, and this machine has none of its own.
        ["sweep", secret_sweep.data, str(secret_sweep.out), *SWEEP, "--resume"],
    ]
    errors, outputs = [], {}
    for command in commands:
        code, output = run_command(command)
        assert code == 2, (command, output)
        errors.append([line for line in output.splitlines() if line.startswith("genre ")][-1])
        outputs[" ".join(command)] = output.encode()
    print(*errors, sep="\n")
    assert all(": error: " in error for error in errors), errors
    assert holders(outputs) == {}, errors
    assert "genre-secret-runs/x?access_key=***&secret_key=***&session_token=***&" in errors[0]
    assert holders(ray_session_files()) == {}


@pytest.mark.parametrize(
    ("given", "shown", "recorded"),
    [
        (
            "s3://AK:SECRET@bucket/runs?region=eu",
            "s3://AK:***@bucket/runs?region=eu",
            "s3://bucket/runs?region=eu",
        ),
        (
            "s3://bucket/runs?access_key=AK&secret_key=SECRET&session_token=SECRET&region=eu",
            "s3://bucket/runs?access_key=***&secret_key=***&session_token=***&region=eu",
            "s3://bucket/runs?region=eu",
        ),
        # Percent-encoded, in any case, repeated, without a value, or as a GCS token.
        (
            "s3://bucket/r?Secret_Key=SE%2FCRET&secret_key=SECRET&SESSION_TOKEN",
            "s3://bucket/r?Secret_Key=***&secret_key=***&SESSION_TOKEN=***",
            "s3://bucket/r",
        ),
        (
            "gs://bucket/r?access_token=SECRET&scheme=http",
            "gs://bucket/r?access_token=***&scheme=http",
            "gs://bucket/r?scheme=http",
        ),
        (
            "hdfs://me:SECRET@namenode:8020/runs",
            "hdfs://me:***@namenode:8020/runs",
            "hdfs://namenode:8020/runs",
        ),
        ("s3://:SECRET@bucket/r", "s3://:***@bucket/r", "s3://bucket/r"),
        ("s3://SECRET@bucket/r", "s3://***@bucket/r", "s3://bucket/r"),  # a token as the user part alone
        ("s3://bucket/runs?region=eu", "s3://bucket/runs?region=eu", "s3://bucket/runs?region=eu"),
        (
            "s3://bucket/me@example.org/a.wav",
            "s3://bucket/me@example.org/a.wav",
            "s3://bucket/me@example.org/a.wav",
        ),
        ("/data/runs", "/data/runs", "/data/runs"),
    ],
)
def test_every_form_of_a_secret_in_a_uri_is_masked_in_messages_and_dropped_in_records(given, shown, recorded):
    assert redact(given) == shown
    assert public_location(given) == recorded
    assert "SECRET" not in redact(given) and "SE%2FCRET" not in redact(given)


def test_a_secret_holding_a_slash_that_pyarrow_cannot_parse_is_masked_whole_in_its_message():
    given = "s3://AK:SE/CRET@bucket/runs?region=eu"
    assert redact(given) == "s3://AK:***@bucket/runs?region=eu"
    with pytest.raises(UserInputError) as refused:
        open_storage(given)
    assert "CRET" not in str(refused.value)
    # A library's message that repeats a URI is redacted too.
    assert (
        first_line(OSError(f"cannot parse '{given}'\nmore"))
        == "cannot parse 's3://AK:***@bucket/runs?region=eu'"
    )


def test_a_storage_names_itself_without_its_credentials_wherever_it_goes(tmp_path):
    given = "s3://AK:SECRET@bucket/runs?region=eu-west-1&endpoint_override=127.0.0.1:9"
    storage = open_storage(given)
    child = storage.child("checkpoints", "cnn3-x", "best.pt")
    assert (
        child.location
        == "s3://bucket/runs/checkpoints/cnn3-x/best.pt?region=eu-west-1&endpoint_override=127.0.0.1:9"
    )
    assert child.path == "bucket/runs/checkpoints/cnn3-x/best.pt"
    for text in (str(child), repr(child), repr(RunStorage(storage).trial("cnn3", "x"))):
        assert "SECRET" not in text, text
    # An unopenable location with a secret: the message masks it.
    with pytest.raises(UserInputError) as refused:
        open_storage("s3://bucket/x?secret_key=SECRET&no_such_option=1")
    assert "SECRET" not in str(refused.value) and "secret_key=***" in str(refused.value)
    # The trial folder in a best.pt and the table's checkpoint column: recorded without credentials.
    assert "SECRET" not in json.dumps(RunStorage(storage).trial("cnn3", "x").storage.location)
