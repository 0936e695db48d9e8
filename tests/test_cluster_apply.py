"""Upgrades on the real 3-node cluster: preflight, per-node verification, repair, rollback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.client import Client
from reconciler.executor import KILL_AFTER_WRITES_ENV
from reconciler.watch import Watcher, WatchOptions
from tests.cluster import Cluster, ClusterNode, json_data, wait_until
from tests.helpers import CliResult, CliRun, RequestLog, write_desired

MOUNTS = ("kv1", "kv2", "kv3")


def desired(cluster: Cluster, tmp_path: Path, version: str, mounts: tuple[str, ...]) -> Path:
    entries = "".join(
        f"  - {{type: secret, name: demo-kv, version: {v}, command: {p.command}, "
        f"sha256: {p.sha256}}}\n"
        for (name, v), p in sorted(cluster.plugins.items())
        if name == "demo-kv" and v <= version
    )
    secrets = "".join(f"  - {{path: {m}/, plugin: demo-kv, version: {version}}}\n" for m in mounts)
    return write_desired(
        tmp_path,
        f"version: 1\nsettings: {{reload_scope: global}}\nplugins:\n{entries}secrets:\n{secrets}",
    )


def cli(cluster: Cluster, *args: str) -> CliResult:
    env = {"BAO_ADDR": cluster.active().address, "BAO_TOKEN": cluster.root_token}
    return CliRun.invoke(args, env=env)


def served(cluster: Cluster, node: ClusterNode, mount: str) -> tuple[str, int] | None:
    """(version, pid) of the process that serves `mount` on `node`, asked of that node."""
    with cluster.http(node, forward=False) as http:
        answer = http.get(f"/v1/{mount}/info")
    if answer.status_code != 200:
        return None
    data = answer.json()["data"]
    return str(data["version"]), int(data["pid"])


def every_node_serves(cluster: Cluster, mounts: tuple[str, ...], version: str) -> dict[Any, Any]:
    def all_serving() -> dict[Any, Any] | None:
        now = {(n.node_id, m): served(cluster, n, m) for n in cluster.nodes for m in mounts}
        ok = all(v is not None and v[0] == version for v in now.values())
        return now if ok else None

    return wait_until(all_serving)


def catalog_versions(cluster: Cluster) -> list[str]:
    with cluster.http(cluster.active()) as http:
        answer = http.get("/v1/sys/plugins/catalog")
    detailed = json_data(answer)["detailed"]
    return sorted(e["version"] for e in detailed if e["name"] == "demo-kv")


def start_on_v1(cluster: Cluster, tmp_path: Path, mounts: tuple[str, ...]) -> dict[Any, Any]:
    first = cli(cluster, "apply", "--yes", str(desired(cluster, tmp_path, "v1.0.0", mounts)))
    assert first.ok, first.output
    return every_node_serves(cluster, mounts, "v1.0.0")


def test_an_upgrade_reaches_every_node_and_is_verified_there(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = start_on_v1(cluster, tmp_path, MOUNTS)
    upgrade = desired(cluster, tmp_path, "v2.0.0", MOUNTS)
    plan = cli(cluster, "plan", "--json", str(upgrade))
    actions = json.loads(plan.stdout)["actions"]
    kinds = [a["kind"] for a in actions]
    assert (kinds.count("register"), kinds.count("tune")) == (1, 3), plan.output
    reloads = [a["params"] for a in actions if a["kind"] == "reload"]
    # Every reload (a canary first, then the rest) goes to every node.
    assert reloads and all(r["scope"] == "global" and not r["node"] for r in reloads)
    assert sorted(p for r in reloads for p in r["mounts"]) == [f"{m}/" for m in MOUNTS]
    result = cli(cluster, "apply", "--yes", str(upgrade))
    assert result.ok, result.output
    after = every_node_serves(cluster, MOUNTS, "v2.0.0")
    # Every node restarted every mount's plugin process: observed, not assumed.
    assert all(after[key][1] != before[key][1] for key in after)
    status = cli(cluster, "status", "--json")
    document = json.loads(status.stdout)
    sha = cluster.plugins[("demo-kv", "v2.0.0")].sha256
    for mount in document["mounts"]:
        assert len(mount["nodes"]) == 3
        assert all(n["running"]["sha256"] == sha and n["answers"] for n in mount["nodes"])


def test_preflight_stops_an_upgrade_whose_binary_one_standby_lacks(
    cluster: Cluster, tmp_path: Path
) -> None:
    start_on_v1(cluster, tmp_path, ("kv1",))
    lacking = cluster.standbys()[0]
    v2 = cluster.plugins[("demo-kv", "v2.0.0")]
    (lacking.plugin_directory / v2.command).unlink()
    with RequestLog() as requests:
        result = cli(cluster, "apply", "--yes", str(desired(cluster, tmp_path, "v2.0.0", ("kv1",))))
    assert result.exit_code == 1, result.output
    assert "preflight" in result.output and lacking.address in result.output
    # Stopped before any tune or reload: nothing to roll back, so nothing is written back.
    assert requests.matching("POST", "/tune") == [], requests.writes()
    assert requests.matching("POST", "/sys/plugins/reload") == [], requests.writes()
    assert v2.command in result.output
    assert catalog_versions(cluster) == ["v1.0.0"]
    with cluster.http(cluster.active()) as http:
        assert json_data(http.get("/v1/sys/mounts"))["kv1/"]["plugin_version"] == "v1.0.0"
    every_node_serves(cluster, ("kv1",), "v1.0.0")


@pytest.mark.parametrize("broken_bytes", ["exits at once", "v1's bytes"])
def test_a_binary_broken_on_one_standby_leaves_every_mount_serving_on_every_node(
    cluster: Cluster, tmp_path: Path, broken_bytes: str
) -> None:
    # The canary's reload fails on that standby, which can restart its core and mount
    # every entry again: a second mount already pinned to v2 would die there too.
    mounts = ("kv1", "kv2")
    start_on_v1(cluster, tmp_path, mounts)
    broken = cluster.standbys()[0]
    v1, v2 = cluster.plugins[("demo-kv", "v1.0.0")], cluster.plugins[("demo-kv", "v2.0.0")]
    content = (
        b"#!/bin/sh\nexit 1\n"
        if broken_bytes == "exits at once"
        else (broken.plugin_directory / v1.command).read_bytes()
    )
    (broken.plugin_directory / v2.command).write_bytes(content)

    upgrade = desired(cluster, tmp_path, "v2.0.0", mounts)
    result = cli(cluster, "apply", "--yes", "--json", str(upgrade))

    assert result.exit_code == 1, result.output
    assert broken.address in result.output
    every_node_serves(cluster, mounts, "v1.0.0")
    with cluster.http(cluster.active()) as http:
        table = json_data(http.get("/v1/sys/mounts"))
    assert [table[f"{m}/"]["plugin_version"] for m in mounts] == ["v1.0.0", "v1.0.0"]
    # Each mount reported once, with what every node runs after the last write.
    document = json.loads(result.stdout)
    report = {mount["mount"]: mount for mount in document["rollback"]}
    assert sorted(report) == ["secrets/kv1/", "secrets/kv2/"], document["rollback"]
    assert report["secrets/kv1/"]["state"] == "rolled back"
    for mount in report.values():
        assert mount["state"] != "not restored", mount
        assert sorted(n["node"] for n in mount["nodes"]) == sorted(n.address for n in cluster.nodes)
        assert all(n["answers"] and n["running"]["sha256"] == v1.sha256 for n in mount["nodes"])
    assert not [line for line in document["failures"] if line.startswith("rollback")]
    assert len([line for line in document["rolled_back"] if "kv1/" in line]) == 1


def test_an_upgrade_killed_after_the_canary_reload_ends_on_v1_everywhere_then_converges(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Killed right after the canary's global reload (register, tune, reload): the active
    # runs v2 for kv1, the broken standby does not. Run again with the binary still
    # broken, both mounts must end on the binary they ran before the first run; with
    # a good binary, a third run converges.
    mounts = ("kv1", "kv2")
    start_on_v1(cluster, tmp_path, mounts)
    broken = cluster.standbys()[0]
    v2 = cluster.plugins[("demo-kv", "v2.0.0")]
    (broken.plugin_directory / v2.command).write_bytes(b"#!/bin/sh\nexit 1\n")
    upgrade = desired(cluster, tmp_path, "v2.0.0", mounts)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=cluster.active().address, BAO_TOKEN=cluster.root_token)
    env[KILL_AFTER_WRITES_ENV] = "3"
    killed = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--yes", str(upgrade)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    again = cli(cluster, "apply", "--yes", str(upgrade))
    assert again.exit_code == 1, again.output
    every_node_serves(cluster, mounts, "v1.0.0")
    with cluster.http(cluster.active()) as http:
        table = json_data(http.get("/v1/sys/mounts"))
    assert [table[f"{m}/"]["plugin_version"] for m in mounts] == ["v1.0.0", "v1.0.0"]

    # With the right binary on that node, the next run converges.
    good = next(n for n in cluster.nodes if n is not broken).plugin_directory / v2.command
    (broken.plugin_directory / v2.command).write_bytes(good.read_bytes())
    fixed = cli(cluster, "apply", "--yes", str(upgrade))
    assert fixed.ok, fixed.output
    every_node_serves(cluster, mounts, "v2.0.0")


def test_a_mount_whose_old_binary_is_gone_from_one_node_is_reported_and_planned_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    start_on_v1(cluster, tmp_path, ("kv1",))
    lacking = cluster.standbys()[0]
    v1, v2 = cluster.plugins[("demo-kv", "v1.0.0")], cluster.plugins[("demo-kv", "v2.0.0")]
    (lacking.plugin_directory / v2.command).write_bytes(b"#!/bin/sh\nexit 1\n")
    # Its running v1 process goes on; none can start there again.
    (lacking.plugin_directory / v1.command).unlink()
    upgrade = str(desired(cluster, tmp_path, "v2.0.0", ("kv1",)))

    result = cli(cluster, "apply", "--yes", "--json", upgrade)

    assert result.exit_code == 1, result.output
    (kv1,) = json.loads(result.stdout)["rollback"]
    assert kv1["state"] == "not restored", kv1
    assert f"on node {lacking.address}" in kv1["why"], kv1
    assert "its binary for v1.0.0 is missing or unreadable there" in kv1["why"], kv1
    assert {n["node"]: n["answers"] for n in kv1["nodes"]}[lacking.address] is False
    assert f"rollback: secrets/kv1/ not restored: on node {lacking.address}" in result.stderr
    assert "rolled back" not in result.stderr, result.output
    # The next plan (of the file it was rolled back to) shows it: a reload of that node.
    on_v1 = str(desired(cluster, tmp_path, "v1.0.0", ("kv1",)))
    planned = json.loads(cli(cluster, "plan", "--json", on_v1).stdout)["actions"]
    assert [(a["kind"], a["params"].get("node")) for a in planned] == [
        ("reload", lacking.address)
    ], planned


def test_watch_holds_an_upgrade_that_failed_on_one_standby(
    cluster: Cluster, tmp_path: Path
) -> None:
    mounts = ("kv1", "kv2")
    start_on_v1(cluster, tmp_path, mounts)
    broken = cluster.standbys()[0]
    v2 = cluster.plugins[("demo-kv", "v2.0.0")]
    (broken.plugin_directory / v2.command).write_bytes(b"#!/bin/sh\nexit 1\n")
    path = tmp_path / "watched.yaml"
    path.write_text(desired(cluster, tmp_path, "v2.0.0", mounts).read_text())
    client = lambda: Client(cluster.active().address, cluster.root_token)  # noqa: E731
    watcher = Watcher(path, client, WatchOptions())
    failed = watcher.run_pass()
    assert not failed.ok and [h[:3] for h in failed.held] == [("secret", "demo-kv", "v2.0.0")]
    with RequestLog() as requests:
        held = [watcher.run_pass(), watcher.run_pass()]
    assert requests.matching("POST", "/sys/plugins/reload") == [], requests.writes()
    assert all(outcome.ok for outcome in held), [o.failures for o in held]
    assert watcher.metrics.health().status == "held"
    every_node_serves(cluster, mounts, "v1.0.0")


def test_a_local_reload_on_one_node_shows_as_the_other_nodes_drift(
    cluster: Cluster, tmp_path: Path
) -> None:
    start_on_v1(cluster, tmp_path, ("kv1",))
    v2 = cluster.plugins[("demo-kv", "v2.0.0")]
    active = cluster.active()
    with cluster.http(active) as http:
        http.put(
            "/v1/sys/plugins/catalog/secret/demo-kv",
            json={"sha256": v2.sha256, "command": v2.command, "version": v2.version},
        ).raise_for_status()
        http.post("/v1/sys/mounts/kv1/tune", json={"plugin_version": "v2.0.0"}).raise_for_status()
    with cluster.http(active, forward=False) as http:
        http.put("/v1/sys/plugins/reload/backend", json={"mounts": ["kv1/"]}).raise_for_status()
    file = str(desired(cluster, tmp_path, "v2.0.0", ("kv1",)))
    cluster.wait_replicated()
    plan = json.loads(cli(cluster, "plan", "--json", file).stdout)
    drift = {a["params"]["node"] for a in plan["actions"]}
    assert all(a["kind"] == "reload" for a in plan["actions"]), plan
    assert drift == {n.address for n in cluster.standbys()}
    result = cli(cluster, "apply", "--yes", file)
    assert result.ok, result.output
    every_node_serves(cluster, ("kv1",), "v2.0.0")
    again = json.loads(cli(cluster, "plan", "--json", file).stdout)
    assert again["actions"] == []


def test_an_apply_whose_active_node_died_converges_on_the_surviving_nodes(
    cluster: Cluster, tmp_path: Path
) -> None:
    start_on_v1(cluster, tmp_path, ("kv1",))
    v2 = cluster.plugins[("demo-kv", "v2.0.0")]
    dying = cluster.active()
    # The apply's first write (the register) reached the active, then the active died.
    with cluster.http(dying) as http:
        http.put(
            "/v1/sys/plugins/catalog/secret/demo-kv",
            json={"sha256": v2.sha256, "command": v2.command, "version": v2.version},
        ).raise_for_status()
    dying.stop(kill=True)
    survivors = [node for node in cluster.nodes if node is not dying]
    new_active = wait_until(lambda: next((n for n in survivors if _is_active(n)), None))
    env = {"BAO_ADDR": new_active.address, "BAO_TOKEN": cluster.root_token}
    file = str(desired(cluster, tmp_path, "v2.0.0", ("kv1",)))
    nodes = [arg for node in survivors for arg in ("--node", node.address)]
    result = CliRun.invoke(["apply", "--yes", *nodes, file], env=env)
    assert result.ok, result.output
    plan = json.loads(CliRun.invoke(["plan", "--json", *nodes, file], env=env).stdout)
    assert plan["actions"] == []
    for node in survivors:
        assert served(cluster, node, "kv1") is not None
        assert served(cluster, node, "kv1")[0] == "v2.0.0"  # type: ignore[index]


def _is_active(node: ClusterNode) -> bool:
    try:
        with cluster_http_plain(node) as http:
            return http.get("/v1/sys/health").status_code == 200
    except httpx.HTTPError:
        return False


def cluster_http_plain(node: ClusterNode) -> httpx.Client:
    return httpx.Client(base_url=node.address, timeout=5)


def test_a_move_beside_an_upgrade_keeps_the_upgrade_and_names_the_standbys_to_unseal(
    cluster: Cluster, tmp_path: Path
) -> None:
    # OpenBao 2.7 standbys keep a moved mount at its old path until unsealed again: the
    # apply says so, and does not roll back the upgrade that worked on every node.
    start_on_v1(cluster, tmp_path, ("kv1",))
    with cluster.http(cluster.active()) as http:
        assert http.post("/v1/sys/mounts/old", json={"type": "kv"}).status_code == 204
    cluster.wait_replicated()
    upgrade = desired(cluster, tmp_path, "v2.0.0", ("kv1",))
    upgrade.write_text(upgrade.read_text() + "  - {path: new/, plugin: kv, moved_from: old/}\n")

    moved = cli(cluster, "apply", "--yes", "--json", str(upgrade))

    assert moved.exit_code == 1, moved.output
    document = json.loads(moved.stdout)
    assert (document["converged"], document["rollback"]) == (False, []), moved.output
    standbys = cluster.standbys()
    for standby in standbys:
        assert f"node {standby.address}'s mount table did not follow the move" in moved.output
    every_node_serves(cluster, ("kv1",), "v2.0.0")
    again = cli(cluster, "plan", str(upgrade))
    assert again.exit_code == 1 and "seal and unseal that node" in again.output, again.output
    status = cli(cluster, "status", "--json")
    assert status.exit_code == 2, status.output
    (new,) = [m for m in json.loads(status.stdout)["mounts"] if m["path"] == "new/"]
    stale = {n["node"]: n["error"] for n in new["nodes"] if not n["answers"]}
    assert set(stale) == {s.address for s in standbys}, new
    assert all("still has it at old/" in error for error in stale.values()), stale

    for standby in standbys:
        cluster.seal_and_unseal(standby)
    converged = cli(cluster, "apply", "--yes", "--json", str(upgrade))
    assert converged.exit_code == 0, converged.output
    assert json.loads(converged.stdout)["converged"] is True
