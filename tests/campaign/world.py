"""The starting state of a scenario on the cluster, and the desired file of its change.

The starting state is written with plain HTTP calls, not with the reconciler: the
campaign must not depend on the code it checks to build what it checks against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from reconciler.demo.examples.plugins import demo_db
from tests.campaign.scenario import (
    CONNECTIONS,
    DB_MOUNT,
    DB_V1,
    DB_V2,
    KV_MOUNTS,
    KV_V1,
    KV_V2,
    MOVED_A,
    NAMESPACE,
    ROOT_A,
    ROOT_B,
    Mount,
    Scenario,
)
from tests.cluster import Cluster

DB_USER = "campaign-root"
DB_PASSWORD = "campaign-password"


@dataclass(frozen=True)
class Before:
    """What ran before the first apply, read from the server right after the set-up."""

    kv_version: str  # what every demo-kv mount runs
    kv_sha256: str
    data: dict[str, str]  # mount name → the value written at data/kept


def _ok(answer: httpx.Response) -> httpx.Response:
    if answer.status_code >= 400:
        raise AssertionError(
            f"set-up: {answer.request.method} {answer.request.url.path} answered "
            f"{answer.status_code}: {answer.text.strip()}"
        )
    return answer


def set_up(cluster: Cluster, scenario: Scenario, workdir: Path) -> Before:
    """Register, mount, connect and write data as the scenario's starting state says."""
    start = scenario.start_version
    kv = cluster.plugins[("demo-kv", start)]
    kv_versions = [KV_V1, KV_V2] if start == KV_V2 else [KV_V1]
    data: dict[str, str] = {}
    with cluster.http(cluster.active()) as http:
        for version in kv_versions:
            _register(http, cluster, "secret", "demo-kv", version)
        _register(http, cluster, "database", "demo-db", DB_V1)
        _ok(http.post(f"/v1/sys/namespaces/{NAMESPACE.rstrip('/')}"))
        for mount in KV_MOUNTS:
            headers = {"X-Vault-Namespace": mount.namespace} if mount.namespace else {}
            _ok(
                http.post(
                    f"/v1/sys/mounts/{mount.path.rstrip('/')}",
                    json={"type": "demo-kv", "plugin_version": start},
                    headers=headers,
                )
            )
            value = f"kept in {mount.name} (seed {scenario.seed})"
            _ok(http.put(f"/v1/{mount.path}data/kept", json={"value": value}, headers=headers))
            data[mount.name] = value
        _ok(http.post(f"/v1/sys/mounts/{DB_MOUNT.rstrip('/')}", json={"type": "database"}))
        for name in CONNECTIONS:
            database = workdir / "databases" / name / "db.json"
            database.parent.mkdir(parents=True, exist_ok=True)
            demo_db.create_database(database, DB_USER, DB_PASSWORD)
            _ok(
                http.post(
                    f"/v1/{DB_MOUNT}config/{name}",
                    json={
                        "plugin_name": "demo-db",
                        "plugin_version": DB_V1,
                        "connection_url": demo_db.connection_url(database),
                        "username": DB_USER,
                        "password": DB_PASSWORD,
                        "allowed_roles": [name],
                    },
                )
            )
            _ok(
                http.post(
                    f"/v1/{DB_MOUNT}roles/{name}",
                    json={"db_name": name, "creation_statements": ["x"], "default_ttl": "1h"},
                )
            )
    cluster.wait_replicated()
    return Before(kv_version=start, kv_sha256=kv.sha256, data=data)


def _register(
    http: httpx.Client, cluster: Cluster, plugin_type: str, name: str, version: str
) -> None:
    built = cluster.plugins[(name, version)]
    _ok(
        http.put(
            f"/v1/sys/plugins/catalog/{plugin_type}/{name}",
            json={"sha256": built.sha256, "command": built.command, "version": version},
        )
    )


def kv_mounts_in_file(scenario: Scenario) -> list[Mount]:
    """The demo-kv mounts the desired file declares, where it declares them."""
    if scenario.change == "move":
        return [MOVED_A, ROOT_B, *[m for m in KV_MOUNTS if m.namespace]]
    if scenario.change == "prune":
        return [m for m in KV_MOUNTS if m != ROOT_B]
    return list(KV_MOUNTS)


def catalog_in_file(scenario: Scenario) -> dict[tuple[str, str, str], bool]:
    """(type, name, version) → present, for every entry the file names."""
    entries: dict[tuple[str, str, str], bool] = {}
    kv_versions = {scenario.kv_target(m) for m in KV_MOUNTS} | {scenario.start_version}
    for version in sorted(kv_versions):
        entries[("secret", "demo-kv", version)] = True
    if scenario.change == "downgrade":
        entries[("secret", "demo-kv", KV_V1)] = True
        entries[("secret", "demo-kv", KV_V2)] = not scenario.deregister_old
    elif scenario.change == "upgrade-several" and scenario.deregister_old:
        entries[("secret", "demo-kv", KV_V1)] = False
    entries[("database", "demo-db", DB_V1)] = True
    if scenario.change == "repin":
        entries[("database", "demo-db", DB_V2)] = True
        entries[("database", "demo-db", DB_V1)] = not scenario.deregister_old
    return entries


def desired_file(cluster: Cluster, scenario: Scenario, workdir: Path) -> Path:
    """The desired-state file of the scenario's change."""
    lines = ["version: 1"]
    settings = []
    if scenario.global_scope_in_file:
        settings.append("reload_scope: global")
    if scenario.change == "prune":
        settings.append("prune_mounts: true")
    if settings:
        lines.append("settings: {" + ", ".join(settings) + "}")
    lines.append("plugins:")
    for (plugin_type, name, version), present in catalog_in_file(scenario).items():
        if present:
            built = cluster.plugins[(name, version)]
            lines.append(
                f"  - {{type: {plugin_type}, name: {name}, version: {version}, "
                f"command: {built.command}, sha256: {built.sha256}}}"
            )
        else:
            lines.append(
                f"  - {{type: {plugin_type}, name: {name}, version: {version}, state: absent}}"
            )
    lines.append("secrets:")
    for mount in kv_mounts_in_file(scenario):
        if mount.namespace:
            continue
        moved = f", moved_from: {ROOT_A.path}" if mount == MOVED_A else ""
        version = scenario.kv_target(ROOT_A if mount == MOVED_A else mount)
        lines.append(f"  - {{path: {mount.path}, plugin: demo-kv, version: {version}{moved}}}")
    lines += [f"  - path: {DB_MOUNT}", "    plugin: database", "    connections:"]
    for name in CONNECTIONS:
        version = scenario.connection_target()
        lines.append(f"      - {{name: {name}, plugin: demo-db, version: {version}}}")
    lines.append("namespaces:")
    lines.append(f"  {NAMESPACE}:")
    lines.append("    secrets:")
    for mount in kv_mounts_in_file(scenario):
        if mount.namespace == NAMESPACE:
            version = scenario.kv_target(mount)
            lines.append(f"      - {{path: {mount.path}, plugin: demo-kv, version: {version}}}")
    path = workdir / f"desired-{scenario.seed}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
