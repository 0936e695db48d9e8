"""Which nodes the tool talks to, and that a per-node read stays on its node (real cluster)."""

from __future__ import annotations

import httpx
import pytest

from reconciler.client import Client
from reconciler.errors import ApiError
from reconciler.nodes import Node, discover_nodes, is_cluster
from tests.cluster import Cluster


def _client(cluster: Cluster, address: str) -> Client:
    return Client(address, cluster.root_token)


def test_every_node_is_discovered_from_a_standby_with_the_active_first(cluster: Cluster) -> None:
    standby = cluster.standbys()[0]
    with _client(cluster, standby.address) as client:
        nodes = discover_nodes(client)
    assert nodes[0].address == cluster.active().address
    assert nodes[0].active and not any(n.active for n in nodes[1:])
    assert sorted(n.address for n in nodes) == sorted(n.address for n in cluster.nodes)
    assert is_cluster(nodes)


def test_given_addresses_win_over_discovery(cluster: Cluster) -> None:
    with _client(cluster, cluster.active().address) as client:
        given = [cluster.nodes[1].address + "/", cluster.nodes[1].address]
        assert discover_nodes(client, given) == [Node(address=cluster.nodes[1].address)]


def test_a_node_client_reads_from_that_node_and_never_forwards(cluster: Cluster) -> None:
    standby = cluster.standbys()[0]
    seen: list[str] = []

    def remember(response: httpx.Response) -> None:
        seen.append(response.headers.get("X-Vault-Raft-Node-Id", ""))

    with Client(
        cluster.active().address, cluster.root_token, event_hooks={"response": [remember]}
    ) as client:
        node = client.on_node(standby.address)
        node.list_mounts("secret")
        assert seen[-1] == standby.node_id
        # Writes only the active can do are refused on the node, not handed on.
        with pytest.raises(ApiError, match="cannot answer it itself"):
            node.enable_mount("secret", "never-created", {"type": "kv"})
        node.close()
        assert "never-created/" not in client.list_mounts("secret")
