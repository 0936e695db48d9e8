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
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from reconciler import defaults
from reconciler.client import Client
from reconciler.errors import ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often a node that redirects instead of answering is asked again.
_REDIRECT_POLL = 0.2

# Clients already told that sys/ha-status is refused: one warning per run, not per read.
_WARNED: weakref.WeakSet[Client] = weakref.WeakSet()


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
        if error.status == 403:
            # A token scoped to a namespace cannot read root endpoints, and a root token's
            # policy may leave it out: it works as before clusters were known, and says
            # what that costs.
            if client.namespace:
                scoped = f"it is scoped to namespace {client.namespace}"
            else:
                scoped = "its policy does not grant read on sys/ha-status"
            if client not in _WARNED:
                _WARNED.add(client)
                log.warning(
                    "the token may not read sys/ha-status (%s): per-node checks are off; "
                    "name the nodes with --node or settings.nodes, and set reload_scope: "
                    "global on a cluster",
                    scoped,
                )
            return [Node(address=client.address, active=True)]
        # No answer says nothing about HA: the caller must know.
        if error.status is None:
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


def on_node(client: Client, node: Node, read: Callable[[Client], T]) -> T:
    """`read` with a client pinned to `node`.

    A standby that is not ready to serve reads yet (it has just joined, or restarted
    its plugins) redirects to the active node; it is asked again for a bounded time.
    """
    deadline = time.monotonic() + defaults.NODE_LAG_WAIT
    with client.on_node(node.address) as pinned:
        while True:
            try:
                return read(pinned)
            except ApiError as error:
                if error.status not in (307, 308) or time.monotonic() >= deadline:
                    raise
                log.debug("%s redirects (%s): asking again", node.address, error)
            time.sleep(_REDIRECT_POLL)
