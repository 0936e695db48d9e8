"""How many requests plan and apply send, counted at the transport (SPEC §7, §8).

Counts come from httpx's `request` event hook (and, for the command line,
from tests.helpers.RequestLog at the transport), never from our own client
code, so a retry or an extra call anywhere shows up.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import httpx

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.export import export_desired
from reconciler.loader import load_desired
from reconciler.reconcile import apply, plan_for
from reconciler.state import read_live_state
from tests.helpers import ASKING_ONLY, RequestLog, run_cli, write_desired

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class Sent:
    """Every request a client sends, with its JSON body, via an httpx event hook."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []

    def _hook(self, request: httpx.Request) -> None:
        self.requests.append((request.method, request.url.path, request.read()))

    def client(self, server: DevServer) -> Client:
        return Client(server.address, server.token, event_hooks={"request": [self._hook]})

    def calls(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.requests]

    def writes(self) -> list[tuple[str, str]]:
        return [
            (method, path)
            for method, path in self.calls()
            if method in WRITE_METHODS and path not in ASKING_ONLY
        ]

    def body(self, method: str, path: str) -> object:
        (content,) = [body for m, p, body in self.requests if (m, p) == (method, path)]
        return json.loads(content)


def enable_builtin_mounts(client: Client, start: int, stop: int) -> None:
    """Built-in mounts only: they cost the server no plugin process."""
    for index in range(start, stop):
        if index % 3 == 2:
            client.enable_mount("auth", f"robots-{index}/", {"type": "approle"})
        else:
            plugin = "kv" if index % 3 == 0 else "transit"
            client.enable_mount("secret", f"scale-{index}/", {"type": plugin})


def noop_plan_requests(server: DevServer, tmp_path: Path) -> list[tuple[str, str]]:
    """The requests of a plan whose desired file is the server's own export (nothing to do)."""
    with Client(server.address, server.token) as reader:
        desired = write_desired(tmp_path, export_desired(read_live_state(reader)))
    loaded = load_desired(desired)
    sent = Sent()
    with sent.client(server) as client:
        the_plan = plan_for(client, loaded)
    assert the_plan.actions == [] and the_plan.errors == []
    return sent.calls()


def test_noop_plan_request_count_does_not_grow_with_the_mounts(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    # One external entry, so that the per-entry catalog read is part of both counts.
    sha256 = hashlib.sha256((plugins / "demo-kv-1.0.0").read_bytes()).hexdigest()
    client.register_plugin("secret", "demo-kv", "v1.0.0", "demo-kv-1.0.0", sha256, [], {})

    enable_builtin_mounts(client, 0, 5)
    with_5 = noop_plan_requests(server, tmp_path)
    enable_builtin_mounts(client, 5, 40)
    with_40 = noop_plan_requests(server, tmp_path)

    assert len(with_40) == len(with_5), (with_5, with_40)
    assert Counter(with_40) == Counter(with_5)
    assert all(method in {"GET", "LIST"} for method, _ in with_40)
    # Mounts are read from the two tables, never one by one.
    assert not [path for _, path in with_40 if "scale-" in path or "robots-" in path]


def enable_builtin_mounts_in(server: DevServer, namespace: str, start: int, stop: int) -> None:
    http = httpx.Client(
        base_url=server.address,
        headers={"X-Vault-Token": server.token, "X-Vault-Namespace": namespace},
        timeout=30,
    )
    with http:
        for index in range(start, stop):
            kind, plugin = ("auth", "approle") if index % 3 == 2 else ("mounts", "kv")
            http.post(f"/v1/sys/{kind}/scale-{index}", json={"type": plugin}).raise_for_status()


def test_noop_plan_request_count_grows_with_namespaces_never_with_their_mounts(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    without = noop_plan_requests(server, tmp_path)
    namespaces = ("team1", "team1/sub", "team1/sub/deep", "team2")
    for path in namespaces:
        parent, _, name = path.rpartition("/")
        client.request("POST", f"sys/namespaces/{name}", {}, namespace=parent)
        enable_builtin_mounts_in(server, path, 0, 3)
    with_3_each = noop_plan_requests(server, tmp_path)
    for path in namespaces:
        enable_builtin_mounts_in(server, path, 3, 30)
    with_30_each = noop_plan_requests(server, tmp_path)

    # Per namespace: one LIST sys/namespaces (the walk) and the two mount tables.
    assert len(with_3_each) == len(without) + 3 * len(namespaces), (without, with_3_each)
    assert Counter(with_30_each) == Counter(with_3_each)
    assert Counter(with_3_each)[("LIST", "/v1/sys/namespaces")] == 1 + len(namespaces)
    assert not [path for _, path in with_30_each if "scale-" in path]


DESIRED_V1 = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
secrets:
{mounts}
  - {{path: cache/, plugin: kv, description: built-in, config: {{default_lease_ttl: 1h}}}}
  - {{path: crypto/, plugin: transit}}
auth:
  - {{path: robots/, plugin: approle, config: {{max_lease_ttl: 24h}}}}
"""

DESIRED_V2 = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, state: absent}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: demo-kv-2.0.0}}
secrets:
{mounts}
  - {{path: cache/, plugin: kv, description: built-in, config: {{default_lease_ttl: 1h}}}}
  - {{path: crypto/, plugin: transit}}
auth:
  - {{path: robots/, plugin: approle, config: {{max_lease_ttl: 24h}}}}
"""


def external_mounts(count: int) -> str:
    return "\n".join(f"  - {{path: app-{i}/, plugin: demo-kv}}" for i in range(count))


def test_second_apply_sends_no_write(server: DevServer, plugins: Path, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, DESIRED_V1.format(plugins=plugins, mounts=external_mounts(1)))
    first = run_cli(server, "apply", str(desired), "--yes")
    assert first.ok, first.output

    with RequestLog(server) as requests:
        again = run_cli(server, "apply", str(desired), "--yes")
    assert again.ok, again.output
    assert requests.requests, "the second apply must still read the server"
    assert requests.writes() == []


def test_upgrade_of_a_plugin_used_by_3_mounts(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    mounts = external_mounts(3)
    v1 = load_desired(write_desired(tmp_path, DESIRED_V1.format(plugins=plugins, mounts=mounts)))
    assert apply(client, plan_for(client, v1), v1).converged

    v2 = load_desired(write_desired(tmp_path, DESIRED_V2.format(plugins=plugins, mounts=mounts)))
    sent = Sent()
    with sent.client(server) as counted:
        result = apply(counted, plan_for(counted, v2), v2)
    assert result.converged, result.failures

    writes = sent.writes()
    register = ("PUT", "/v1/sys/plugins/catalog/secret/demo-kv")
    deregister = ("DELETE", "/v1/sys/plugins/catalog/secret/demo-kv")
    reload = ("POST", "/v1/sys/plugins/reload/backend")
    tunes = sorted(w for w in writes if w[0] == "POST" and w[1].endswith("/tune"))
    assert writes.count(register) == 1
    assert tunes == [("POST", f"/v1/sys/mounts/app-{i}/tune") for i in range(3)]
    assert writes.count(reload) == 2
    # The old version goes only once the new one is verified; nothing else is written.
    assert writes.count(deregister) == 1
    assert len(writes) == 1 + 3 + 2 + 1, writes
    assert writes.index(deregister) > len(writes) - 1 - writes[::-1].index(reload)
    # A canary reload of one mount, then one call for the other two, and only them
    # (the built-ins are not touched).
    bodies = [json.loads(body) for m, p, body in sent.requests if (m, p) == reload]
    assert [sorted(b["mounts"]) for b in bodies] == [["app-0/"], ["app-1/", "app-2/"]]


def test_plan_probes_each_external_plugin_mount_once_and_no_builtin(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, DESIRED_V1.format(plugins=plugins, mounts=external_mounts(3)))
    loaded = load_desired(desired)
    assert apply(client, plan_for(client, loaded), loaded).converged
    enable_builtin_mounts(client, 0, 6)

    sent = Sent()
    with sent.client(server) as counted:
        the_plan = plan_for(counted, loaded)
    assert the_plan.errors == []
    mount_paths = {"/v1/app-0", "/v1/app-1", "/v1/app-2"}
    probes = [path for method, path in sent.calls() if method == "GET" and path in mount_paths]
    assert sorted(probes) == sorted(mount_paths)
    # Built-in mounts, declared or not, cost no request of their own.
    assert not [
        path
        for _, path in sent.calls()
        if any(name in path for name in ("/cache", "/crypto", "/robots", "scale-"))
    ]
