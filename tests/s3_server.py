"""A real S3 endpoint on loopback (moto's server) for the tests of s3:// locations, and its buckets.

A test module gets the `s3_endpoint` fixture by importing it: `from tests.s3_server import
s3_endpoint_fixture` (under another name than the fixture's, so that tests' arguments shadow nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer

# Credentials in the URI reach the Ray workers with it (a real cluster uses its nodes' own).
CREDENTIALS = "genre-key:genre-secret@"


@pytest.fixture(scope="module", name="s3_endpoint")
def s3_endpoint_fixture() -> Iterator[dict[str, str]]:
    """An S3 server on loopback (moto); yields the URI query options that point pyarrow at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {"endpoint_override": f"{host}:{port}", "scheme": "http", "region": "us-east-1"}
    server.stop()


def bucket(options: dict[str, str], name: str) -> str:
    """A new bucket on the endpoint; returns the URI query that reaches it."""
    query = urlencode(options)
    filesystem, _ = pafs.FileSystem.from_uri(f"s3://{CREDENTIALS}{name}?{query}&allow_bucket_creation=true")
    filesystem.create_dir(name)
    return query
