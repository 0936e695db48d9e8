"""Putting a scenario's faults in place, and taking them away again.

Binary faults change files in the nodes' plugin directories. Write faults strike
at the apply's k-th write: a SIGKILL through the executor's test-only switch, or,
for the others, a proxy in front of the node the apply talks to that counts the
writes passing through it and, at write k, answers 500 after forwarding, closes
the connection after forwarding (the answer is lost), or stops a node and starts
it again before it answers.
"""

from __future__ import annotations

import httpx

from tests.campaign.scenario import BINARY_FAULTS, Fault
from tests.cluster import Cluster, ClusterNode
from tests.helpers import WRITE_METHODS
from tests.lying_proxy import LoopbackProxy, ProxyHandler

# A file that exits at once: the plugin cannot start.
BROKEN_SCRIPT = b"#!/bin/sh\nexit 1\n"
_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


def binary_nodes(cluster: Cluster, fault: Fault) -> list[ClusterNode]:
    if fault.where == "all-nodes":
        return list(cluster.nodes)
    if fault.where == "active":
        return [cluster.active()]
    return [cluster.standbys()[0]]


def spoil_binary(cluster: Cluster, fault: Fault, plugin: tuple[str, str]) -> list[str]:
    """Break the file of `plugin` on the fault's nodes; returns their node ids."""
    assert fault.kind in BINARY_FAULTS
    built = cluster.plugins[plugin]
    # Another plugin's bytes (a file of the same kind, so it does run), read before
    # anything is spoiled: `cluster.plugins` points into one node's directory.
    other = next(
        p for key, p in sorted(cluster.plugins.items()) if key[0] == plugin[0] and key != plugin
    )
    other_bytes = other.path.read_bytes()
    spoiled = []
    for node in binary_nodes(cluster, fault):
        path = node.plugin_directory / built.command
        if fault.kind == "binary-missing":
            path.unlink()
        elif fault.kind == "binary-broken":
            path.write_bytes(BROKEN_SCRIPT)
        else:
            # A plugin that runs, with other bytes than the catalog's sha256 names.
            path.write_bytes(other_bytes)
        if path.exists():
            path.chmod(0o755)
        spoiled.append(node.node_id)
    return spoiled


def restore_binaries(cluster: Cluster) -> None:
    """Every node's plugin directory holds the example plugins again, byte for byte."""
    cluster.install_example_plugins()


class WriteFaultProxy(LoopbackProxy):
    """Forwards everything to `upstream`; at the k-th write, the fault strikes once."""

    def __init__(self, cluster: Cluster, upstream: ClusterNode, fault: Fault) -> None:
        self.cluster = cluster
        self.fault = fault
        self.writes = 0
        # Every write that passed: (method, path, body).
        self.sent: list[tuple[str, str, bytes]] = []
        self.fired = False
        self.struck: str = ""  # what was hit, for the report
        super().__init__(upstream.address, _Handler)

    def strikes(self, method: str) -> bool:
        """Count a write; True exactly once, at the fault's write."""
        if method not in WRITE_METHODS:
            return False
        with self._lock:
            self.writes += 1
            if self.fault.at_write < 1:
                return False
            if self.fired or self.writes != self.fault.at_write:
                return False
            self.fired = True
            return True

    def bounce_node(self) -> None:
        """Stop the standby or the active, start it again and wait until it is healthy."""
        if self.fault.kind == "stop-active":
            node = self.cluster.active()
        else:
            node = self.cluster.standbys()[0]
        self.struck += f", {node.node_id} stopped and restarted"
        node.stop()
        self.cluster.restart(node)


class _Handler(ProxyHandler):
    proxy: WriteFaultProxy

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        strike = self.proxy.strikes(self.command)
        if self.command in WRITE_METHODS:
            with self.proxy._lock:
                self.proxy.sent.append((self.command, self.path, body))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            answer = self.proxy._upstream.request(
                self.command, self.path, headers=headers, content=body
            )
        except httpx.HTTPError:
            self.close_connection = True  # the node is gone: so is the answer
            return
        if strike:
            kind = self.proxy.fault.kind
            self.proxy.struck = f"{self.command} {self.path}"
            if kind == "lost-answer":
                self.close_connection = True
                return
            if kind == "error-5xx":
                self._answer(500, b'{"errors":["injected: internal error"]}', "application/json")
                return
            self.proxy.bounce_node()
        self._answer(answer.status_code, answer.content, answer.headers.get("Content-Type"))

    do_GET = do_PUT = do_POST = do_DELETE = do_LIST = do_PATCH = _handle
