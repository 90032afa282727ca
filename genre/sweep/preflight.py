"""Before any trial starts: does every node of the cluster see the dataset and the run storage?

On several nodes, trials run where Ray places them and read DATA and write the run storage there. A
path on the head's own disk exists on the head only: trials elsewhere would fail late, or write
checkpoints nobody finds. This asks each live node, with a tiny task pinned to it, to read a token
the driver wrote (storage) and the dataset's manifest (DATA), and refuses the sweep if one cannot.
An object store (s3://, gs://) is reached by every node by name: neither DATA nor the storage there
needs asking.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from data_pipeline.errors import UserInputError
from data_pipeline.manifest import manifest_hash
from data_pipeline.storage import Storage, open_storage

# A first task on a fresh node may wait for its runtime environment (pip) to install.
PROBE_TIMEOUT_S = 900.0
PROBE_PREFIX = ".genre-shared-probe-"


class StorageUnreachable(UserInputError):
    """The run storage cannot be written from here (credentials, bucket, permissions)."""


def check_shared(data: str | Path, storage: Storage, progress: Callable[[str], None] = print) -> None:
    """Refuse, with what to do instead, a local DATA or storage that some live node does not see.

    An object store (s3://, gs://) is reached by every node by name; the storage there is only checked
    for being writable from here. A cluster that adds nodes later (autoscaling) is checked for the
    nodes alive now.
    """
    dataset = open_storage(data)
    probe = storage.child(f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    token = uuid.uuid4().hex
    try:
        storage.make_dirs()
        probe.write_bytes(token.encode())
    except OSError as error:
        raise StorageUnreachable(f"cannot write to the run storage {storage}: {error}") from None
    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        if len(nodes) < 2 or not (dataset.is_local or storage.is_local):
            return
        progress(f"checking that DATA and the run storage are the same on all {len(nodes)} nodes")
        data_folder = dataset.path if dataset.is_local else None
        expected_manifest = _manifest_digest(data_folder) if data_folder else None
        seen = _ask_every_node(nodes, data_folder, probe.path if storage.is_local else None)
    finally:
        probe.delete_file()

    blind_to_data = [ip for ip, (digest, _) in seen.items() if data_folder and digest != expected_manifest]
    blind_to_storage = [ip for ip, (_, found) in seen.items() if storage.is_local and found != token]
    problems = []
    if blind_to_data:
        problems.append(f"DATA {str(data)!r} is missing or different on node(s) {', '.join(blind_to_data)}")
    if blind_to_storage:
        problems.append(
            f"the run storage {str(storage)!r} (OUT unless --storage names another) is a path that "
            f"node(s) {', '.join(blind_to_storage)} do not share (a folder on the head's own disk?)"
        )
    if problems:
        raise UserInputError(
            "; ".join(problems)
            + ". On a cluster of several nodes, put DATA and OUT on storage every node mounts at the "
            "same path (NFS, EFS, Filestore), or in a bucket: DATA s3://... or gs://..., --storage s3://..."
        )


@ray.remote(num_cpus=0)
def _look(data: str | None, probe: str | None) -> tuple[str, str | None, str | None]:
    """Run on one node: this node's address, DATA's manifest digest, the probe's token."""
    found = Path(probe).read_text() if probe and Path(probe).is_file() else None
    return ray.util.get_node_ip_address(), _manifest_digest(data) if data else None, found


def _ask_every_node(
    nodes: list[dict], data: str | None, probe: str | None
) -> dict[str, tuple[str | None, str | None]]:
    refs = [
        _look.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        ).remote(data, probe)
        for node in nodes
    ]
    try:
        answers = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise UserInputError(
            f"not every node answered within {PROBE_TIMEOUT_S:.0f} s whether it sees DATA and the run "
            "storage; check the cluster's nodes (`ray status`)"
        ) from None
    # Several nodes may share an address (one machine); name each by address and node id.
    return {
        f"{ip} ({node['NodeID'][:8]})": (digest, found)
        for node, (ip, digest, found) in zip(nodes, answers, strict=True)
    }


def _manifest_digest(data: str) -> str | None:
    """DATA's manifest digest as this node sees it; None where the node has no such file."""
    try:
        return manifest_hash(data)
    except OSError:
        return None
