"""Upgrading the plugin of database connections, end to end on the real server (SPEC §10).

The demo-db plugin records every process that served a connection (event,
version, pid) in the connection's database file: that is how these tests see
which binary runs, and that a connection the plan leaves alone kept its process.
No credential of a connection may appear in anything the reconciler writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins import demo_db
from reconciler.demo.examples.plugins.build import find_spec, script_text
from reconciler.executor import ApplyOptions
from reconciler.loader import load_desired
from reconciler.reconcile import PassInput, run_pass
from reconciler.state import read_live_state
from tests.helpers import CliResult, CliRun, RequestLog, api, run_cli, write_desired
from tests.lying_proxy import LyingProxy

# Credentials that must never be shown; distinctive enough to be searched for.
ROOT_USER = "db-admin-4f7c2e"
ROOT_PASSWORD = "pw-never-shown-9a1b3d"


@dataclass
class Db:
    """The emptied server with a database mount db/, its connections and everything shown."""

    server: DevServer
    http: httpx.Client
    plugins: Path
    tmp: Path
    shown: list[str] = field(default_factory=list)

    def cli(self, *args: str) -> CliResult:
        result = run_cli(self.server, *args)
        self.shown += [result.stdout, result.stderr]
        return result

    def call(self, method: str, path: str, status: int, **body: Any) -> dict[str, Any]:
        answer = self.http.request(method, f"/v1/{path}", json=body or None)
        assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else {}

    def desired(self, text: str) -> Path:
        return write_desired(self.tmp, f"version: 1\nplugin_directory: {self.plugins}\n" + text)

    def database(self, name: str) -> Path:
        # One directory each: a connection's database goes away with its directory.
        return self.tmp / "databases" / name / "db.json"

    def url(self, name: str) -> str:
        return demo_db.connection_url(self.database(name))

    def connect(self, name: str, version: str | None) -> None:
        """Create connection `name` (and a role of that name) the way a user does: by hand."""
        self.database(name).parent.mkdir(parents=True)
        demo_db.create_database(self.database(name), ROOT_USER, ROOT_PASSWORD)
        body: dict[str, Any] = {
            "plugin_name": "demo-db",
            "connection_url": self.url(name),
            "username": ROOT_USER,
            "password": ROOT_PASSWORD,
            "allowed_roles": [name],
        }
        if version is not None:
            body["plugin_version"] = version
        self.call("POST", f"db/config/{name}", 204, **body)
        self.call(
            "POST",
            f"db/roles/{name}",
            204,
            db_name=name,
            creation_statements=["x"],
            default_ttl="1h",
        )

    def pin(self, name: str) -> str:
        return str(self.call("GET", f"db/config/{name}", 200)["data"]["plugin_version"])

    def creds(self, name: str) -> str:
        return str(self.call("GET", f"db/creds/{name}", 200)["data"]["username"])

    def serving(self, name: str) -> tuple[str, int]:
        """(version, pid) of the process that last initialized connection `name`."""
        sessions = demo_db.read_database(self.database(name))["sessions"]
        started = [s for s in sessions if s["event"] == "initialize"]
        return started[-1]["version"], started[-1]["pid"]

    def catalog(self) -> set[tuple[str, str]]:
        listed = self.call("GET", "sys/plugins/catalog", 200)["data"]["detailed"]
        return {(e["name"], e["version"]) for e in listed if not e.get("builtin")}

    def assert_no_credentials(self, *more: str) -> None:
        secrets = [ROOT_PASSWORD, ROOT_USER] + [
            demo_db.connection_url(path) for path in (self.tmp / "databases").glob("*/db.json")
        ]
        for text in [*self.shown, *more]:
            for secret in secrets:
                assert secret not in text, f"{secret!r} shown in:\n{text}"


@pytest.fixture
def db(
    server: DevServer, plugins: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[Db]:
    caplog.set_level(logging.DEBUG)
    with api(server) as http:
        the_db = Db(server, http, plugins, tmp_path)
        yield the_db
    # Every log record of the test, at every level: no credential either.
    records = [r for phase in ("setup", "call") for r in caplog.get_records(phase)]
    assert records, "the log was captured"
    the_db.assert_no_credentials(*(r.getMessage() for r in records))


V1 = """\
plugins:
  - {type: database, name: demo-db, version: v1.0.0, command: demo-db-1.0.0}
secrets:
  - {path: db/, plugin: database}
"""

UPGRADE = """\
plugins:
  - {type: database, name: demo-db, version: v1.0.0, command: demo-db-1.0.0, state: absent}
  - {type: database, name: demo-db, version: v2.0.0, command: demo-db-2.0.0}
secrets:
  - path: db/
    plugin: database
    connections:
      - {name: orders, plugin: demo-db}
"""


def test_upgrade_re_pins_the_connection_then_deregisters_the_old_version(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.connect("orders", "v1.0.0")
    old_user = db.creds("orders")
    assert old_user.startswith("orders-v1.0.0-")

    upgrade = db.desired(UPGRADE)
    planned = db.cli("plan", str(upgrade), "--json")
    actions = [(a["kind"], a["target"]) for a in json.loads(planned.stdout)["actions"]]
    assert actions == [
        ("register", "database/demo-db/v2.0.0"),
        ("repin", "secrets/db/connections/orders"),
        ("deregister", "database/demo-db/v1.0.0"),
    ]
    assert "⇢ repin secrets/db/connections/orders" in db.cli("plan", str(upgrade)).stdout

    with RequestLog(db.server) as requests:
        applied = db.cli("apply", str(upgrade), "--yes", "--json")
    assert applied.ok, applied.output
    assert requests.matching("POST", "sys/plugins/reload") == []
    assert requests.matching("POST", "/v1/db/config/orders") == [("POST", "/v1/db/config/orders")]
    # The deregistration came after the re-pinned connection was read back (verification).
    sent = requests.requests
    repin = sent.index(("POST", "/v1/db/config/orders"))
    deregistration = sent.index(("DELETE", "/v1/sys/plugins/catalog/database/demo-db"))
    assert ("GET", "/v1/db/config/orders") in sent[repin:deregistration], sent

    assert db.pin("orders") == "v2.0.0"
    assert db.serving("orders")[0] == "v2.0.0"
    assert db.creds("orders").startswith("orders-v2.0.0-")
    assert old_user in demo_db.read_database(db.database("orders"))["users"]
    assert db.catalog() == {("demo-db", "v2.0.0")}

    again = db.cli("plan", str(upgrade))
    assert "no changes" in again.stdout, again.output
    exported = db.cli("export")
    assert "connections:\n      - name: orders\n        plugin: demo-db\n" in exported.stdout
    # The exported file plans empty against the server it came from.
    replanned = db.cli("plan", str(write_desired(db.tmp, exported.stdout)))
    assert "no changes" in replanned.stdout, replanned.output
    db.assert_no_credentials()


def test_a_new_version_that_cannot_start_is_refused_and_v1_keeps_serving(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.connect("orders", "v1.0.0")
    serving = db.serving("orders")
    broken = UPGRADE.replace("v2.0.0, command: demo-db-2.0.0", "v3.0.0, command: demo-db-3.0.0")

    applied = db.cli("apply", str(db.desired(broken)), "--yes")
    assert applied.exit_code == 1, applied.output
    assert "repin secrets/db/connections/orders" in applied.output
    assert "the server refused POST /v1/db/config/orders (400)" in applied.output
    assert db.pin("orders") == "v1.0.0"
    assert db.serving("orders") == serving  # the same process, never restarted
    assert db.creds("orders").startswith("orders-v1.0.0-")
    assert ("demo-db", "v1.0.0") in db.catalog()  # cleanup never ran
    db.assert_no_credentials()


def test_rollback_re_pins_the_connections_already_moved(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.connect("billing", "v1.0.0")
    db.connect("orders", "v1.0.0")
    # billing is re-pinned first (plan order), then orders' database goes away.
    two = UPGRADE.replace(
        "      - {name: orders, plugin: demo-db}\n",
        "      - {name: billing, plugin: demo-db}\n      - {name: orders, plugin: demo-db}\n",
    )
    db.database("orders").parent.rename(db.tmp / "moved")
    applied = db.cli("apply", str(db.desired(two)), "--yes", "--rollback-on-failure")
    assert applied.exit_code == 1, applied.output
    assert "repin secrets/db/connections/orders" in applied.output
    assert "secrets/db/connections/billing runs v1.0.0 again" in applied.output
    assert db.pin("billing") == "v1.0.0"
    assert db.serving("billing")[0] == "v1.0.0"
    assert db.pin("orders") == "v1.0.0"
    assert ("demo-db", "v1.0.0") in db.catalog()


def _rebuilt_unversioned(db: Db) -> str:
    """Another binary of the unversioned demo-db (another sha256), as `demo-db-rebuilt`."""
    interpreter = Path(sys.executable)
    other_path = interpreter.parent / ".." / interpreter.parent.name / interpreter.name
    target = db.plugins / "demo-db-rebuilt"
    target.write_text(script_text(find_spec("demo-db", ""), str(other_path)))
    target.chmod(0o755)
    return hashlib.sha256(target.read_bytes()).hexdigest()


OVERRIDE = """\
plugins:
  - {{type: database, name: demo-db, version: "", command: {command}}}
  - {{type: database, name: demo-db, version: v1.0.0, command: demo-db-1.0.0}}
secrets:
  - path: db/
    plugin: database
    connections:
      - {{name: loose, plugin: demo-db, version: ""}}
      - {{name: pinned, plugin: demo-db, version: v1.0.0}}
"""


def test_an_unversioned_override_resets_exactly_the_connections_that_use_it(db: Db) -> None:
    first = OVERRIDE.format(command="demo-db-unversioned").split("    connections:")[0]
    assert db.cli("apply", str(db.desired(first)), "--yes").ok
    db.connect("loose", None)
    db.connect("pinned", "v1.0.0")
    loose, pinned = db.serving("loose"), db.serving("pinned")
    assert loose[0] == "" and pinned[0] == "v1.0.0"
    sha256 = _rebuilt_unversioned(db)

    override = db.desired(OVERRIDE.format(command="demo-db-rebuilt"))
    planned = json.loads(db.cli("plan", str(override), "--json").stdout)
    assert [(a["kind"], a["target"]) for a in planned["actions"]] == [
        ("update", "database/demo-db/"),
        ("reset", "secrets/db/connections/loose"),
    ]
    applied = db.cli("apply", str(override), "--yes")
    assert applied.ok, applied.output
    assert db.serving("pinned") == pinned  # untouched: the same process
    restarted = db.serving("loose")
    assert restarted[1] != loose[1]
    command_line = Path(f"/proc/{restarted[1]}/cmdline").read_bytes()
    assert b"demo-db-rebuilt" in command_line
    assert db.call("GET", "sys/plugins/catalog/database/demo-db", 200)["data"]["sha256"] == sha256
    db.assert_no_credentials()


def test_deregistering_an_entry_an_undeclared_connection_uses_is_refused(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.connect("orders", "v1.0.0")
    undeclared = UPGRADE.split("    connections:", maxsplit=1)[0]
    pruning = V1.replace("secrets:", "settings: {prune_plugins: true}\nsecrets:").replace(
        "v1.0.0, command: demo-db-1.0.0", "v2.0.0, command: demo-db-2.0.0"
    )
    for text in (undeclared, pruning):
        with RequestLog(db.server) as requests:
            applied = db.cli("apply", str(db.desired(text)), "--yes")
        assert applied.exit_code == 1, applied.output
        assert "database/demo-db/v1.0.0: cannot deregister: still used by" in applied.output
        assert "secrets/db/connections/orders" in applied.output
        assert requests.writes() == []
    assert db.pin("orders") == "v1.0.0"
    db.assert_no_credentials()


def test_a_declared_connection_that_does_not_exist_is_a_plan_error(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    declared = V1.replace(
        "  - {path: db/, plugin: database}\n",
        "  - path: db/\n    plugin: database\n    connections:\n"
        "      - {name: orders, plugin: demo-db}\n",
    )
    planned = db.cli("plan", str(db.desired(declared)))
    assert planned.exit_code != 0, planned.output
    assert "secrets/db/connections/orders" in planned.output
    assert "create it with its connection details first" in planned.output


def test_connections_cost_one_list_per_database_mount_and_one_read_each(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.call("POST", "sys/mounts/other-db", 204, type="database")  # unmanaged: read all the same
    db.call("POST", "sys/mounts/kv2", 204, type="kv")
    db.connect("orders", "v1.0.0")
    db.connect("billing", "v1.0.0")
    sent: list[tuple[str, str, bytes]] = []

    def record(request: httpx.Request) -> None:
        sent.append((request.method, request.url.path, request.read()))

    with Client(db.server.address, db.server.token, event_hooks={"request": [record]}) as client:
        live = read_live_state(client)
        assert [(c.mount, c.name, c.plugin_version) for c in live.connections] == [
            ("db/", "billing", "v1.0.0"),
            ("db/", "orders", "v1.0.0"),
        ]
        reads = Counter((m, p) for m, p, _ in sent if "/config" in p)
        assert reads == {
            ("LIST", "/v1/db/config"): 1,
            ("LIST", "/v1/other-db/config"): 1,
            ("GET", "/v1/db/config/billing"): 1,
            ("GET", "/v1/db/config/orders"): 1,
        }
        db.call("POST", "sys/plugins/catalog/database/demo-db", 204, **_entry(db, "2.0.0"))
        sent.clear()
        client.repin_connection("db/", "orders", "v2.0.0")
    # The re-pin sends the version alone: the stored connection details stay.
    ((method, path, body),) = sent
    assert (method, path) == ("POST", "/v1/db/config/orders")
    assert json.loads(body) == {"plugin_version": "v2.0.0", "verify_connection": True}
    assert db.pin("orders") == "v2.0.0"
    assert db.creds("orders").startswith("orders-v2.0.0-")


def _entry(db: Db, version: str) -> dict[str, str]:
    command = f"demo-db-{version}"
    sha256 = hashlib.sha256((db.plugins / command).read_bytes()).hexdigest()
    return {"command": command, "sha256": sha256, "version": f"v{version}"}


def test_a_failed_re_pin_is_held_by_the_next_pass(db: Db, client: Client) -> None:
    """Watch mode's memory: the next pass leaves the connection on v1 instead of failing again."""
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.connect("orders", "v1.0.0")
    broken = db.desired(
        UPGRADE.replace("v2.0.0, command: demo-db-2.0.0", "v3.0.0, command: demo-db-3.0.0")
    )
    first = run_pass(client, PassInput(load_desired(broken)))
    assert not first.converged
    sha256 = _entry(db, "3.0.0")["sha256"]
    assert first.failed_upgrades == (("database", "demo-db", "v3.0.0", sha256),)

    with RequestLog(db.server) as requests:
        second = run_pass(
            client,
            PassInput(load_desired(broken)),
            ApplyOptions(held=first.failed_upgrades),
        )
    assert second.converged, second.problems()
    assert requests.writes() == []
    assert any("held until the file changes" in w.message for w in second.plan.warnings)
    assert db.pin("orders") == "v1.0.0"
    assert ("demo-db", "v1.0.0") in db.catalog()


def test_the_generated_policy_is_enough_to_upgrade_a_connection(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.connect("orders", "v1.0.0")
    upgrade = db.desired(UPGRADE)
    policy = db.cli("policy", str(upgrade))
    assert 'path "db/config/orders"' in policy.stdout
    assert 'path "db/reset/orders"' in policy.stdout
    db.call("PUT", "sys/policies/acl/upgrader", 204, policy=policy.stdout)
    token = db.call("POST", "auth/token/create", 200, policies=["upgrader"])["auth"]
    applied = CliRun.invoke(
        ["apply", str(upgrade), "--yes"],
        env={"BAO_ADDR": db.server.address, "BAO_TOKEN": token["client_token"]},
    )
    db.shown += [applied.stdout, applied.stderr]
    assert applied.ok, applied.output
    assert db.pin("orders") == "v2.0.0"


def _apply_via(proxy: LyingProxy, db: Db, desired: Path, *extra: str) -> CliResult:
    result = CliRun.invoke(
        ["apply", str(desired), "--yes", *extra],
        env={"BAO_ADDR": proxy.address, "BAO_TOKEN": db.server.token},
    )
    db.shown += [result.stdout, result.stderr]
    return result


def test_a_re_pin_answered_but_never_made_fails_and_deregisters_nothing(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.connect("orders", "v1.0.0")
    with LyingProxy(db.server.address) as proxy:
        proxy.lie("POST", "/v1/db/config/orders", 204)
        applied = _apply_via(proxy, db, db.desired(UPGRADE), "--no-rollback")
        deregistrations = proxy.count("DELETE", "/v1/sys/plugins/catalog/database/demo-db")
    assert applied.exit_code == 1, applied.output
    assert "repin secrets/db/connections/orders is still needed" in applied.stderr, applied.output
    assert deregistrations == 0
    assert db.pin("orders") == "v1.0.0"
    assert ("demo-db", "v1.0.0") in db.catalog()
    db.assert_no_credentials()


def test_a_rollback_re_pin_that_did_not_take_is_reported_as_failed(db: Db) -> None:
    assert db.cli("apply", str(db.desired(V1)), "--yes").ok
    db.connect("billing", "v1.0.0")
    db.connect("orders", "v1.0.0")
    two = UPGRADE.replace(
        "      - {name: orders, plugin: demo-db}\n",
        "      - {name: billing, plugin: demo-db}\n      - {name: orders, plugin: demo-db}\n",
    )
    # billing is re-pinned (for real), then orders fails: its database went away.
    db.database("orders").parent.rename(db.tmp / "moved")
    with LyingProxy(db.server.address) as proxy:
        # The rollback's re-pin of billing is answered as done but never reaches the server.
        proxy.after(
            "POST",
            "/v1/db/config/billing",
            lambda: proxy.lie("POST", "/v1/db/config/billing", 204),
        )
        applied = _apply_via(proxy, db, db.desired(two), "--rollback-on-failure")
        sent = proxy.count("POST", "/v1/db/config/billing")
    assert applied.exit_code == 1, applied.output
    assert sent == 2, "one re-pin, one rollback"
    assert db.pin("billing") == "v2.0.0"
    assert "billing runs v1.0.0 again" not in applied.output
    # The failure names the connection whose rollback did not take.
    assert "rollback of secrets/db/connections/billing" in applied.stderr, applied.output
