"""A dataset in a bucket: `genre prepare s3://... s3://...`, `genre sweep s3://... OUT` (real S3 server)."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

import pandas as pd
import pyarrow.fs as pafs
import pytest
from moto.s3.responses import S3Response

from data_pipeline.audio import StorageReadError, probe_audio
from data_pipeline.dataset_prefix import PrefixWriter
from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.manifest import read_manifest
from data_pipeline.prepare import PrepareConfig, prepare
from data_pipeline.shards import read_split
from data_pipeline.split import SPLITS
from data_pipeline.storage import join_location, open_storage, public_location
from genre.cli import main
from genre.evaluate import evaluate
from genre.sweep.record import read_sweep_record
from tests.s3_server import CREDENTIALS, bucket, s3_endpoint_fixture  # noqa: F401 (s3_endpoint)

# As conftest's tiny_dataset: 64 bands, 1.5 s segments.
FEATURES = ["--n-mels", "64", "--segment-seconds", "1.5"]
S3_FEATURES = FeatureConfig(n_mels=64, segment_seconds=1.5)
ACCESS_DENIED = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"


def put(uri: str, data: bytes) -> None:
    filesystem, path = pafs.FileSystem.from_uri(uri)
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def below(uri: str, *names: str) -> str:
    return join_location(uri, *names)  # the credentials of `uri` too


def in_data_bucket(dataset: SimpleNamespace, name: str) -> str:
    """A prefix beside the prepared dataset."""
    return f"s3://{CREDENTIALS}genre-data/datasets/{name}?{dataset.query}"


def files(uri: str) -> list[str]:
    return open_storage(uri).files()


def listed(uri: str) -> set[str]:
    """The files a dataset's manifest lists, and the manifest."""
    shards = read_manifest(uri)["shards"]
    return {"manifest.json"} | {shard["path"] for split in shards.values() for shard in split}


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def audio_bucket(s3_endpoint, tiny_audio: Path) -> str:
    """conftest's tiny audio in a bucket, with a file of each kind that cannot be used; its URI."""
    query = bucket(s3_endpoint, "genre-audio")
    source = f"s3://{CREDENTIALS}genre-audio/music?{query}"
    filesystem, root = pafs.FileSystem.from_uri(source)
    pafs.copy_files(str(tiny_audio), root, destination_filesystem=filesystem)
    good = (tiny_audio / "genre0" / "genre0.00000.wav").read_bytes()
    put(below(source, "genre1", "truncated.wav"), good[: len(good) // 2])
    put(below(source, "genre1", "notes.txt"), b"liner notes")
    put(below(source, "loose.wav"), good)
    put(below(source, ".trash", "genre0", "old.wav"), good)  # hidden: not even listed as a reject
    return source


@pytest.fixture(scope="module")
def s3_dataset(ray_session, s3_endpoint, audio_bucket: str) -> SimpleNamespace:
    """The audio bucket prepared, through the command line, into another bucket."""
    query = bucket(s3_endpoint, "genre-data")
    data = f"s3://{CREDENTIALS}genre-data/datasets/tiny?{query}"
    assert main(["prepare", audio_bucket, data, *FEATURES]) == 0
    return SimpleNamespace(data=data, query=query)


def test_a_dataset_prepared_from_bucket_to_bucket_equals_the_one_prepared_on_disk(s3_dataset, tiny_dataset):
    for split in SPLITS:
        assert read_split(s3_dataset.data, split).equals(read_split(tiny_dataset, split))


def test_the_bucket_holds_the_listed_shards_the_manifest_and_no_run_marker(s3_dataset):
    assert set(files(s3_dataset.data)) == listed(s3_dataset.data)
    manifest = read_manifest(s3_dataset.data)
    assert manifest["counts"]["total"] == {"tracks": 15, "segments": 30}
    # Shards are named by their run: the dataset they replace stays whole until the manifest changes.
    assert all(shard["path"].count("-") == 2 for split in SPLITS for shard in manifest["shards"][split])


def test_unusable_files_in_the_bucket_are_rejected_by_their_headers_and_no_secret_is_recorded(s3_dataset):
    manifest = read_manifest(s3_dataset.data)
    root = "s3://genre-key:***@genre-audio/music"
    reasons = {r["path"].split("?")[0]: r["reason"] for r in manifest["rejects"]}
    assert reasons.keys() == {f"{root}/genre1/truncated.wav", f"{root}/genre1/notes.txt", f"{root}/loose.wav"}
    assert reasons[f"{root}/genre1/truncated.wav"].startswith("truncated file")
    assert manifest["source"] == {"path": f"{root}?{s3_dataset.query}", "kind": "folder"}
    assert "genre-secret" not in json.dumps(manifest)


def test_a_sweep_and_an_evaluation_read_data_from_a_bucket(s3_dataset, tmp_path):
    """The train split streams from Ray Data (--train-in-memory-mib 0); the worker reads val and test."""
    out = tmp_path / "run"
    command = ["sweep", s3_dataset.data, str(out), "--models", "cnn3", "--epochs", "1", "--pretrained", "no"]
    assert main([*command, "--train-in-memory-mib", "0", "--seed", "5"]) == 0
    table = pd.read_parquet(out / "results.parquet")
    assert table.loc[0, "status"] == "completed", table.loc[0, "error"]
    # A URI stays a URI, recorded without its credentials.
    assert read_sweep_record(out).data == public_location(s3_dataset.data)
    for written in ("sweep.yaml", "results.md"):
        assert "genre-secret" not in (out / written).read_text()
    scores = evaluate(s3_dataset.data, out / table.loc[0, "checkpoint"], tmp_path / "evaluation").scores
    assert scores["test_segment_accuracy"] == pytest.approx(table.loc[0, "test_segment_accuracy"], abs=1e-6)


def test_shards_without_a_manifest_are_no_dataset_and_the_next_prepare_removes_them(
    s3_dataset, audio_bucket, tmp_path, capsys
):
    # What a killed run leaves: shards, and its marker naming a process of this machine that is gone.
    killed = in_data_bucket(s3_dataset, "killed")
    for name in listed(s3_dataset.data) - {"manifest.json"}:
        put(below(killed, name), open_storage(below(s3_dataset.data, name)).read_bytes())
    tag = next(iter(listed(s3_dataset.data) - {"manifest.json"})).split("-")[-1].removesuffix(".parquet")
    gone = subprocess.Popen(["true"])
    gone.wait()
    put(below(killed, f".partial-{tag}"), f"{socket.gethostname()} {gone.pid}\n".encode())

    assert main(["sweep", killed, str(tmp_path / "run"), "--models", "cnn3", "--epochs", "1"]) == 2
    assert "is not a prepared dataset (no manifest.json); run `genre prepare` first" in last_error(capsys)

    assert main(["prepare", audio_bucket, killed, *FEATURES]) == 0
    assert f"removed the shards of run {tag}, left in OUT by an interrupted run" in capsys.readouterr().out
    assert set(files(killed)) == listed(killed)
    assert not any(tag in name for name in files(killed))


def test_overwrite_in_a_bucket_deletes_only_what_the_old_manifest_lists(s3_dataset, audio_bucket, capsys):
    data = in_data_bucket(s3_dataset, "replaced")
    assert main(["prepare", audio_bucket, data, *FEATURES]) == 0
    old = listed(data)
    assert main(["prepare", audio_bucket, data, *FEATURES]) == 2
    assert "already holds a dataset; pass --overwrite to replace it" in last_error(capsys)
    put(below(data, "notes.md"), b"mine")
    assert main(["prepare", audio_bucket, data, *FEATURES, "--overwrite"]) == 2
    assert "holds files its dataset does not list (notes.md)" in last_error(capsys)

    open_storage(below(data, "notes.md")).delete_file()
    assert main(["prepare", audio_bucket, data, *FEATURES, "--overwrite", "--seed", "1"]) == 0
    assert read_manifest(data)["split"]["seed"] == 1
    assert set(files(data)) == listed(data) and not (old - {"manifest.json"}) & set(files(data))


def test_the_shards_of_a_run_on_another_machine_are_named_and_left_alone(s3_endpoint):
    out = f"s3://{CREDENTIALS}genre-shared/data?{bucket(s3_endpoint, 'genre-shared')}"
    theirs = [".partial-0123abcd", "train/part-00000-0123abcd.parquet"]
    put(below(out, theirs[0]), b"another-host 4242\n")
    put(below(out, theirs[1]), b"PAR1")
    notes: list[str] = []
    writer = PrefixWriter(open_storage(out), overwrite=False, progress=notes.append)
    marker = open_storage(below(out, theirs[0]))
    assert notes == [
        "OUT holds the shards of run 0123abcd (another-host 4242), still writing or of another machine; "
        f"they are no part of the dataset: once that run is over, delete {marker} and the shards ending "
        "in -0123abcd.parquet"
    ]
    assert files(out) == sorted([*theirs, f".partial-{writer.tag}"])
    writer.abandon()
    assert files(out) == theirs


def test_a_crash_part_way_leaves_nothing_in_the_bucket(s3_dataset, audio_bucket):
    out = in_data_bucket(s3_dataset, "crashed")

    def crash_on_first_progress(line: str) -> None:
        if "tracks," in line:
            raise KeyboardInterrupt

    config = PrepareConfig(source=audio_bucket, out=out)
    with pytest.raises(KeyboardInterrupt):
        prepare(config, progress=crash_on_first_progress)
    assert files(out) == []


@contextlib.contextmanager
def store_refusing(
    name: str, refused: Callable[[int], bool], whole_size: int | None = None
) -> Iterator[None]:
    """The S3 server refuses (403) the n-th read (n from 0) of the object `name` when refused(n):
    every read, or with `whole_size` only reads of the whole object (header reads pass). pyarrow does
    not retry a 403 (a 503 it retries 30 times, ~10 s), so each refusal reaches genre at once."""
    original = S3Response.key_response
    reads = itertools.count()

    def key_response(self, request, full_url, headers):
        counted = whole_size is None or request.headers.get("range") == f"bytes=0-{whole_size - 1}"
        ours = request.method == "GET" and urlsplit(full_url).path.endswith(f"/{name}")
        if ours and counted and refused(next(reads)):
            return 403, {}, ACCESS_DENIED
        return original(self, request, full_url, headers)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3Response, "key_response", key_response)
        yield


def test_a_header_the_storage_refuses_to_send_is_a_storage_error_not_a_reject(audio_bucket):
    # The header is read inside soundfile, whose read callback swallows the error: without care it
    # surfaced as "Format not recognised" and the track became a reject.
    with store_refusing("genre0.00001.wav", lambda n: True), pytest.raises(StorageReadError) as refused:
        probe_audio(below(audio_bucket, "genre0", "genre0.00001.wav"), min_seconds=1.0)
    assert "ACCESS_DENIED" in str(refused.value) and "genre0.00001.wav" in str(refused.value)


def test_a_read_that_fails_once_costs_no_track(s3_dataset, audio_bucket, tiny_audio):
    track = tiny_audio / "genre0" / "genre0.00001.wav"
    out = in_data_bucket(s3_dataset, "outage")
    with store_refusing(track.name, lambda n: n == 0, whole_size=track.stat().st_size):
        prepare(PrepareConfig(source=audio_bucket, out=out, features=S3_FEATURES), progress=lambda _: None)
    manifest = read_manifest(out)
    assert all("genre0.00001" not in reject["path"] for reject in manifest["rejects"])
    assert manifest["counts"] == read_manifest(s3_dataset.data)["counts"]


def test_audio_the_storage_keeps_refusing_stops_the_run_and_keeps_nothing(
    s3_dataset, audio_bucket, tiny_audio
):
    # Not a reject: a dataset silently missing tracks that were there is worse than no dataset.
    track = tiny_audio / "genre0" / "genre0.00001.wav"
    out = in_data_bucket(s3_dataset, "refused")
    with (
        store_refusing(track.name, lambda n: True, whole_size=track.stat().st_size),
        pytest.raises(UserInputError) as refused,
    ):
        prepare(PrepareConfig(source=audio_bucket, out=out, features=S3_FEATURES), progress=lambda _: None)
    message = str(refused.value)
    assert message.startswith("cannot read s3://") and "genre0.00001.wav" in message, message
    assert "ACCESS_DENIED" in message and "(3 attempts)" in message, message
    assert "nothing was kept" in message and "\n" not in message and "genre-secret" not in message
    assert files(out) == []


def test_a_prefix_holding_other_files_is_never_written_into(s3_endpoint, audio_bucket):
    query = bucket(s3_endpoint, "genre-mine")
    out = f"s3://{CREDENTIALS}genre-mine/papers?{query}"
    put(below(out, "draft.txt"), b"precious")
    with pytest.raises(UserInputError, match="is not empty and is not a genre dataset; choose another"):
        prepare(PrepareConfig(source=audio_bucket, out=out, overwrite=True), progress=lambda _: None)
    assert files(out) == ["draft.txt"]


def test_src_and_out_nested_in_one_bucket_are_refused(audio_bucket):
    with pytest.raises(
        UserInputError, match=r"OUT 's3://genre-key:\*\*\*@genre-audio/music/data\?.*' is inside SRC"
    ):
        prepare(PrepareConfig(source=audio_bucket, out=below(audio_bucket, "data")), progress=lambda _: None)


def test_a_bucket_that_does_not_exist_is_a_one_line_error(s3_endpoint, audio_bucket, tmp_path, capsys):
    missing = f"s3://{CREDENTIALS}no-such-bucket/audio?{urlencode(s3_endpoint)}"
    assert main(["prepare", missing, str(tmp_path / "data")]) == 2
    assert "genre prepare: error: source 's3://genre-key:***@no-such-bucket/audio" in last_error(capsys)
    assert main(["prepare", audio_bucket, missing]) == 2
    assert "the bucket 'no-such-bucket' does not exist; create it first" in last_error(capsys)
    assert main(["sweep", missing, str(tmp_path / "run")]) == 2
    error = last_error(capsys)
    assert "is not a prepared dataset" in error and "genre-secret" not in error
