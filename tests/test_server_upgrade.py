"""Upgrading the server from OpenBao 2.6.2 to 2.7.2, which no longer ships the built-in `ldap`
auth method and secrets engine (SPEC §14), on real servers of both releases.

Data kept: the mounts' data is written through the built-ins on 2.6.2
(`auth/<m>/users/alice`, `<m>/config`). The `ldap` stand-ins (example plugins that
speak no LDAP) read any key of the mount's storage as JSON, so after the override
— and after the upgrade — a read of `stored/user/alice` and `stored/config`
through the stand-in returns the very records the built-in wrote: the storage
survived the move, and the stand-in is the one that answers.

Two servers, each started once and only for its test, because an upgrade cannot be
undone: `old_server` (one node) is upgraded unprepared, `old_cluster` (three nodes)
is prepared and then rolled one node at a time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from reconciler.cli import STATUS_UNHEALTHY
from reconciler.client import Client
from reconciler.demo.devserver import find_bao
from reconciler.watch import Watcher, WatchOptions
from tests.cluster import Cluster, ClusterNode, wait_until
from tests.helpers import CliResult, CliRun, write_desired
from tests.releases import OLD_RELEASE

NEW_RELEASE = "2.7.2"
MOUNT = "ldap/"  # the auth mount (auth/ldap/) and the secrets mount (ldap/)
BIND_DN = "cn=admin,dc=example"


def cli(cluster: Cluster, *args: str) -> CliResult:
    env = {"BAO_ADDR": cluster.active().address, "BAO_TOKEN": cluster.root_token}
    result: CliResult = CliRun.invoke(args, env=env)
    return result


def replacements(cluster: Cluster, tmp_path: Path) -> Path:
    """The file that declares the stand-ins under the built-ins' name, mounts pinned to them."""
    # Same bytes on every node (install_example_plugins); `cluster.plugins` is keyed by name
    # and version, which the two stand-ins share.
    sha256 = {
        command: hashlib.sha256((cluster.nodes[0].plugin_directory / command).read_bytes())
        for command in ("ldap-auth-1.0.0", "ldap-secrets-1.0.0")
    }
    return write_desired(
        tmp_path,
        "version: 1\n"
        "plugins:\n"
        "  - {type: auth, name: ldap, version: v1.0.0, command: ldap-auth-1.0.0, "
        f"sha256: {sha256['ldap-auth-1.0.0'].hexdigest()}}}\n"
        "  - {type: secret, name: ldap, version: v1.0.0, command: ldap-secrets-1.0.0, "
        f"sha256: {sha256['ldap-secrets-1.0.0'].hexdigest()}}}\n"
        f"auth:\n  - {{path: {MOUNT}, plugin: ldap, version: v1.0.0}}\n"
        f"secrets:\n  - {{path: {MOUNT}, plugin: ldap, version: v1.0.0}}\n",
        name="replacements.yaml",
    )


def mount_builtins_with_data(cluster: Cluster) -> None:
    """On 2.6.2: the built-in ldap auth method and secrets engine, each holding a record."""
    with cluster.http(cluster.active()) as http:
        for request in (
            http.post("/v1/sys/auth/ldap", json={"type": "ldap"}),
            http.post("/v1/sys/mounts/ldap", json={"type": "ldap"}),
            http.post(f"/v1/auth/{MOUNT}users/alice", json={"policies": "reader"}),
            http.post(
                f"/v1/{MOUNT}config",
                json={"binddn": BIND_DN, "bindpass": "pw", "url": "ldap://127.0.0.1:1"},
            ),
        ):
            assert request.status_code == 204, request.text
    cluster.wait_replicated()


def stored_records(http: httpx.Client) -> tuple[Any, Any]:
    """What the stand-ins read from the storage the built-ins wrote (see the module doc)."""
    user = http.get(f"/v1/auth/{MOUNT}stored/user/alice")
    config = http.get(f"/v1/{MOUNT}stored/config")
    assert user.status_code == 200, f"auth/{MOUNT}: {user.status_code} {user.text}"
    assert config.status_code == 200, f"{MOUNT}: {config.status_code} {config.text}"
    return user.json()["data"]["Policies"], config.json()["data"]["LDAP"]["binddn"]


def every_node_answers(cluster: Cluster) -> None:
    """Every mount answers on every node (`status`), and each node itself reads the data."""

    def status_clean() -> dict[str, Any] | None:
        result = cli(cluster, "status", "--json")
        return json.loads(result.stdout) if result.ok else None

    document = wait_until(status_clean)
    shown = {(m["kind"], m["path"]) for m in document["mounts"]}
    assert {("auth", MOUNT), ("secret", MOUNT)} <= shown, document
    for mount in document["mounts"]:
        assert len(mount["nodes"]) == len(cluster.nodes), mount
        assert all(seen["answers"] for seen in mount["nodes"]), mount
    for node in cluster.nodes:
        # Not forwarded: a standby answers from its own plugin process (SPEC §11).
        with cluster.http(node, forward=False) as http:
            assert stored_records(http) == (["reader"], BIND_DN), node.node_id


def release_of(node: ClusterNode) -> str:
    with httpx.Client(timeout=5) as http:
        version: str = http.get(f"{node.address}/v1/sys/health?standbyok=true").json()["version"]
    return version


def preflight(cluster: Cluster, desired: Path) -> tuple[int, set[str], set[str], set[str]]:
    """`plan --server-version` of the new release: exit code, mounts named in errors and in
    warnings, and the mounts listed as already running their replacement."""
    result = cli(cluster, "plan", str(desired), "--server-version", NEW_RELEASE, "--json")
    document = json.loads(result.stdout)
    named = "does not ship"

    def targets(problems: list[dict[str, str]]) -> set[str]:
        return {p["target"] for p in problems if named in p["message"]}

    ready = {m["target"] for m in document["preflight"] if m["status"] == "runs-replacement"}
    return result.exit_code, targets(document["errors"]), targets(document["warnings"]), ready


def test_unprepared_upgrade_names_the_dead_ldap_mounts_and_the_replacements_revive_them(
    old_server: Cluster, tmp_path: Path
) -> None:
    mount_builtins_with_data(old_server)
    (node,) = old_server.nodes
    old_server.upgrade(node, find_bao())
    assert release_of(node) == NEW_RELEASE

    # Dead: listed by the server, every request 404 "backend is nil".
    with old_server.http(node) as http:
        assert "backend is nil" in http.get(f"/v1/{MOUNT}config").text

    # status names both, exit 2.
    status = cli(old_server, "status", "--json")
    assert status.exit_code == STATUS_UNHEALTHY, status.output
    dead = {
        (m["kind"], m["path"])
        for m in json.loads(status.stdout)["mounts"]
        if not any(seen["answers"] for seen in m["nodes"])
    }
    assert dead == {("auth", MOUNT), ("secret", MOUNT)}, status.stdout

    # export says why in a comment and leaves them out: its file still plans.
    exported = tmp_path / "exported.yaml"
    assert cli(old_server, "export", "--out", str(exported)).ok
    text = exported.read_text()
    for name in (f"auth/{MOUNT}", f"secrets/{MOUNT}"):
        (line,) = [line for line in text.splitlines() if line.startswith(f"#   {name} ")]
        assert "no longer ships the built-in" in line and f"OpenBao {OLD_RELEASE}" in line
        assert "left out of this file" in line
    assert "plugin: ldap" not in text
    replanned = cli(old_server, "plan", str(exported), "--json")
    assert replanned.ok, replanned.output
    assert {m["target"] for m in json.loads(replanned.stdout)["not_answering"]} == {
        f"auth/{MOUNT}",
        f"secrets/{MOUNT}",
    }

    # plan names the cause: an error for a declared mount without a replacement.
    bare = write_desired(
        tmp_path, f"version: 1\nauth:\n  - {{path: {MOUNT}, plugin: ldap}}\n", name="bare.yaml"
    )
    refused = cli(old_server, "plan", str(bare))
    assert refused.exit_code == 1, refused.output
    assert "no longer ships the built-in auth plugin ldap" in refused.stdout
    assert "declare an external auth plugin named ldap" in refused.stdout

    # watch: the gauge counts them and /healthz names them (still 200: the watcher works).
    watcher = Watcher(exported, lambda: Client(node.address, old_server.root_token), WatchOptions())
    assert watcher.run_pass().ok
    health = watcher.metrics.health()
    assert health.healthy and health.to_dict()["status"] == "degraded", health
    assert f"auth/{MOUNT} (ldap)" in health.reason and f"secrets/{MOUNT} (ldap)" in health.reason
    assert "reconciler_mounts_not_answering 2.0" in watcher.metrics.render()

    # With the replacements declared: register, tune, reload — back with their data.
    desired = replacements(old_server, tmp_path)
    planned = cli(old_server, "plan", str(desired), "--json")
    actions = [(a["kind"], a["target"]) for a in json.loads(planned.stdout)["actions"]]
    (reload,) = [a for a in json.loads(planned.stdout)["actions"] if a["kind"] == "reload"]
    assert reload["reason_code"] == "backend-not-answering"
    assert (
        f"auth/{MOUNT} — this server no longer ships the built-in auth plugin ldap"
        in (reload["reason"])
    )
    assert sorted(kind for kind, _ in actions) == [
        "register",
        "register",
        "reload",
        "tune",
        "tune",
    ], planned.output
    applied = cli(old_server, "apply", str(desired), "--yes")
    assert applied.ok, applied.output
    with old_server.http(node) as http:
        assert stored_records(http) == (["reader"], BIND_DN)
    assert cli(old_server, "status").ok
    assert cli(old_server, "plan", str(desired), "--detailed-exitcode").exit_code == 0
    # The watcher sees them answer again.
    assert watcher.run_pass().ok
    assert watcher.metrics.health().to_dict()["status"] == "ok"


def test_prepared_rolling_upgrade_keeps_every_ldap_mount_answering_on_every_node(
    old_cluster: Cluster, tmp_path: Path
) -> None:
    mount_builtins_with_data(old_cluster)
    desired = replacements(old_cluster, tmp_path)
    empty = write_desired(tmp_path, "version: 1\n", name="empty.yaml")
    both = {f"auth/{MOUNT}", f"secrets/{MOUNT}"}

    # Preflight on 2.6.2: without replacements both are errors; with them, both are named as
    # moved by this plan.
    assert preflight(old_cluster, empty) == (1, both, set(), set())
    assert preflight(old_cluster, desired) == (0, set(), both, set())

    # Apply on 2.6.2: the override flow moves both onto the stand-ins, with their data. A
    # 2.6.2 standby does not see a tune until it is unsealed again (a fact the SPEC does not
    # state; 2.7.2 standbys see it at once), so the apply verifies the active node, and each
    # standby is sealed (itself, not forwarded) and unsealed to read the tuned mount table.
    active = old_cluster.active()
    applied = cli(old_cluster, "apply", str(desired), "--yes", "--node", active.address)
    assert applied.ok, applied.output
    for standby in old_cluster.standbys():
        with old_cluster.http(standby, forward=False) as http:
            assert http.put("/v1/sys/seal").status_code == 204
        old_cluster.unseal(standby)
    old_cluster.wait_healthy()
    every_node_answers(old_cluster)
    assert cli(old_cluster, "plan", str(desired), "--detailed-exitcode").exit_code == 0
    assert preflight(old_cluster, desired) == (0, set(), set(), both)
    shown = cli(old_cluster, "plan", str(desired), "--server-version", NEW_RELEASE)
    assert f"auth/{MOUNT} (ldap v1.0.0): already runs its replacement" in shown.stdout

    # Roll the nodes, standbys first: stop, start 2.7.2, unseal; check after each.
    order = [*old_cluster.standbys(), old_cluster.active()]
    for node in order:
        old_cluster.upgrade(node, find_bao())
        assert release_of(node) == NEW_RELEASE
        # (wait_replicated compares built-in catalogs, which differ between the releases:
        # every_node_answers waits for status instead.)
        every_node_answers(old_cluster)
        unchanged = cli(old_cluster, "plan", str(desired), "--detailed-exitcode")
        assert unchanged.exit_code == 0, f"after {node.node_id}:\n{unchanged.output}"
    assert {release_of(node) for node in old_cluster.nodes} == {NEW_RELEASE}
