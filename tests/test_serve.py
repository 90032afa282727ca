"""`genre serve`: audio POSTed over HTTP gets the answer `genre predict --json` gives for the file, requests
that arrive together share a batch, a bad request is a 4xx of its own and the server serves on."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import urlencode

import psutil
import pytest
import ray
from starlette.requests import Request

from data_pipeline.errors import UserInputError
from genre.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, main
from genre.predict import Predictor
from genre.run_folder import RunFolder
from genre.serve.app import ServeOptions, start_serving, stop_serving
from genre.serve.deployment import BATCH_SIZE_HEADER, GenreClassifier, ReplicaSetup
from genre.serve.uploads import UNNAMED_UPLOAD
from genre.train.checkpoints import read_checkpoint
from tests.audio_factory import make_clip
from tests.ray_nodes import LOOPBACK, free_port, listening_addresses, ray_environment, short_temp_dir
from tests.test_signals import Descendants, assert_clean_stop

# Small enough that a test sends a body over it in no time, large enough for the clips below.
BODY_LIMIT = 2 * 2**20
# Long enough that requests sent together from threads reach one batch on a busy 2-core machine.
BATCH_WAIT_S = 0.5
MAX_BATCH = 4
READY_WITHIN_S = 240


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict
    headers: Message


def post(url: str, body: bytes | None, name: str | None = None, method: str = "POST") -> Answer:
    target = f"{url}?{urlencode({'name': name})}" if name else url
    request = urllib.request.Request(target, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return Answer(response.status, json.loads(response.read()), response.headers)
    except urllib.error.HTTPError as error:
        return Answer(error.code, json.loads(error.read()), error.headers)


def post_together(url: str, bodies: dict[str, bytes]) -> dict[str, Answer]:
    """Every body POSTed at once from a thread of its own, each named by its key."""
    start = threading.Barrier(len(bodies))

    def send(name: str) -> Answer:
        start.wait()
        return post(url, bodies[name], name)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return dict(zip(bodies, pool.map(send, bodies), strict=True))


def assert_answers_as_predict(answer: Answer, predictor: Predictor, path: Path, name: str) -> None:
    """The answer is `genre predict --json`'s object for the file, `path` being the name it was sent as."""
    assert answer.status == 200, answer.body
    expected = {**predictor.predict_file(path).to_dict(), "path": name, "model": predictor.model_name}
    got = answer.body
    assert set(got) == set(expected)
    exact = ("path", "genre", "segments", "model")
    assert {k: got[k] for k in exact} == {k: expected[k] for k in exact}
    assert [t["genre"] for t in got["top"]] == [t["genre"] for t in expected["top"]]

    # Windows batched with other files' round like the file's alone, but for the last of 4 decimals.
    def probabilities(answer: dict) -> list[float]:
        return [answer["probability"], *(t["probability"] for t in answer["top"])]

    assert probabilities(got) == pytest.approx(probabilities(expected), abs=2e-4)


@dataclass(frozen=True)
class Served:
    url: str
    predictor: Predictor  # the same checkpoint, here: what `genre predict` answers


@pytest.fixture(scope="module")
def served(ray_session, six_model_run) -> Iterator[Served]:
    """One Serve application on the test session's Ray for the module: it takes tens of seconds to start."""
    out, _ = six_model_run
    checkpoint = RunFolder(out).best_checkpoint()
    options = ServeOptions(
        host="127.0.0.1",
        port=free_port(),
        replicas=1,
        gpus_per_replica=0.0,
        max_batch_size=MAX_BATCH,
        batch_wait_s=BATCH_WAIT_S,
        max_body_bytes=BODY_LIMIT,
    )
    start_serving(read_checkpoint(checkpoint), options)
    try:
        yield Served(options.url, Predictor(checkpoint, "cpu"))
    finally:
        stop_serving()


def test_the_command_serves_until_sigterm_on_loopback_then_exits_130_leaving_no_ray_process(
    six_model_run, tmp_path
):
    out, _ = six_model_run
    port = free_port()
    ray_tmp = short_temp_dir()
    process = subprocess.Popen(
        [sys.executable, "-m", "genre", "serve", "--run", str(out), "--model", "cnn4", "--port", str(port)],
        env=ray_environment(RAY_TMPDIR=ray_tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        with Descendants(process.pid) as family:
            ready = lines.get(timeout=READY_WITHIN_S).strip()
            assert ready.startswith("genre serve: cnn4 (") and f" at http://127.0.0.1:{port}/ " in ready, (
                ready
            )
            answer = post(f"http://127.0.0.1:{port}/", make_clip(tmp_path / "a.wav", 4.0).read_bytes())
            assert answer.status == 200 and answer.body["model"] == "cnn4", answer.body
            everyone = [psutil.Process(process.pid), *family.seen.values()]
            listening = {ip for ip, listened in listening_addresses(everyone) if listened == port}
            assert listening and listening <= LOOPBACK, listening
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            _, stderr = process.communicate(timeout=120)
        assert time.monotonic() - signalled < 60
        assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == "genre serve: interrupted (SIGTERM)", stderr[-3000:]
        assert_clean_stop(stderr)
        assert family.alive_after(15) == []
    finally:
        process.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_files_posted_together_are_batched_and_each_gets_what_predict_gives_it(served, tmp_path):
    files = {
        "mono.wav": make_clip(tmp_path / "mono.wav", 4.0, seed=1),
        "stereo.flac": make_clip(tmp_path / "stereo.flac", 5.0, sample_rate=44100, channels=2, seed=2),
        "stereo.mp3": make_clip(tmp_path / "stereo.mp3", 5.0, sample_rate=44100, channels=2, seed=3),
        "clip.ogg": make_clip(tmp_path / "clip.ogg", 3.0, format="OGG", subtype="VORBIS", seed=4),
        "16k.au": make_clip(tmp_path / "16k.au", 4.0, sample_rate=16000, seed=5),
    }
    answers = post_together(served.url, {name: path.read_bytes() for name, path in files.items()})
    for name, path in files.items():
        assert_answers_as_predict(answers[name], served.predictor, path, name)
    batch_sizes = [int(answer.headers[BATCH_SIZE_HEADER]) for answer in answers.values()]
    assert max(batch_sizes) > 1 and max(batch_sizes) <= MAX_BATCH, batch_sizes


def test_a_bad_file_among_good_ones_gets_its_own_4xx_and_the_server_answers_after(served, tmp_path):
    good = make_clip(tmp_path / "good.wav", 4.0, seed=6)
    bodies = {
        "good.wav": good.read_bytes(),
        "notes.txt": b"these are liner notes, not audio",
        "short.ogg": make_clip(tmp_path / "short.ogg", 1.0, format="OGG", subtype="VORBIS").read_bytes(),
        "cut.wav": good.read_bytes()[:2000],  # a header that promises more audio than follows
    }
    answers = post_together(served.url, bodies)
    assert_answers_as_predict(answers["good.wav"], served.predictor, good, "good.wav")
    assert answers["notes.txt"].status == 415
    assert answers["notes.txt"].body == {"error": "not decodable audio: Format not recognised."}
    assert answers["short.ogg"].status == 422
    assert answers["short.ogg"].body == {"error": "shorter than one 1.5 s window (1.00 s)"}
    assert answers["cut.wav"].status == 422 and "truncated file" in answers["cut.wav"].body["error"]
    after = post(served.url, good.read_bytes())
    assert_answers_as_predict(after, served.predictor, good, UNNAMED_UPLOAD)


def test_an_empty_body_is_400_and_one_over_the_limit_413(served):
    empty = post(served.url, b"")
    assert empty.status == 400 and set(empty.body) == {"error"} and "empty body" in empty.body["error"]
    large = post(served.url, bytes(BODY_LIMIT + 1))
    assert large.status == 413 and f"limit of {BODY_LIMIT} bytes" in large.body["error"]


def test_another_method_is_405_and_another_path_404(served, tmp_path):
    clip = make_clip(tmp_path / "clip.wav", 2.0).read_bytes()
    got = post(served.url, None, method="GET")
    assert got.status == 405 and got.headers["Allow"] == "POST" and set(got.body) == {"error"}
    elsewhere = post(served.url + "predict", clip)
    assert elsewhere.status == 404 and "POST the audio file to /" in elsewhere.body["error"]


def test_a_failure_while_predicting_is_that_requests_500_and_the_replica_answers_the_next(
    ray_session, six_model_run, tmp_path, monkeypatch
):
    out, _ = six_model_run
    # The deployment's class itself, in this process: a model that fails once is planted in it.
    replica = GenreClassifier.func_or_class(
        ReplicaSetup(read_checkpoint(RunFolder(out).best_checkpoint()), MAX_BATCH, 0.0, BODY_LIMIT)
    )
    predict_files = replica.predictor.predict_files
    failures = iter([RuntimeError("CUDA error: out of memory\nwhile predicting")])

    def fails_once(paths):
        for failure in failures:
            raise failure
        return predict_files(paths)

    monkeypatch.setattr(replica.predictor, "predict_files", fails_once)
    # Serve's batching runs in a replica only; it hands each caller of a batch that raised the exception.
    batch_of = GenreClassifier.func_or_class.predict_batch.__wrapped__

    async def batch_of_one(path: Path) -> tuple:
        (outcome,) = await batch_of(replica, [path])
        return outcome

    monkeypatch.setattr(replica, "predict_batch", batch_of_one)
    clip = make_clip(tmp_path / "clip.wav", 2.0).read_bytes()

    def request(body: bytes) -> Request:
        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "query_string": b"name=clip.wav",
            "headers": [],
        }
        return Request(scope, receive)

    async def two_requests() -> list:
        return [await replica(request(clip)), await replica(request(clip))]

    failed, answered = asyncio.run(two_requests())
    assert failed.status_code == 500
    reason = "RuntimeError: CUDA error: out of memory while predicting"  # on one line
    assert json.loads(failed.body) == {"error": f"the server could not predict this file: {reason}"}
    assert answered.status_code == 200 and json.loads(answered.body)["path"] == "clip.wav"
    assert list(replica.uploads.iterdir()) == []  # neither upload is left on the replica's disk


def test_a_second_serve_on_the_same_ray_is_refused_in_one_line(served, six_model_run):
    out, _ = six_model_run
    options = ServeOptions("127.0.0.1", free_port(), 1, 0.0, MAX_BATCH, BATCH_WAIT_S)
    with pytest.raises(UserInputError, match=r"^Ray Serve already runs on this Ray \(applications: genre\)"):
        start_serving(read_checkpoint(RunFolder(out).best_checkpoint()), options)
    assert post(served.url, b"").status == 400  # the first one still serves


def test_gpus_per_replica_on_a_ray_without_gpus_is_refused_in_one_line(ray_session, six_model_run):
    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this Ray has GPUs")
    out, _ = six_model_run
    options = ServeOptions("127.0.0.1", free_port(), 1, 0.5, MAX_BATCH, BATCH_WAIT_S)
    with pytest.raises(UserInputError, match=r"^--gpus-per-replica 0.5 asks for GPUs, but this Ray has none"):
        start_serving(read_checkpoint(RunFolder(out).best_checkpoint()), options)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--replicas", "0"], "--replicas must be at least 1, not 0"),
        (["--gpus-per-replica", "1.5"], "--gpus-per-replica above 1 must be a whole number"),
        (["--max-batch-size", "0"], "--max-batch-size must be at least 1, not 0"),
        (["--port", "70000"], "--port must be 1 to 65535, not 70000"),
    ],
)
def test_options_that_cannot_be_served_with_are_one_line_errors_before_ray_starts(
    flags, message, tmp_path, capsys
):
    assert main(["serve", "--run", str(tmp_path), *flags]) == EXIT_USER_ERROR
    assert capsys.readouterr().err.startswith(f"genre serve: error: {message}")
