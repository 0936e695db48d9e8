"""What a 3-node OpenBao raft cluster does, as SPEC §11 states it: the facts that per-node
preflight, verification, repair and status are built on. Every probe of one node is sent
with request forwarding off, and the raft node id header proves which node answered."""

from __future__ import annotations

import hashlib
import shutil
import time
from functools import partial
from typing import Any

import httpx
import pytest

from reconciler.demo.examples.plugins.build import BuiltPlugin
from tests.cluster import (
    RAFT_NODE_ID_HEADER,
    SERVER_STABILIZATION_TIME,
    Cluster,
    ClusterNode,
    json_data,
    wait_until,
)

pytestmark = pytest.mark.cluster


def answered_by(answer: httpx.Response) -> str:
    return str(answer.headers.get(RAFT_NODE_ID_HEADER, ""))


def register(cluster: Cluster, node: ClusterNode, plugin: BuiltPlugin) -> httpx.Response:
    with cluster.http(node) as http:
        return http.put(
            f"/v1/sys/plugins/catalog/{plugin.type}/{plugin.name}",
            json={"sha256": plugin.sha256, "command": plugin.command, "version": plugin.version},
        )


def catalog_read(
    cluster: Cluster, node: ClusterNode, name: str, version: str, kind: str = "secret"
) -> httpx.Response:
    with cluster.http(node, forward=False) as http:
        answer = http.get(f"/v1/sys/plugins/catalog/{kind}/{name}", params={"version": version})
    assert answered_by(answer) == node.node_id
    return answer


def catalog_sha256(
    cluster: Cluster, node: ClusterNode, name: str, version: str, kind: str = "secret"
) -> str | None:
    """The sha256 the node's catalog holds for `version`; None while it answers 404."""
    answer = catalog_read(cluster, node, name, version, kind)
    return None if answer.status_code == 404 else str(json_data(answer)["sha256"])


def wait_catalog_everywhere(cluster: Cluster, name: str, version: str, sha256: str) -> None:
    """Standbys answer 404 for a version registered a moment ago (replication lag)."""
    for node in cluster.nodes:
        wait_until(partial(_catalog_holds, cluster, node, name, version, sha256))


def _catalog_holds(
    cluster: Cluster, node: ClusterNode, name: str, version: str, sha256: str, kind: str = "secret"
) -> bool:
    return catalog_sha256(cluster, node, name, version, kind) == sha256


def mount_entry(cluster: Cluster, node: ClusterNode, path: str) -> dict[str, Any] | None:
    """The node's own mount table entry for `path`, None when it has none (yet)."""
    with cluster.http(node, forward=False) as http:
        answer = http.get("/v1/sys/mounts")
    assert answered_by(answer) == node.node_id
    entry: dict[str, Any] | None = json_data(answer).get(f"{path}/")
    return entry


def probe(cluster: Cluster, node: ClusterNode, mount: str) -> httpx.Response:
    """The mount's `info` path, answered by this node's own plugin process."""
    with cluster.http(node, forward=False) as http:
        answer = http.get(f"/v1/{mount}/info")
    assert answered_by(answer) == node.node_id
    return answer


def running(cluster: Cluster, node: ClusterNode, mount: str) -> tuple[str, int] | None:
    """(version, pid) of the plugin process serving `mount` on `node`; None if it does not."""
    answer = probe(cluster, node, mount)
    if answer.status_code != 200:
        return None
    data = answer.json()["data"]
    return str(data["version"]), int(data["pid"])


def wait_serving(
    cluster: Cluster,
    node: ClusterNode,
    mount: str,
    version: str,
    *,
    not_process: tuple[str, int] | None = None,
) -> tuple[str, int]:
    """Wait until `node` serves `mount` at `version` from another process than `not_process`."""

    def serving() -> tuple[str, int] | None:
        now = running(cluster, node, mount)
        return None if now is None or now[0] != version or now == not_process else now

    return wait_until(serving)


def mount_demo_kv(cluster: Cluster, path: str = "apps") -> dict[str, tuple[str, int]]:
    """Register demo-kv v1, mount it, wait until every node serves it; node id -> (version, pid)."""
    v1 = cluster.plugins[("demo-kv", "v1.0.0")]
    assert register(cluster, cluster.active(), v1).status_code == 204
    wait_catalog_everywhere(cluster, "demo-kv", "v1.0.0", v1.sha256)
    with cluster.http(cluster.active()) as http:
        answer = http.post(
            f"/v1/sys/mounts/{path}",
            json={"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}},
        )
    assert answer.status_code == 204, answer.text
    return {node.node_id: wait_serving(cluster, node, path, "v1.0.0") for node in cluster.nodes}


def upgrade_to_v2(cluster: Cluster, path: str = "apps") -> None:
    """Register demo-kv v2 and tune the mount to it (nothing reloaded yet)."""
    v2 = cluster.plugins[("demo-kv", "v2.0.0")]
    assert register(cluster, cluster.active(), v2).status_code == 204
    wait_catalog_everywhere(cluster, "demo-kv", "v2.0.0", v2.sha256)
    with cluster.http(cluster.active()) as http:
        answer = http.post(f"/v1/sys/mounts/{path}/tune", json={"plugin_version": "v2.0.0"})
    assert answer.status_code == 204, answer.text


def reload(cluster: Cluster, node: ClusterNode, mount: str, **extra: str) -> httpx.Response:
    with cluster.http(node) as http:
        return http.put("/v1/sys/plugins/reload/backend", json={"mounts": [mount], **extra})


def running_entry(cluster: Cluster, node: ClusterNode, mount: str) -> tuple[str, str]:
    """What the node's own mount table says runs: (running_plugin_version, running_sha256)."""
    entry = mount_entry(cluster, node, mount)
    assert entry is not None
    return entry["running_plugin_version"], entry["running_sha256"]


def spoil(node: ClusterNode, plugin: BuiltPlugin, content_of: BuiltPlugin) -> None:
    """Give the node's file of `plugin` another plugin's content: right name, wrong sha256."""
    directory = node.plugin_directory
    shutil.copy(directory / content_of.command, directory / plugin.command)


def restore(node: ClusterNode, plugin: BuiltPlugin, cluster: Cluster) -> None:
    """Put the right file back (from a node that has it)."""
    source = next(n for n in cluster.nodes if n is not node).plugin_directory / plugin.command
    shutil.copy(source, node.plugin_directory / plugin.command)  # executable, too


def every_earlier_reload_handled(cluster: Cluster, barrier: dict[str, tuple[str, int]]) -> None:
    """Return once every node has handled every reload asked for before this call.

    Waiting a while and seeing nothing change proves little on a loaded machine. Instead a
    global reload of a second mount, `barrier`, goes to the active and is awaited on every
    node: standbys handle global reloads in the order the active issued them, so whatever an
    earlier request set off on any node has happened by then.
    """
    assert reload(cluster, cluster.active(), "barrier", scope="global").status_code == 200
    for node in cluster.nodes:
        wait_serving(cluster, node, "barrier", "v1.0.0", not_process=barrier[node.node_id])


# --------------------------------------------------------------------------
# Nodes, leader, forwarding
# --------------------------------------------------------------------------


def test_health_tells_the_active_from_the_standbys_and_each_node_names_itself(
    cluster: Cluster,
) -> None:
    active = cluster.active()
    for node in cluster.nodes:
        with cluster.http(node, forward=False) as http:
            health = http.get("/v1/sys/health")
            leader = http.get("/v1/sys/leader")
        assert answered_by(health) == node.node_id
        assert health.status_code == (200 if node is active else 429)
        assert (health.json()["standby"], health.json()["sealed"]) == (node is not active, False)
        assert answered_by(leader) == node.node_id
        assert leader.json()["is_self"] is (node is active)
        assert leader.json()["leader_address"] == active.address


def test_ha_status_lists_every_node_and_is_answered_by_the_active(cluster: Cluster) -> None:
    active = cluster.active()
    for node in cluster.nodes:
        with cluster.http(node) as http:
            answer = http.get("/v1/sys/ha-status")
        # Forwarded: with the active down, no standby can list the nodes.
        assert answered_by(answer) == active.node_id
        listed = json_data(answer)["nodes"]
        assert {n["api_address"] for n in listed} == {n.address for n in cluster.nodes}
        assert {n["cluster_address"] for n in listed} == {n.cluster_address for n in cluster.nodes}
        assert [n["api_address"] for n in listed if n["active_node"]] == [active.address]
        assert {n["version"] for n in listed} == {listed[0]["version"]}
        assert listed[0]["version"].startswith("2.")
    standby = cluster.standbys()[0]
    with cluster.http(standby, forward=False) as http:
        answer = http.get("/v1/sys/ha-status")
    assert answer.status_code == 307
    assert answer.headers["Location"] == f"{active.address}/v1/sys/ha-status"


def test_a_standby_reads_its_own_tables_and_forwards_writes_to_the_active(
    cluster: Cluster,
) -> None:
    active, standby, other = cluster.active(), *cluster.standbys()
    with cluster.http(standby) as http:
        forwarded = http.post("/v1/sys/mounts/kv-a", json={"type": "kv"})
    assert forwarded.status_code == 204, forwarded.text
    assert answered_by(forwarded) == active.node_id
    with cluster.http(standby, forward=False) as http:
        refused = http.post("/v1/sys/mounts/kv-b", json={"type": "kv"})
    assert refused.status_code == 307
    assert refused.headers["Location"] == f"{active.address}/v1/sys/mounts/kv-b"
    for node in cluster.nodes:
        wait_until(partial(mount_entry, cluster, node, "kv-a"))
        assert mount_entry(cluster, node, "kv-b") is None
    # Written through one standby, read back (after the replication lag) on the other.
    with cluster.http(standby) as http:
        assert http.put("/v1/kv-a/k", json={"v": "1"}).status_code == 204
    with cluster.http(other, forward=False) as http:

        def read_back() -> httpx.Response | None:
            answer = http.get("/v1/kv-a/k")
            return answer if answer.status_code == 200 else None

        read = wait_until(read_back)
    assert answered_by(read) == other.node_id
    assert read.json()["data"] == {"v": "1"}


def test_standbys_keep_a_moved_mount_at_its_old_path_until_sealed_and_unsealed(
    cluster: Cluster,
) -> None:
    """OpenBao 2.7.2: a sys/remount does not reach the standbys' tables (the planner's
    "did not follow the move" error rests on this; if a release fixes it, this fails)."""
    active = cluster.active()
    with cluster.http(active) as http:
        assert http.post("/v1/sys/mounts/kv-a", json={"type": "kv"}).status_code == 204
        assert http.put("/v1/kv-a/k", json={"v": "1"}).status_code == 204
    for node in cluster.nodes:
        wait_until(partial(mount_entry, cluster, node, "kv-a"))
    accessor = (mount_entry(cluster, active, "kv-a") or {})["accessor"]
    with cluster.http(active) as http:
        moved = http.post("/v1/sys/remount", json={"from": "kv-a", "to": "kv-moved"})
    assert moved.status_code == 200, moved.text
    wait_until(partial(mount_entry, cluster, active, "kv-moved"))
    time.sleep(STALE_AFTER)
    for standby in cluster.standbys():
        assert (mount_entry(cluster, standby, "kv-a") or {}).get("accessor") == accessor
        assert mount_entry(cluster, standby, "kv-moved") is None
        with cluster.http(standby, forward=False) as http:
            # It still serves the mount at the old path, from the same storage.
            assert http.get("/v1/kv-a/k").json()["data"] == {"v": "1"}
    for standby in cluster.standbys():
        cluster.seal_and_unseal(standby)
        entry = wait_until(partial(mount_entry, cluster, standby, "kv-moved"))
        assert entry["accessor"] == accessor
        assert mount_entry(cluster, standby, "kv-a") is None


# Far beyond the lag of a mount change on a standby (0.1-0.2 s, see above).
STALE_AFTER = 3.0


def test_the_loopback_settings_give_three_healthy_voters(cluster: Cluster) -> None:
    with cluster.http(cluster.active()) as http:
        settings = json_data(http.get("/v1/sys/storage/raft/autopilot/configuration"))
        state = json_data(http.get("/v1/sys/storage/raft/autopilot/state"))
        raft = json_data(http.get("/v1/sys/storage/raft/configuration"))
    # Only the API sets this one; the storage stanza has no such key.
    assert settings["server_stabilization_time"] == SERVER_STABILIZATION_TIME
    assert state["healthy"] is True
    assert state["failure_tolerance"] == 1
    assert sorted(state["voters"]) == sorted(n.node_id for n in cluster.nodes)
    assert state["leader"] == cluster.active().node_id
    assert {s["node_id"]: s["voter"] for s in raft["config"]["servers"]} == {
        n.node_id: True for n in cluster.nodes
    }


# --------------------------------------------------------------------------
# Catalog: shared table, per-node files
# --------------------------------------------------------------------------


def test_a_catalog_read_on_a_node_checks_the_file_is_there_not_its_content(
    cluster: Cluster,
) -> None:
    v1, v2 = cluster.plugins[("demo-kv", "v1.0.0")], cluster.plugins[("demo-kv", "v2.0.0")]
    active, missing, different = cluster.active(), *cluster.standbys()
    assert register(cluster, active, v1).status_code == 204
    wait_catalog_everywhere(cluster, "demo-kv", "v1.0.0", v1.sha256)
    (missing.plugin_directory / v1.command).unlink()
    spoil(different, v1, content_of=v2)

    assert catalog_read(cluster, active, "demo-kv", "v1.0.0").status_code == 200
    lacking = catalog_read(cluster, missing, "demo-kv", "v1.0.0")
    assert lacking.status_code == 500
    assert "lstat" in lacking.text
    assert str(missing.plugin_directory / v1.command) in lacking.text
    other_content = catalog_read(cluster, different, "demo-kv", "v1.0.0")
    assert other_content.status_code == 200
    assert json_data(other_content)["sha256"] == v1.sha256  # the catalog's, not the file's
    for node in cluster.nodes:  # an unregistered version is unknown everywhere
        assert catalog_read(cluster, node, "demo-kv", "v2.0.0").status_code == 404


def test_a_register_checks_the_file_on_the_active_and_on_the_node_that_receives_it(
    cluster: Cluster,
) -> None:
    v2 = cluster.plugins[("demo-kv", "v2.0.0")]
    active, lacking, other = cluster.active(), *cluster.standbys()
    (lacking.plugin_directory / v2.command).unlink()

    # Sent to a standby that lacks the file: that standby refuses it before forwarding.
    refused = register(cluster, lacking, v2)
    assert refused.status_code == 500
    assert answered_by(refused) == lacking.node_id
    assert str(lacking.plugin_directory / v2.command) in refused.text
    # Sent to the active (or through another standby): one standby lacking it goes unnoticed.
    accepted = register(cluster, other, v2)
    assert accepted.status_code == 204, accepted.text
    assert answered_by(accepted) == active.node_id

    def lacking_node_answers_500() -> bool:
        return catalog_read(cluster, lacking, "demo-kv", "v2.0.0").status_code == 500

    wait_until(lacking_node_answers_500)

    # The active lacking the file refuses the register whichever node receives it.
    with cluster.http(active) as http:
        deleted = http.delete(
            "/v1/sys/plugins/catalog/secret/demo-kv", params={"version": "v2.0.0"}
        )
    assert deleted.status_code == 204
    restore(lacking, v2, cluster)
    (active.plugin_directory / v2.command).unlink()
    for node in (other, active):
        answer = register(cluster, node, v2)
        assert answer.status_code == 500
        assert answered_by(answer) == active.node_id
        assert str(active.plugin_directory / v2.command) in answer.text


def test_a_mount_enabled_while_a_standby_lacks_the_file_is_dead_on_that_standby_only(
    cluster: Cluster,
) -> None:
    v1, v2 = cluster.plugins[("demo-kv", "v1.0.0")], cluster.plugins[("demo-kv", "v2.0.0")]
    active, lacking, other = cluster.active(), *cluster.standbys()
    for plugin in (v1, v2):
        assert register(cluster, active, plugin).status_code == 204
        wait_catalog_everywhere(cluster, "demo-kv", plugin.version, plugin.sha256)
    (lacking.plugin_directory / v1.command).unlink()
    enable = {"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}}

    # Like a register, an enable sent to that standby is refused there, before forwarding.
    with cluster.http(lacking) as http:
        refused = http.post("/v1/sys/mounts/apps", json=enable)
    assert refused.status_code == 400
    assert answered_by(refused) == lacking.node_id
    assert str(lacking.plugin_directory / v1.command) in refused.text

    with cluster.http(active) as http:
        assert http.post("/v1/sys/mounts/apps", json=enable).status_code == 204
    for node in (active, other):
        wait_serving(cluster, node, "apps", "v1.0.0")

    def listed_there() -> dict[str, Any] | None:
        return mount_entry(cluster, lacking, "apps")

    wait_until(listed_there)
    assert running_entry(cluster, lacking, "apps") == ("", "")
    assert "backend is nil" in probe(cluster, lacking, "apps").text

    # A tune naming a version whose file the receiving standby lacks: refused there too.
    (other.plugin_directory / v2.command).unlink()
    with cluster.http(other) as http:
        tune = http.post("/v1/sys/mounts/apps/tune", json={"plugin_version": "v2.0.0"})
    assert tune.status_code == 400
    assert answered_by(tune) == other.node_id
    assert str(other.plugin_directory / v2.command) in tune.text


def test_re_registering_a_version_with_another_sha_restarts_nothing(cluster: Cluster) -> None:
    before = mount_demo_kv(cluster)
    barrier = mount_demo_kv(cluster, "barrier")
    v1 = cluster.plugins[("demo-kv", "v1.0.0")]
    content = (cluster.nodes[0].plugin_directory / v1.command).read_bytes() + b"# rebuilt\n"
    for node in cluster.nodes:
        (node.plugin_directory / v1.command).write_bytes(content)
    new_sha = hashlib.sha256(content).hexdigest()
    with cluster.http(cluster.active()) as http:
        answer = http.put(
            "/v1/sys/plugins/catalog/secret/demo-kv",
            json={"sha256": new_sha, "command": v1.command, "version": v1.version},
        )
    assert answer.status_code == 204, answer.text
    wait_catalog_everywhere(cluster, "demo-kv", "v1.0.0", new_sha)
    every_earlier_reload_handled(cluster, barrier)
    for node in cluster.nodes:
        assert running(cluster, node, "apps") == before[node.node_id]
        assert running_entry(cluster, node, "apps") == ("v1.0.0", v1.sha256)


# --------------------------------------------------------------------------
# Mounts and reloads: one plugin process per node
# --------------------------------------------------------------------------


def test_every_node_serves_a_mount_from_its_own_plugin_process_and_reports_it(
    cluster: Cluster,
) -> None:
    served = mount_demo_kv(cluster)
    v1 = cluster.plugins[("demo-kv", "v1.0.0")]
    assert {version for version, _ in served.values()} == {"v1.0.0"}
    assert len({pid for _, pid in served.values()}) == len(cluster.nodes)
    for node in cluster.nodes:
        assert running_entry(cluster, node, "apps") == ("v1.0.0", v1.sha256)


def test_an_auth_mount_is_served_and_reported_per_node_like_a_secrets_mount(
    cluster: Cluster,
) -> None:
    plugin = cluster.plugins[("demo-auth", "v1.0.0")]
    assert register(cluster, cluster.active(), plugin).status_code == 204
    for node in cluster.nodes:
        wait_until(
            partial(_catalog_holds, cluster, node, "demo-auth", "v1.0.0", plugin.sha256, "auth")
        )
    with cluster.http(cluster.active()) as http:
        enabled = http.post(
            "/v1/sys/auth/static",
            json={"type": "demo-auth", "config": {"plugin_version": "v1.0.0"}},
        )
    assert enabled.status_code == 204, enabled.text
    served = {n.node_id: wait_serving(cluster, n, "auth/static", "v1.0.0") for n in cluster.nodes}
    assert len({pid for _, pid in served.values()}) == len(cluster.nodes)
    for node in cluster.nodes:
        with cluster.http(node, forward=False) as http:
            table = http.get("/v1/sys/auth")
        assert answered_by(table) == node.node_id
        entry = json_data(table)["static/"]
        assert (entry["running_plugin_version"], entry["running_sha256"]) == (
            "v1.0.0",
            plugin.sha256,
        )
    target = cluster.standbys()[0]
    reloaded = reload(cluster, target, "auth/static")
    assert reloaded.status_code == 200, reloaded.text
    assert answered_by(reloaded) == target.node_id
    assert running(cluster, target, "auth/static") not in (None, served[target.node_id])


def test_a_reload_without_scope_touches_only_the_node_that_receives_it(cluster: Cluster) -> None:
    before = mount_demo_kv(cluster)
    barrier = mount_demo_kv(cluster, "barrier")
    target = cluster.standbys()[0]
    answer = reload(cluster, target, "apps")
    assert answer.status_code == 200, answer.text
    assert answered_by(answer) == target.node_id  # not forwarded
    # The receiving node has restarted its plugin process by the time it answers.
    after = running(cluster, target, "apps")
    assert after is not None
    assert after[0] == "v1.0.0"
    assert after != before[target.node_id]
    every_earlier_reload_handled(cluster, barrier)
    for node in cluster.nodes:
        if node is not target:
            assert running(cluster, node, "apps") == before[node.node_id]


def test_a_failed_local_reload_leaves_the_mount_dead_but_its_running_fields_unchanged(
    cluster: Cluster,
) -> None:
    mount_demo_kv(cluster)
    v1, v2 = cluster.plugins[("demo-kv", "v1.0.0")], cluster.plugins[("demo-kv", "v2.0.0")]
    broken = cluster.standbys()[0]
    spoil(broken, v1, content_of=v2)

    answer = reload(cluster, broken, "apps")
    assert answer.status_code == 400
    assert answered_by(answer) == broken.node_id
    assert "checksums did not match" in answer.text
    nil = probe(cluster, broken, "apps")
    assert nil.status_code == 404
    assert "backend is nil" in nil.text
    # Only a probe tells: the mount table still names what ran before.
    assert running_entry(cluster, broken, "apps") == ("v1.0.0", v1.sha256)


def test_a_global_reload_reloads_the_active_before_answering_and_standbys_soon_after(
    cluster: Cluster,
) -> None:
    before = mount_demo_kv(cluster)
    active, receiver, other = cluster.active(), *cluster.standbys()
    answer = reload(cluster, receiver, "apps", scope="global")
    assert answer.status_code == 200, answer.text
    assert answered_by(answer) == active.node_id  # forwarded to the active
    assert running(cluster, active, "apps") not in (None, before[active.node_id])
    for node in (receiver, other):
        wait_serving(cluster, node, "apps", "v1.0.0", not_process=before[node.node_id])
    reload_id = json_data(answer)["reload_id"]
    with cluster.http(active) as http:
        status = http.get("/v1/sys/plugins/reload/backend/status", params={"reload_id": reload_id})
    assert status.status_code == 404  # no way to ask how a global reload went


def test_a_global_reload_onto_a_bad_file_on_a_standby_answers_200_and_kills_the_mount_there(
    cluster: Cluster,
) -> None:
    mount_demo_kv(cluster)
    v1, v2 = cluster.plugins[("demo-kv", "v1.0.0")], cluster.plugins[("demo-kv", "v2.0.0")]
    active, healthy, broken = cluster.active(), *cluster.standbys()
    spoil(broken, v2, content_of=v1)
    upgrade_to_v2(cluster)

    answer = reload(cluster, active, "apps", scope="global")
    assert answer.status_code == 200, answer.text
    for node in (active, healthy):
        wait_serving(cluster, node, "apps", "v2.0.0")
        assert running_entry(cluster, node, "apps") == ("v2.0.0", v2.sha256)

    def emptied() -> bool:
        return running_entry(cluster, broken, "apps") == ("", "")

    wait_until(emptied)
    nil = probe(cluster, broken, "apps")
    assert nil.status_code == 404
    assert "backend is nil" in nil.text
    with cluster.http(broken, forward=False) as http:
        assert http.get("/v1/sys/health").status_code == 429  # health does not notice

    # A local reload repairs it once its file is right (and fails while it is not).
    still_bad = reload(cluster, broken, "apps")
    assert still_bad.status_code == 400
    assert "checksums did not match" in still_bad.text
    restore(broken, v2, cluster)
    repaired = reload(cluster, broken, "apps")
    assert repaired.status_code == 200, repaired.text
    assert answered_by(repaired) == broken.node_id
    assert (running(cluster, broken, "apps") or ("",))[0] == "v2.0.0"
    assert running_entry(cluster, broken, "apps") == ("v2.0.0", v2.sha256)


def test_a_global_reload_onto_a_bad_file_on_the_active_answers_400_and_spares_standbys(
    cluster: Cluster,
) -> None:
    before = mount_demo_kv(cluster)
    barrier = mount_demo_kv(cluster, "barrier")
    v1, v2 = cluster.plugins[("demo-kv", "v1.0.0")], cluster.plugins[("demo-kv", "v2.0.0")]
    active = cluster.active()
    upgrade_to_v2(cluster)
    spoil(active, v2, content_of=v1)  # after the register, which checks the active's file

    answer = reload(cluster, cluster.standbys()[0], "apps", scope="global")
    assert answer.status_code == 400
    assert "checksums did not match" in answer.text
    # The active's mount is dead, while its table still names the version it ran before.
    assert probe(cluster, active, "apps").status_code == 404
    assert running_entry(cluster, active, "apps") == ("v1.0.0", v1.sha256)
    every_earlier_reload_handled(cluster, barrier)
    for node in cluster.standbys():
        assert running(cluster, node, "apps") == before[node.node_id]

    # Tuning back to the old version and a global reload revive every node.
    with cluster.http(active) as http:
        tuned = http.post("/v1/sys/mounts/apps/tune", json={"plugin_version": "v1.0.0"})
    assert tuned.status_code == 204, tuned.text
    assert reload(cluster, active, "apps", scope="global").status_code == 200
    for node in cluster.nodes:
        wait_serving(cluster, node, "apps", "v1.0.0", not_process=before[node.node_id])


# --------------------------------------------------------------------------
# Failover and restart (they move the active and restart nodes: last)
# --------------------------------------------------------------------------


def test_killing_the_active_elects_another_and_the_killed_node_comes_back_sealed(
    cluster: Cluster,
) -> None:
    old = cluster.active()
    old.stop(kill=True)

    def new_active() -> ClusterNode | None:
        return next((n for n in cluster.nodes if n.running and _is_active(cluster, n)), None)

    assert wait_until(new_active) is not old

    old.start()
    with httpx.Client(base_url=old.address, timeout=5) as http:
        status = wait_until(partial(_answer_or_none, http, "/v1/sys/seal-status"))
    assert status.json()["sealed"] is True
    cluster.unseal(old)
    cluster.wait_healthy()


def test_the_raft_node_id_header_needs_its_setting(cluster: Cluster) -> None:
    node = cluster.standbys()[0]
    node.stop()
    node.write_config(raft_node_id_header=False)
    try:
        cluster.restart(node)
        with cluster.http(node, forward=False) as http:
            assert RAFT_NODE_ID_HEADER not in http.get("/v1/sys/health").headers
    finally:
        node.stop()
        node.write_config()
        cluster.restart(node)
    with cluster.http(node, forward=False) as http:
        assert answered_by(http.get("/v1/sys/health")) == node.node_id


def _is_active(cluster: Cluster, node: ClusterNode) -> bool:
    try:
        with cluster.http(node, forward=False) as http:
            return http.get("/v1/sys/health").status_code == 200
    except httpx.HTTPError:
        return False


def _answer_or_none(http: httpx.Client, path: str) -> httpx.Response | None:
    try:
        return http.get(path)
    except httpx.HTTPError:
        return None
