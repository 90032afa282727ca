"""Which Ray a `genre` command uses, and keeping a Ray that genre starts on 127.0.0.1.

A command joins a cluster only when asked to: `--address`, else the `RAY_ADDRESS` variable (Ray's
own convention, set for example inside a Ray Job). Otherwise it starts a Ray of its own, and never
follows Ray's address file (/tmp/ray/ray_current_cluster): the file outlives a head stopped by a
signal, and joining a dead or dying head hangs for minutes.

Ray's local instance otherwise listens on every interface: it rewrites a node address of 127.0.0.1
to the machine's routable one, and its GCS, raylet, object manager and workers bind 0.0.0.0 (seen
with Ray 2.58 and `ss -ltnp`). Ray's single-node mode, the default on macOS and Windows, keeps the
node address on loopback, and then every Ray server binds 127.0.0.1 only. Ray reads the switch once,
when it is first imported, so this must run before anything imports `ray`.

For a Ray that genre starts itself, and for a driver joining a head on a loopback address (e.g.
`cluster/local-head.sh`): without the mode such a driver takes the machine's routable address as its
own, and waits minutes for a GCS that listens on 127.0.0.1 only (seen). A driver that joins a
cluster on a routable address must keep a routable address, or the other nodes cannot reach the
objects it owns.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from data_pipeline.ray_internals import RAY_CLUSTER_MODE_VARIABLE  # "0": single-node mode, on loopback

# Ray's variable naming the cluster to join; it counts as --address.
RAY_ADDRESS_VARIABLE = "RAY_ADDRESS"


def requested_cluster(address: str | None) -> str | None:
    """The cluster to join: `address` (--address), else RAY_ADDRESS; None: start a Ray of genre's own."""
    return address or os.environ.get(RAY_ADDRESS_VARIABLE) or None


def keep_local_ray_on_loopback() -> None:
    """Put the Ray this process will start on loopback (call it before anything imports `ray`).

    A value the user set in the environment wins (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1` to let other
    machines join a Ray started by genre).
    """
    os.environ.setdefault(RAY_CLUSTER_MODE_VARIABLE, "0")


def is_loopback_address(address: str) -> bool:
    """Whether a cluster address (`host:port`, `ray://host:port`) names this machine's loopback."""
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name, or "auto": the cluster's own address
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)
