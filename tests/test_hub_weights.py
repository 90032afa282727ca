"""ImageNet weights from the Hugging Face hub: offline mode, HF_ENDPOINT, proxies, the cache, short waits.

The hub is a real HTTP server on 127.0.0.1 that answers huggingface_hub's HEAD and GET on
/{repo}/resolve/main/{file} the way huggingface.co does for a file it holds.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save

from data_pipeline.errors import UserInputError
from genre.models import create_model, resolve_weights
from genre.models.pretrained import HUB_FILE, KNOWN_WEIGHTS

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class FakeHub:
    """huggingface.co's resolve endpoint for `files` ({repo_id: model.safetensors}); what it was asked."""

    def __init__(self, files: dict[str, bytes]) -> None:
        blobs = {f"/{repo}/resolve/main/{HUB_FILE}": content for repo, content in files.items()}
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                requests.append(f"{self.command} {self.path}")
                # Asked as a proxy, the path is the whole URL.
                content = blobs.get(urlparse(self.path).path)
                if content is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                sha256 = hashlib.sha256(content).hexdigest()
                self.send_response(200)
                # What huggingface_hub needs to cache a file: the commit, the blob's id, its size.
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{sha256}"')
                self.send_header("X-Linked-Etag", f'"{sha256}"')
                self.send_header("X-Linked-Size", str(len(content)))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if body:
                    self.wfile.write(content)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()


@pytest.fixture(scope="module")
def imagenet() -> dict[str, dict[str, torch.Tensor]]:
    """State dicts in timm's names, as the hub's repositories hold them (randomly initialised)."""
    import timm

    torch.manual_seed(0)
    vgg = timm.create_model("vgg11", pretrained=False).state_dict()
    # genre drops VGG's 500 MB classifier: served here under its timm names, but shrunk.
    vgg = {k: v if k.startswith("features.") else v.flatten()[:4].clone() for k, v in vgg.items()}
    return {
        "efficientnet_b0": timm.create_model("efficientnet_b0", pretrained=False).state_dict(),
        "vgg11": vgg,
    }


@pytest.fixture
def hub(imagenet) -> Iterator[FakeHub]:
    served = FakeHub({KNOWN_WEIGHTS[name].hub_repo: save(state) for name, state in imagenet.items()})
    yield served
    served.stop()


@pytest.fixture(autouse=True)
def hub_environment(monkeypatch, tmp_path) -> Iterator[Path]:
    """Online, no proxy, empty caches under tmp_path; HF_HUB_CACHE is the folder yielded."""
    for name in (*PROXY_VARIABLES, *(v.lower() for v in PROXY_VARIABLES)):
        monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    # huggingface_hub's HTTP client reads the proxy variables when it is made: make it anew.
    huggingface_hub.close_session()
    yield tmp_path / "hf-home" / "hub"
    huggingface_hub.close_session()


def refuse_network(monkeypatch) -> None:
    """From here on, any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_offline_mode_with_nothing_cached_trains_from_scratch_under_auto_without_asking_the_network(
    monkeypatch, caplog
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refuse_network(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert resolve_weights("efficientnet_b0", "auto", model="efficientnet_b0") is None
    (warning,) = warnings_of(caplog)
    assert "HF_HUB_OFFLINE is set" in warning and warning.endswith("training from scratch")


def test_offline_mode_with_nothing_cached_stops_pretrained_yes_saying_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refuse_network(monkeypatch)
    with pytest.raises(UserInputError) as stopped:
        resolve_weights("vgg11", "yes", model="vgg11")
    message = str(stopped.value)
    assert "HF_HUB_OFFLINE is set" in message and "\n" not in message
    assert "timm/vgg11.tv_in1k" in message and "pass --weights FOLDER, or pass --pretrained no" in message


def test_efficientnet_weights_download_from_hf_endpoint_into_the_cache_and_load(
    monkeypatch, hub, imagenet, hub_environment
):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    source = resolve_weights("efficientnet_b0", "yes")
    assert source is not None and source.kind == "hub"
    assert Path(source.location).is_relative_to(hub_environment)
    served = imagenet["efficientnet_b0"]
    state = create_model("efficientnet_b0", weights=source).net.state_dict()
    torch.testing.assert_close(state["conv_stem.weight"], served["conv_stem.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(state["blocks.3.0.conv_pw.weight"], served["blocks.3.0.conv_pw.weight"])


def test_vgg_weights_download_from_hf_endpoint_and_fill_every_convolution(
    monkeypatch, hub, imagenet, hub_environment
):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    source = resolve_weights("vgg11", "yes")
    assert source is not None and source.kind == "hub"
    assert Path(source.location).is_relative_to(hub_environment)
    served = imagenet["vgg11"]
    features = create_model("vgg11", weights=source).net.features.state_dict()
    assert_every_convolution_is(features, served)


def test_downloaded_weights_are_found_in_the_cache_once_the_hub_is_gone_and_offline_is_set(monkeypatch, hub):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    downloaded = resolve_weights("efficientnet_b0", "yes")
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refuse_network(monkeypatch)
    cached = resolve_weights("efficientnet_b0", "yes")
    assert cached is not None and cached.kind == "cache" and cached.location == downloaded.location


def test_an_endpoint_where_nothing_listens_fails_within_seconds_saying_so(monkeypatch, caplog):
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert resolve_weights("vgg11", "auto") is None
    assert time.monotonic() - started < 2
    (warning,) = warnings_of(caplog)
    assert f"{endpoint} unreachable" in warning


def test_an_endpoint_that_never_answers_is_given_up_after_the_etag_timeout(monkeypatch):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        started = time.monotonic()
        with pytest.raises(UserInputError, match=f"{endpoint} did not answer within 1 s"):
            resolve_weights("efficientnet_b0", "yes")
        assert time.monotonic() - started < 3


def test_an_http_error_from_the_hub_is_the_reason_given(monkeypatch):
    empty = FakeHub({})
    try:
        monkeypatch.setenv("HF_ENDPOINT", empty.url)
        with pytest.raises(UserInputError, match="answered HTTP 404"):
            resolve_weights("efficientnet_b0", "yes")
    finally:
        empty.stop()


def test_requests_go_through_the_proxy_the_environment_names(monkeypatch, hub):
    # The fake hub serves as the proxy too: asked for a whole URL, it answers for its path.
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.example.invalid")
    monkeypatch.setenv("HTTP_PROXY", hub.url)
    huggingface_hub.close_session()
    source = resolve_weights("efficientnet_b0", "yes")
    assert source is not None and source.kind == "hub"
    asked = f"http://hub.example.invalid/timm/efficientnet_b0.ra_in1k/resolve/main/{HUB_FILE}"
    assert f"HEAD {asked}" in hub.requests and f"GET {asked}" in hub.requests


def test_an_unreachable_proxy_is_named_in_the_reason(monkeypatch):
    proxy = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.example.invalid")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    huggingface_hub.close_session()
    with pytest.raises(UserInputError, match=f"proxy {proxy}"):
        resolve_weights("vgg11", "yes")


def assert_every_convolution_is(features: dict, imagenet: dict) -> None:
    """genre's VGG11 `features` hold each of timm's conv tensors, the stem summed to one channel."""
    convolutions = [k for k in imagenet if k.startswith("features.")]
    assert len(convolutions) == 16  # VGG11: 8 convolutions, a weight and a bias each
    for key in convolutions:
        expected = imagenet[key]
        if key == "features.0.weight":
            expected = expected.sum(1, keepdim=True)  # one input channel: the RGB kernels summed
        torch.testing.assert_close(features[key.removeprefix("features.")], expected)
