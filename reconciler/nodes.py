"""The nodes of the server: one for a single server, every node of an HA cluster.

Each node of a cluster has its own plugin directory and its own plugin processes,
while the catalog and the mount tables are shared (standbys hold a copy that lags
the active node by up to a couple of seconds). What a node runs is only visible on
that node, so per-node reads go through `Client.on_node`, which never forwards.

The nodes come from `sys/ha-status`, unless given: by `--node` (repeatable) or the
file's `settings.nodes`, for when the addresses the cluster advertises are not
reachable from where the tool runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.client import Client
from reconciler.errors import ApiError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    """One node: its API address and whether it was the active node when listed."""

    address: str
    active: bool = False


def discover_nodes(client: Client, given: Sequence[str] = ()) -> list[Node]:
    """The nodes to read and verify, the active one first.

    `given` (addresses from the flag or the file) wins over discovery. A server
    without HA storage (a dev server) is one node: the client's own address.
    """
    if given:
        return [Node(address=address) for address in dict.fromkeys(a.rstrip("/") for a in given)]
    try:
        listed = client.ha_status()
    except ApiError as error:
        # No answer or a refused token says nothing about HA: the caller must know.
        if error.status is None or error.status == 403:
            raise
        log.debug("sys/ha-status unavailable (%s): treating %s as one node", error, client.address)
        listed = []
    nodes = [
        Node(address=str(entry["api_address"]).rstrip("/"), active=bool(entry.get("active_node")))
        for entry in listed
        if entry.get("api_address")
    ]
    if len(nodes) <= 1:
        return [Node(address=client.address, active=True)]
    nodes.sort(key=lambda node: (not node.active, node.address))
    return nodes


def is_cluster(nodes: Sequence[Node]) -> bool:
    """Whether there is more than one node to verify."""
    return len(nodes) > 1
