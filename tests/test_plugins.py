"""The example external plugins, in-process and against the real OpenBao server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.demo.devserver import DevServer, start_dev_server
from reconciler.demo.examples.plugins import demo_auth, demo_kv, transit
from reconciler.demo.examples.plugins.build import (
    PLUGINS,
    BuiltPlugin,
    build_plugins,
    find_spec,
    script_text,
)
from reconciler.demo.examples.plugins.framework import (
    DELETE,
    LIST,
    READ,
    UPDATE,
    MemoryStorage,
    PermissionDenied,
    PluginError,
    Request,
    UnsupportedOperation,
    UnsupportedPath,
)
from tests.helpers import SLACK

# --------------------------------------------------------------------------
# Without a server
# --------------------------------------------------------------------------


def test_build_writes_one_executable_script_per_plugin_version(tmp_path: Path) -> None:
    built = build_plugins(tmp_path / "plugins")

    assert [(p.type, p.name, p.version, p.command) for p in built] == [
        ("secret", "demo-kv", "v1.0.0", "demo-kv-1.0.0"),
        ("secret", "demo-kv", "v2.0.0", "demo-kv-2.0.0"),
        ("auth", "demo-auth", "v1.0.0", "demo-auth-1.0.0"),
        ("secret", "transit", "v1.0.0", "transit-1.0.0"),
        ("database", "demo-db", "v1.0.0", "demo-db-1.0.0"),
        ("database", "demo-db", "v2.0.0", "demo-db-2.0.0"),
        ("database", "demo-db", "v3.0.0", "demo-db-3.0.0"),
        ("database", "demo-db", "", "demo-db-unversioned"),
        ("auth", "ldap", "v1.0.0", "ldap-auth-1.0.0"),
        ("secret", "ldap", "v1.0.0", "ldap-secrets-1.0.0"),
    ]
    assert [(s.type, s.name, s.version, s.command) for s in PLUGINS] == [
        (p.type, p.name, p.version, p.command) for p in built
    ]
    assert len({p.sha256 for p in built}) == len(built)
    for plugin in built:
        assert plugin.path == tmp_path / "plugins" / plugin.command
        assert hashlib.sha256(plugin.path.read_bytes()).hexdigest() == plugin.sha256
        assert os.access(plugin.path, os.X_OK)
        text = plugin.path.read_text()
        assert text.startswith(f"#!{sys.executable}\n")
        spec = find_spec(plugin.name, plugin.version, plugin.type)
        if spec.broken:
            assert "raise SystemExit(1)" in text
        else:
            factory = "database" if plugin.type == "database" else "backend"
            assert f'{factory}("{plugin.version}")' in text
    # Same inputs, same bytes: the catalog's sha256 stays valid across rebuilds.
    assert [p.sha256 for p in build_plugins(tmp_path / "again")] == [p.sha256 for p in built]


def test_build_command_line_prints_name_version_and_sha256(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reconciler.demo.examples.plugins.build", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(lines) == len(PLUGINS)
    for (kind, name, version, command, sha256), spec in zip(lines, PLUGINS, strict=True):
        assert (kind, name, version, command) == (spec.type, spec.name, spec.version, spec.command)
        assert sha256 == hashlib.sha256((tmp_path / command).read_bytes()).hexdigest()


def test_interpreter_path_with_spaces_gets_a_shell_shebang() -> None:
    text = script_text(find_spec("demo-kv", "1.0.0"), "/opt/my tools/bin/python3")
    assert text.startswith('#!/bin/sh\n"exec" \'/opt/my tools/bin/python3\' "$0" "$@"\n')
    compile(text, "demo-kv-1.0.0", "exec")  # the same file must also be valid Python


def test_plugin_run_by_hand_says_it_is_a_plugin(tmp_path: Path) -> None:
    plugin = build_plugins(tmp_path)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "PLUGIN_"))}
    result = subprocess.run(
        [str(plugin.path)], check=False, capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 1
    assert "plugin" in result.stderr
    assert result.stdout == ""


def _call(backend: Any, operation: str, path: str, storage: MemoryStorage, **data: Any) -> Any:
    response = backend.handle(
        Request(operation=operation, path=path, data=data, storage_or_none=storage)
    )
    return None if response is None else response


def test_demo_kv_in_memory_v1_and_v2_share_the_stored_data() -> None:
    storage = MemoryStorage()
    v1, v2 = demo_kv.backend("v1.0.0"), demo_kv.backend("v2.0.0")

    assert _call(v1, UPDATE, "data/app/db", storage, user="u", password="p") is None
    assert _call(v1, "create", "data/top", storage, a=1) is None
    assert _call(v1, READ, "data/app/db", storage).data == {"user": "u", "password": "p"}
    assert _call(v2, READ, "data/app/db", storage).data == {
        "user": "u",
        "password": "p",
        "engine": "demo-kv v2",
    }
    assert _call(v1, LIST, "data/", storage).data == {"keys": ["app/", "top"]}
    assert _call(v1, LIST, "data/app/", storage).data == {"keys": ["db"]}
    assert "engine" not in _call(v1, READ, "info", storage).data
    info = _call(v2, READ, "info", storage).data
    assert (info["name"], info["version"], info["engine"]) == ("demo-kv", "v2.0.0", "demo-kv v2")
    assert info["pid"] == os.getpid()

    assert _call(v1, DELETE, "data/app/db", storage) is None
    assert _call(v1, READ, "data/app/db", storage) is None
    with pytest.raises(PluginError, match="nothing to write"):
        _call(v1, UPDATE, "data/empty", storage)
    with pytest.raises(UnsupportedPath):
        _call(v1, READ, "elsewhere", storage)
    with pytest.raises(UnsupportedOperation):
        _call(v1, DELETE, "info", storage)
    with pytest.raises(ValueError, match="no version"):
        demo_kv.backend("v9.9.9")


def test_demo_auth_in_memory_login() -> None:
    storage = MemoryStorage()
    auth = demo_auth.backend("v1.0.0")
    assert auth.kind == "auth"
    assert auth.unauthenticated == ["login"]

    with pytest.raises(PluginError, match="not configured"):
        _call(auth, UPDATE, "login", storage, secret="s")
    _call(auth, UPDATE, "config", storage, secret="s", policies="a, b", ttl="15m")
    assert _call(auth, READ, "config", storage).data == {
        "policies": ["a", "b"],
        "ttl": 900,
        "secret_configured": True,
    }
    assert b'"s"' not in storage.entries["config"]  # only a digest is stored
    with pytest.raises(PermissionDenied):
        _call(auth, UPDATE, "login", storage, secret="wrong")
    granted = _call(auth, UPDATE, "login", storage, secret="s").auth
    assert (granted.policies, granted.ttl, granted.renewable) == (["a", "b"], 900, True)


def test_transit_in_memory_keys() -> None:
    storage = MemoryStorage()
    backend = transit.backend("v1.0.0")
    _call(backend, UPDATE, "keys/k1", storage)
    record = _call(backend, READ, "keys/k1", storage).data
    assert (record["name"], record["type"], record["engine"]) == (
        "k1",
        "aes256-gcm96",
        "external transit",
    )
    assert _call(backend, LIST, "keys/", storage).data == {"keys": ["k1"]}


# --------------------------------------------------------------------------
# Against the real server
# --------------------------------------------------------------------------


@dataclass
class Bao:
    server: DevServer
    http: httpx.Client
    plugins: dict[tuple[str, str], BuiltPlugin]

    def plugin(self, name: str, version: str) -> BuiltPlugin:
        return self.plugins[(name, version)]

    def register(
        self, plugin: BuiltPlugin, *, name: str | None = None, **override: str
    ) -> httpx.Response:
        body = {"sha256": plugin.sha256, "command": plugin.command, "version": plugin.version}
        return self.http.put(
            f"/v1/sys/plugins/catalog/{plugin.type}/{name or plugin.name}",
            json={**body, **override},
        )

    def deregister(self, kind: str, name: str, version: str) -> None:
        answer = self.http.delete(
            f"/v1/sys/plugins/catalog/{kind}/{name}", params={"version": version}
        )
        assert answer.status_code == 204, answer.text

    def catalog_has(self, kind: str, name: str, version: str) -> bool:
        answer = self.http.get(
            f"/v1/sys/plugins/catalog/{kind}/{name}", params={"version": version}
        )
        return answer.status_code == 200

    def enable(self, kind: str, path: str, plugin: str, version: str | None) -> httpx.Response:
        table = "auth" if kind == "auth" else "mounts"
        body: dict[str, Any] = {"type": plugin}
        if version is not None:
            # OpenBao 2.7 reads the version from config; a top-level
            # plugin_version is ignored and the newest registered one is used.
            body["config"] = {"plugin_version": version}
        return self.http.post(f"/v1/sys/{table}/{path}", json=body)

    def disable(self, kind: str, path: str) -> None:
        table = "auth" if kind == "auth" else "mounts"
        answer = self.http.delete(f"/v1/sys/{table}/{path}")
        assert answer.status_code == 204, answer.text

    def mount(self, kind: str, path: str) -> dict[str, Any] | None:
        table = "auth" if kind == "auth" else "mounts"
        mounts: dict[str, Any] = self.http.get(f"/v1/sys/{table}").json()["data"]
        return mounts.get(path.rstrip("/") + "/")

    def read(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {} if token is None else {"X-Vault-Token": token}
        return self.http.get(f"/v1/{path}", headers=headers)


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    server = start_dev_server(tmp_path_factory.mktemp("plugins"))
    try:
        built = build_plugins(server.plugin_directory)
        with httpx.Client(
            base_url=server.address, headers={"X-Vault-Token": server.token}, timeout=30
        ) as http:
            yield Bao(server, http, {(p.name, p.version): p for p in built})
    finally:
        server.stop()


def _ok(answer: httpx.Response, status: int = 204) -> httpx.Response:
    assert answer.status_code == status, (
        f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text}"
    )
    return answer


def _process_gone(pid: int, timeout: float = SLACK) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _zombie(pid):  # exited, not yet reaped
            return True
        time.sleep(0.05)
    return False


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


@pytest.mark.server
def test_secrets_engine_enable_write_upgrade_by_tune_and_reload(bao: Bao) -> None:
    v1, v2 = bao.plugin("demo-kv", "v1.0.0"), bao.plugin("demo-kv", "v2.0.0")
    _ok(bao.register(v1))
    _ok(bao.register(v2))

    _ok(bao.enable("secret", "apps", "demo-kv", "v1.0.0"))
    first = _ok(bao.read("apps/info"), 200).json()["data"]

    mount = bao.mount("secret", "apps")
    assert mount is not None
    assert (mount["type"], mount["plugin_version"], mount["running_plugin_version"]) == (
        "demo-kv",
        "v1.0.0",
        "v1.0.0",
    )
    assert mount["running_sha256"] == v1.sha256
    assert (first["name"], first["version"]) == ("demo-kv", "v1.0.0")
    assert "engine" not in first

    _ok(bao.http.put("/v1/apps/data/db", json={"user": "app", "password": "pw1"}))
    assert _ok(bao.read("apps/data/db"), 200).json()["data"] == {"user": "app", "password": "pw1"}
    listed = _ok(bao.http.request("LIST", "/v1/apps/data"), 200).json()["data"]
    assert listed == {"keys": ["db"]}
    assert bao.read("apps/data/missing").status_code == 404
    empty = bao.http.put("/v1/apps/data/empty", json={})
    assert empty.status_code == 400
    assert empty.json()["errors"] == [
        "nothing to write: send a JSON object with at least one field"
    ]

    _ok(bao.http.post("/v1/sys/mounts/apps/tune", json={"plugin_version": "v2.0.0"}))
    mount = bao.mount("secret", "apps")
    assert mount is not None
    # A tune only changes the pin: the old code runs until a reload.
    assert (mount["plugin_version"], mount["running_plugin_version"]) == ("v2.0.0", "v1.0.0")
    assert _ok(bao.read("apps/info"), 200).json()["data"]["pid"] == first["pid"]

    reload = _ok(bao.http.put("/v1/sys/plugins/reload/backend", json={"mounts": ["apps/"]}), 200)
    assert reload.json()["data"]["reload_id"]

    mount = bao.mount("secret", "apps")
    assert mount is not None
    assert (mount["plugin_version"], mount["running_plugin_version"]) == ("v2.0.0", "v2.0.0")
    assert mount["running_sha256"] == v2.sha256
    second = _ok(bao.read("apps/info"), 200).json()["data"]
    assert (second["version"], second["engine"]) == ("v2.0.0", "demo-kv v2")
    assert second["pid"] != first["pid"]
    assert second["started_unix"] > first["started_unix"]
    assert _process_gone(first["pid"]), "the v1 process outlived the reload"
    # Written by v1, read by v2 from the same mount storage.
    assert _ok(bao.read("apps/data/db"), 200).json()["data"] == {
        "user": "app",
        "password": "pw1",
        "engine": "demo-kv v2",
    }
    _ok(bao.http.delete("/v1/apps/data/db"))
    assert bao.read("apps/data/db").status_code == 404

    bao.disable("secret", "apps")
    assert bao.mount("secret", "apps") is None
    assert _process_gone(second["pid"]), "the plugin process outlived its mount"
    bao.deregister("secret", "demo-kv", "v1.0.0")
    bao.deregister("secret", "demo-kv", "v2.0.0")
    assert not bao.catalog_has("secret", "demo-kv", "v1.0.0")
    assert not bao.catalog_has("secret", "demo-kv", "v2.0.0")


@pytest.mark.server
def test_auth_method_login_gives_a_working_token(bao: Bao) -> None:
    plugin = bao.plugin("demo-auth", "v1.0.0")
    _ok(bao.register(plugin))
    _ok(bao.enable("auth", "static", "demo-auth", "v1.0.0"))
    mount = bao.mount("auth", "static")
    assert mount is not None
    assert (mount["type"], mount["running_plugin_version"], mount["running_sha256"]) == (
        "demo-auth",
        "v1.0.0",
        plugin.sha256,
    )
    anonymous = httpx.Client(base_url=bao.server.address, timeout=30)

    not_configured = anonymous.post("/v1/auth/static/login", json={"secret": "s3cret"})
    assert not_configured.status_code == 400
    assert "not configured" in not_configured.text
    _ok(
        bao.http.put(
            "/v1/auth/static/config", json={"secret": "s3cret", "policies": "dev,ops", "ttl": "30m"}
        )
    )
    config = _ok(bao.read("auth/static/config"), 200).json()["data"]
    assert config == {"policies": ["dev", "ops"], "ttl": 1800, "secret_configured": True}
    # The config path is not listed as unauthenticated: no token, no answer.
    assert anonymous.get("/v1/auth/static/config").status_code == 403

    assert anonymous.post("/v1/auth/static/login", json={"secret": "wrong"}).status_code == 403
    login = _ok(anonymous.post("/v1/auth/static/login", json={"secret": "s3cret"}), 200).json()
    auth = login["auth"]
    assert auth["client_token"]
    assert {"dev", "ops"} <= set(auth["policies"])
    assert (auth["lease_duration"], auth["renewable"]) == (1800, True)
    assert auth["metadata"] == {"plugin": "demo-auth", "plugin_version": "v1.0.0"}

    token = auth["client_token"]
    me = _ok(bao.read("auth/token/lookup-self", token=token), 200).json()["data"]
    assert me["path"] == "auth/static/login"
    assert {"dev", "ops"} <= set(me["policies"])
    renewed = bao.http.post("/v1/auth/token/renew-self", headers={"X-Vault-Token": token}, json={})
    assert _ok(renewed, 200).json()["auth"]["lease_duration"] == 1800

    info = _ok(bao.read("auth/static/info"), 200).json()["data"]
    assert (info["name"], info["version"]) == ("demo-auth", "v1.0.0")

    bao.disable("auth", "static")
    # Disabling an auth mount revokes the tokens it issued.
    assert bao.read("auth/token/lookup-self", token=token).status_code == 403
    bao.deregister("auth", "demo-auth", "v1.0.0")


@pytest.mark.server
def test_transit_override_runs_the_external_code_only_where_pinned(bao: Bao) -> None:
    _ok(bao.enable("secret", "builtin-transit", "transit", None))
    plugin = bao.plugin("transit", "v1.0.0")
    _ok(bao.register(plugin))
    _ok(bao.enable("secret", "ext-transit", "transit", "v1.0.0"))

    external = bao.mount("secret", "ext-transit")
    builtin = bao.mount("secret", "builtin-transit")
    assert external is not None
    assert builtin is not None
    assert (external["running_plugin_version"], external["running_sha256"]) == (
        "v1.0.0",
        plugin.sha256,
    )
    assert builtin["plugin_version"] == ""
    assert builtin["running_plugin_version"].endswith("+builtin.bao")

    info = _ok(bao.read("ext-transit/info"), 200).json()["data"]
    assert (info["name"], info["version"], info["engine"]) == (
        "transit",
        "v1.0.0",
        "external transit",
    )
    # The built-in has no such path.
    assert bao.read("builtin-transit/info").status_code in (404, 405)

    _ok(bao.http.post("/v1/ext-transit/keys/orders", json={"type": "demo"}))
    key = _ok(bao.read("ext-transit/keys/orders"), 200).json()["data"]
    assert (key["name"], key["type"], key["engine"]) == ("orders", "demo", "external transit")

    bao.disable("secret", "ext-transit")
    bao.disable("secret", "builtin-transit")
    bao.deregister("secret", "transit", "v1.0.0")


@pytest.mark.server
def test_wrong_sha256_registers_but_fails_to_start(bao: Bao) -> None:
    v1, v2 = bao.plugin("demo-kv", "v1.0.0"), bao.plugin("demo-kv", "v2.0.0")
    # The file is v1's, the hash v2's.
    _ok(bao.register(v1, name="demo-kv-tampered", sha256=v2.sha256))
    enable = bao.enable("secret", "tampered", "demo-kv-tampered", "v1.0.0")
    assert enable.status_code == 400
    assert "checksums did not match" in enable.text
    assert bao.mount("secret", "tampered") is None
    bao.deregister("secret", "demo-kv-tampered", "v1.0.0")


@pytest.mark.server
def test_registering_another_version_than_the_binary_reports_is_refused(bao: Bao) -> None:
    v1 = bao.plugin("demo-kv", "v1.0.0")
    answer = bao.register(v1, name="demo-kv-claims", version="v3.0.0")
    assert answer.status_code == 400
    assert "plugin version mismatch" in answer.text
    assert "reported version (v1.0.0)" in answer.text
    assert not bao.catalog_has("secret", "demo-kv-claims", "v3.0.0")
