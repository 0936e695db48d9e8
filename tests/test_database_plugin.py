"""The demo-db database plugin, in-process and on the real OpenBao server.

The server tests pin down how OpenBao treats an external database plugin's
connections (SPEC §10): what a config write, a re-pin, a reset and the two
kinds of reload do, observed through the plugin's own records (every plugin
process writes what it did, its version and pid, into the database file).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins import demo_db
from reconciler.demo.examples.plugins.build import (
    BuiltPlugin,
    build_plugins,
    find_spec,
    script_text,
)
from reconciler.demo.examples.plugins.database_runtime import Database, DatabaseError, NewUser

ROOT_USER, ROOT_PASSWORD = "root", "root-password-never-shown"

# --------------------------------------------------------------------------
# Without a server
# --------------------------------------------------------------------------


def _new_user(role: str = "reader", password: str = "pw") -> NewUser:
    return NewUser(
        role_name=role,
        display_name="token",
        password=password,
        expiration=datetime(2030, 1, 1, tzinfo=UTC),
        statements=["CREATE USER {{name}}"],
    )


def test_demo_db_in_process_keeps_users_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    demo_db.create_database(path, ROOT_USER, ROOT_PASSWORD)
    v1: Database = demo_db.database("v1.0.0")
    config = {
        "connection_url": demo_db.connection_url(path),
        "username": ROOT_USER,
        "password": ROOT_PASSWORD,
    }
    assert v1.type_name() == "demo-db"
    assert v1.initialize(config, verify_connection=True) == config

    username = v1.new_user(_new_user(password="first"))
    assert username.startswith("reader-v1.0.0-")
    later = datetime(2031, 1, 1, tzinfo=UTC)
    v1.update_user(username, "second", later)
    v1.close()

    content = demo_db.read_database(path)
    user = content["users"][username]
    assert user["password_sha256"] == hashlib.sha256(b"second").hexdigest()
    assert user["expiration"] == later.isoformat()
    assert user["created_by"] == {"version": "v1.0.0", "pid": os.getpid()}
    assert [(s["event"], s["version"]) for s in content["sessions"]] == [
        ("initialize", "v1.0.0"),
        ("close", "v1.0.0"),
    ]

    # Another version, another process: the users are still there.
    v2 = demo_db.database("v2.0.0")
    v2.initialize(config, verify_connection=True)
    assert v2.new_user(_new_user("writer")).startswith("writer-v2.0.0-")
    v2.delete_user(username)
    v2.delete_user(username)  # gone already: not an error
    (remaining,) = demo_db.read_database(path)["users"]
    assert remaining.startswith("writer-v2.0.0-")
    unversioned = demo_db.database("")
    unversioned.initialize(config, verify_connection=True)
    assert unversioned.new_user(_new_user()).startswith("reader-unversioned-")


def test_demo_db_refuses_bad_urls_wrong_root_and_unreachable_databases(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    demo_db.create_database(path, ROOT_USER, ROOT_PASSWORD)
    url = demo_db.connection_url(path)
    db = demo_db.database("v1.0.0")
    for bad in ({}, {"connection_url": "postgres://x/y"}, {"connection_url": "demo-db:relative"}):
        with pytest.raises(DatabaseError, match="connection_url"):
            db.initialize(bad, verify_connection=True)
    with pytest.raises(DatabaseError, match="authentication failed") as wrong:
        db.initialize({"connection_url": url, "username": ROOT_USER, "password": "nope"}, True)
    assert "nope" not in str(wrong.value)

    gone = tmp_path / "missing" / "db.json"
    with pytest.raises(DatabaseError, match="cannot reach") as unreachable:
        db.initialize({"connection_url": demo_db.connection_url(gone)}, True)
    assert str(gone) not in str(unreachable.value)  # no connection details in errors
    # Without verification Initialize succeeds; the first real use fails.
    db.initialize({"connection_url": demo_db.connection_url(gone)}, verify_connection=False)
    with pytest.raises(DatabaseError, match="cannot reach"):
        db.new_user(_new_user())
    with pytest.raises(DatabaseError, match="not initialized"):
        demo_db.database("v2.0.0").new_user(_new_user())
    with pytest.raises(ValueError, match="no version"):
        demo_db.database("v9.9.9")


# --------------------------------------------------------------------------
# On the real server
# --------------------------------------------------------------------------


@dataclass
class Bao:
    """The emptied session server, the demo-db builds and a place for database files."""

    server: DevServer
    http: httpx.Client
    built: dict[str, BuiltPlugin]  # by version, "" for the unversioned build
    data: Path

    def call(self, method: str, path: str, status: int, **body: Any) -> dict[str, Any]:
        answer = self.http.request(method, f"/v1/{path}", json=body or None)
        assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else {}

    def error(self, method: str, path: str, status: int, **body: Any) -> str:
        return "\n".join(self.call(method, path, status, **body)["errors"])

    def register(self, version: str, *, as_version: str | None = None) -> None:
        plugin = self.built[version]
        body: dict[str, Any] = {"sha256": plugin.sha256, "command": plugin.command}
        registered = version if as_version is None else as_version
        if registered:
            body["version"] = registered
        self.call("PUT", "sys/plugins/catalog/database/demo-db", 204, **body)

    def rebuild(self, version: str) -> BuiltPlugin:
        """Another binary of demo-db `version` (new file, new sha256), registered as that version."""
        spec = find_spec("demo-db", version)
        # The same interpreter by another path: the script differs, the plugin does not.
        interpreter = Path(sys.executable)
        other_path = interpreter.parent / ".." / interpreter.parent.name / interpreter.name
        content = script_text(spec, str(other_path)).encode()
        command = f"{spec.command}-rebuilt"
        target = self.server.plugin_directory / command
        target.write_bytes(content)
        target.chmod(0o755)
        sha256 = hashlib.sha256(content).hexdigest()
        rebuilt = BuiltPlugin("database", "demo-db", version, command, sha256, target)
        body = {"sha256": sha256, "command": command, **({"version": version} if version else {})}
        self.call("PUT", "sys/plugins/catalog/database/demo-db", 204, **body)
        return rebuilt

    def database_file(self, name: str) -> Path:
        path = self.data / f"{name}.json"
        demo_db.create_database(path, ROOT_USER, ROOT_PASSWORD)
        return path

    def connect(self, name: str, version: str | None, status: int = 204) -> dict[str, Any]:
        """Create connection `name` on db/ (its own database file, a role of the same name)."""
        body: dict[str, Any] = {
            "plugin_name": "demo-db",
            "connection_url": demo_db.connection_url(self.database_file(name)),
            "username": ROOT_USER,
            "password": ROOT_PASSWORD,
            "allowed_roles": [name],
        }
        if version is not None:
            body["plugin_version"] = version
        answer = self.call("POST", f"db/config/{name}", status, **body)
        if status == 204:
            self.call(
                "POST",
                f"db/roles/{name}",
                204,
                db_name=name,
                creation_statements=["x"],
                default_ttl="1h",
            )
        return answer

    def config(self, name: str) -> dict[str, Any]:
        return self.call("GET", f"db/config/{name}", 200)["data"]

    def creds(self, role: str) -> dict[str, Any]:
        return self.call("GET", f"db/creds/{role}", 200)

    def sessions(self, name: str) -> list[tuple[str, str, int]]:
        """(event, version, pid) of every plugin process that served connection `name`."""
        content = demo_db.read_database(self.data / f"{name}.json")
        return [(s["event"], s["version"], s["pid"]) for s in content["sessions"]]

    def users(self, name: str) -> dict[str, Any]:
        users: dict[str, Any] = demo_db.read_database(self.data / f"{name}.json")["users"]
        return users


@pytest.fixture
def bao(server: DevServer, plugins: Path, tmp_path: Path) -> Iterator[Bao]:
    built = {p.version: p for p in build_plugins(plugins) if p.name == "demo-db"}
    with httpx.Client(
        base_url=server.address, headers={"X-Vault-Token": server.token}, timeout=30
    ) as http:
        the_bao = Bao(server, http, built, tmp_path)
        the_bao.call("POST", "sys/mounts/db", 204, type="database")
        yield the_bao


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _serving_pid(bao: Bao, name: str) -> int:
    """The pid of the process that last initialized connection `name` (and still runs)."""
    initialized = [pid for event, _, pid in bao.sessions(name) if event == "initialize"]
    assert initialized, bao.sessions(name)
    assert _running(initialized[-1])
    return initialized[-1]


def test_registration_asks_the_binary_its_version(bao: Bao) -> None:
    bao.register("v1.0.0")
    # The v2 binary says v2.0.0: another claim is refused.
    mismatch = bao.error(
        "PUT",
        "sys/plugins/catalog/database/demo-db",
        400,
        sha256=bao.built["v2.0.0"].sha256,
        command=bao.built["v2.0.0"].command,
        version="v1.5.0",
    )
    assert "plugin version mismatch" in mismatch
    # A binary that cannot start still registers.
    bao.register("v3.0.0")
    # The unversioned build reports no version, so the entry stays unversioned.
    bao.register("")
    listed = bao.call("GET", "sys/plugins/catalog", 200)["data"]["detailed"]
    assert sorted((e["version"], e["sha256"]) for e in listed if e["name"] == "demo-db") == sorted(
        (v, bao.built[v].sha256) for v in ("", "v1.0.0", "v3.0.0")
    )


def test_config_write_role_and_creds_run_through_the_plugin(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.connect("orders", "v1.0.0")

    config = bao.config("orders")
    assert (config["plugin_name"], config["plugin_version"]) == ("demo-db", "v1.0.0")
    # The read returns the URL and the username, never the password.
    assert config["connection_details"] == {
        "connection_url": demo_db.connection_url(bao.data / "orders.json"),
        "username": ROOT_USER,
    }
    assert ROOT_PASSWORD not in str(config)
    assert bao.call("LIST", "db/config", 200)["data"]["keys"] == ["orders"]
    # The connection's plugin shows nowhere in the mount table.
    mounts = bao.call("GET", "sys/mounts", 200)["data"]
    assert "demo-db" not in str(mounts)
    assert mounts["db/"]["plugin_version"] == ""

    # The config write started the plugin and connected (root credentials checked).
    pid = _serving_pid(bao, "orders")
    assert bao.sessions("orders") == [("initialize", "v1.0.0", pid)]

    issued = bao.creds("orders")
    username, password = issued["data"]["username"], issued["data"]["password"]
    assert username.startswith("orders-v1.0.0-")
    user = bao.users("orders")[username]
    assert user["password_sha256"] == hashlib.sha256(password.encode()).hexdigest()
    assert user["created_by"] == {"version": "v1.0.0", "pid": pid}

    # Renewing the lease is UpdateUser (a new expiration); revoking it is DeleteUser.
    bao.call("PUT", "sys/leases/renew", 200, lease_id=issued["lease_id"], increment=7200)
    renewed = datetime.fromisoformat(bao.users("orders")[username]["expiration"])
    assert abs(renewed - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=1)
    bao.call("PUT", "sys/leases/revoke", 204, lease_id=issued["lease_id"])
    assert username not in bao.users("orders")

    assert "failed to find entry" in bao.error("POST", "db/reset/nope", 500)
    bao.call("GET", "db/config/nope", 404)


def test_repin_keeps_the_details_and_starts_the_new_version(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.register("v2.0.0")
    bao.connect("orders", "v1.0.0")
    old_pid = _serving_pid(bao, "orders")
    old_user = bao.creds("orders")["data"]["username"]

    bao.call("POST", "db/config/orders", 204, plugin_version="v2.0.0")

    config = bao.config("orders")
    assert config["plugin_version"] == "v2.0.0"
    assert config["connection_details"]["connection_url"] == demo_db.connection_url(
        bao.data / "orders.json"
    )
    new_pid = _serving_pid(bao, "orders")
    # The new process connected before the old one closed, with the stored
    # root credentials (the database refuses any other), password included.
    assert bao.sessions("orders") == [
        ("initialize", "v1.0.0", old_pid),
        ("initialize", "v2.0.0", new_pid),
        ("close", "v1.0.0", old_pid),
    ]
    assert _gone(old_pid)
    assert bao.creds("orders")["data"]["username"].startswith("orders-v2.0.0-")
    assert old_user in bao.users("orders")


def test_a_pin_that_cannot_run_is_refused_and_changes_nothing(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.register("v3.0.0")
    bao.connect("orders", "v1.0.0")
    pid = _serving_pid(bao, "orders")

    broken = bao.error("POST", "db/config/orders", 400, plugin_version="v3.0.0")
    assert "error creating database object" in broken
    missing = bao.error("POST", "db/config/orders", 400, plugin_version="v9.0.0")
    assert "plugin not found in the catalog: demo-db, version=v9.0.0" in missing
    # Only versioned entries exist: a pin cannot be cleared.
    cleared = bao.error("POST", "db/config/orders", 400, plugin_version="")
    assert "plugin not found in the catalog: demo-db" in cleared

    bao.data.rename(bao.data.with_name("moved"))  # the database is unreachable
    try:
        unreachable = bao.error("POST", "db/config/orders", 400, plugin_version="v1.0.0")
        assert "cannot reach the database" in unreachable
    finally:
        bao.data.with_name("moved").rename(bao.data)

    assert bao.config("orders")["plugin_version"] == "v1.0.0"
    # The same process still serves: nothing was started, nothing closed.
    assert bao.sessions("orders") == [("initialize", "v1.0.0", pid)]
    assert _running(pid)
    assert bao.creds("orders")["data"]["username"].startswith("orders-v1.0.0-")


def test_every_config_write_restarts_and_verify_connection_false_skips_the_check(
    bao: Bao,
) -> None:
    bao.register("v1.0.0")
    bao.register("v2.0.0")
    bao.connect("orders", "v1.0.0")
    first = _serving_pid(bao, "orders")

    # Writing the pin it already has still replaces the process.
    bao.call("POST", "db/config/orders", 204, plugin_version="v1.0.0")
    second = _serving_pid(bao, "orders")
    assert second != first
    assert _gone(first)

    # Without verification a re-pin is accepted while the database is away.
    bao.data.rename(bao.data.with_name("moved"))
    try:
        bao.call("POST", "db/config/orders", 204, plugin_version="v2.0.0", verify_connection=False)
    finally:
        bao.data.with_name("moved").rename(bao.data)
    assert bao.config("orders")["plugin_version"] == "v2.0.0"
    assert "verify_connection" not in bao.config("orders")  # a per-write flag, not stored
    assert _gone(second)
    assert bao.creds("orders")["data"]["username"].startswith("orders-v2.0.0-")


def test_reset_restarts_the_connection_on_what_the_catalog_names(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.connect("orders", "v1.0.0")
    first = _serving_pid(bao, "orders")

    bao.call("POST", "db/reset/orders", 204)
    second = _serving_pid(bao, "orders")
    assert second != first
    assert bao.sessions("orders") == [
        ("initialize", "v1.0.0", first),
        ("close", "v1.0.0", first),
        ("initialize", "v1.0.0", second),
    ]

    # An unreachable database: reset closes the process, then fails (500)
    # and leaves no process; the next use starts one again.
    bao.data.rename(bao.data.with_name("moved"))
    try:
        assert "cannot reach the database" in bao.error("POST", "db/reset/orders", 500)
    finally:
        bao.data.with_name("moved").rename(bao.data)
    assert _gone(second)  # its close found no database to record into
    assert len(bao.sessions("orders")) == 3
    assert bao.creds("orders")["data"]["username"].startswith("orders-v1.0.0-")
    assert _serving_pid(bao, "orders") not in (first, second)


def test_deregistering_the_running_version_leaves_the_connection_dead(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.register("v2.0.0")
    bao.connect("orders", "v1.0.0")

    bao.call("DELETE", "sys/plugins/catalog/database/demo-db?version=v1.0.0", 204)
    # The running process goes on serving until something restarts it.
    assert bao.creds("orders")["data"]["username"].startswith("orders-v1.0.0-")
    gone = bao.error("POST", "db/reset/orders", 500)
    assert "plugin not found in the catalog: demo-db, version=v1.0.0" in gone
    assert bao.config("orders")["plugin_version"] == "v1.0.0"
    bao.call("GET", "db/creds/orders", 500)
    # A re-pin to a registered version brings it back.
    bao.call("POST", "db/config/orders", 204, plugin_version="v2.0.0")
    assert bao.creds("orders")["data"]["username"].startswith("orders-v2.0.0-")


def test_re_registering_a_version_with_a_binary_that_cannot_start(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.connect("orders", "v1.0.0")
    pid = _serving_pid(bao, "orders")

    # The catalog cannot read the broken binary's version, and registers it anyway.
    broken = bao.built["v3.0.0"]
    bao.call(
        "PUT",
        "sys/plugins/catalog/database/demo-db",
        204,
        sha256=broken.sha256,
        command=broken.command,
        version="v1.0.0",
    )
    assert _running(pid)  # still serving the old binary
    assert "unable to create database instance" in bao.error("POST", "db/reset/orders", 500)
    assert _gone(pid)
    bao.call("GET", "db/creds/orders", 500)  # dead until the catalog names a binary that runs
    bao.register("v1.0.0")
    bao.call("POST", "db/reset/orders", 204)
    assert bao.creds("orders")["data"]["username"].startswith("orders-v1.0.0-")


def test_a_connection_without_a_version_is_pinned_to_the_newest(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.register("v2.0.0")
    bao.connect("orders", None)
    assert bao.config("orders")["plugin_version"] == "v2.0.0"

    # The newest is the broken one: the connection cannot be created.
    bao.register("v3.0.0")
    assert "error creating database object" in bao.error(
        "POST", "db/config/billing", 400, plugin_name="demo-db", connection_url="demo-db:///x"
    )
    bao.call("GET", "db/config/billing", 404)


def test_an_unversioned_entry_serves_only_unpinned_connections(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.connect("pinned", "v1.0.0")
    bao.register("")

    # With an unversioned entry registered, a connection without a version stays unpinned.
    bao.connect("loose", None)
    assert bao.config("loose")["plugin_version"] == ""
    assert bao.sessions("loose")[-1][:2] == ("initialize", "")
    assert bao.creds("loose")["data"]["username"].startswith("loose-unversioned-")

    # A pinned connection keeps its version across a reset.
    bao.call("POST", "db/reset/pinned", 204)
    assert bao.sessions("pinned")[-1][:2] == ("initialize", "v1.0.0")

    # Now the pin can be cleared, and the connection runs the unversioned build.
    bao.call("POST", "db/config/pinned", 204, plugin_version="")
    assert bao.config("pinned")["plugin_version"] == ""
    assert bao.sessions("pinned")[-2][:2] == ("initialize", "")


def test_reset_picks_up_a_re_registered_binary_and_touches_nothing_else(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.connect("pinned", "v1.0.0")
    bao.register("")
    bao.connect("loose", None)
    pinned, loose = _serving_pid(bao, "pinned"), _serving_pid(bao, "loose")

    # Same version, new binary: registering it leaves the running process alone.
    rebuilt = bao.rebuild("v1.0.0")
    assert _running(pinned)
    assert bao.creds("pinned")["data"]["username"].startswith("pinned-v1.0.0-")
    assert _serving_pid(bao, "pinned") == pinned
    bao.call("POST", "db/reset/pinned", 204)
    restarted = _serving_pid(bao, "pinned")
    assert rebuilt.command in _command_line(restarted)
    assert _gone(pinned)
    assert _serving_pid(bao, "loose") == loose  # another connection: untouched

    # An unversioned override, re-registered with a new binary: the same.
    override = bao.rebuild("")
    assert _serving_pid(bao, "loose") == loose
    bao.call("POST", "db/reset/loose", 204)
    assert override.command in _command_line(_serving_pid(bao, "loose"))
    assert _serving_pid(bao, "pinned") == restarted


def test_database_plugins_reload_by_mount_not_by_name(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.connect("orders", "v1.0.0")
    bao.connect("billing", "v1.0.0")
    orders, billing = _serving_pid(bao, "orders"), _serving_pid(bao, "billing")

    refused = bao.error("POST", "sys/plugins/reload/backend", 400, plugin="demo-db")
    assert "only plugins of type auth and secret can be reloaded" in refused
    assert "unsupported path" in bao.error("POST", "db/reload/demo-db", 404)
    assert _running(orders) and _running(billing)

    bao.call("POST", "sys/plugins/reload/backend", 200, mounts=["db/"])
    # Every connection process of the mount stopped; none started again yet.
    assert _gone(orders) and _gone(billing)
    assert bao.sessions("orders")[-1] == ("close", "v1.0.0", orders)
    assert bao.sessions("billing")[-1] == ("close", "v1.0.0", billing)
    # The next use starts the one connection it needs.
    assert bao.creds("orders")["data"]["username"].startswith("orders-v1.0.0-")
    assert _serving_pid(bao, "orders") != orders
    assert bao.sessions("billing")[-1] == ("close", "v1.0.0", billing)


def test_lease_expiration_reaches_the_plugin_as_utc(bao: Bao) -> None:
    bao.register("v1.0.0")
    bao.connect("orders", "v1.0.0")
    issued = bao.creds("orders")
    expiration = datetime.fromisoformat(
        bao.users("orders")[issued["data"]["username"]]["expiration"]
    )
    lease = timedelta(seconds=issued["lease_duration"])
    assert abs(expiration - (datetime.now(UTC) + lease)) < timedelta(minutes=1)
