"""One picture of the whole server (SPEC §9, §10): nested namespaces, database connections
in several of them, team tokens, and the views that must tell the truth about them all.

The server: namespaces `ns1/` and `ns1/team-a/`; a `demo-db` connection two namespaces
down; mounts of the `demo-kv` example plugin where a test needs one. Each external mount
and connection costs a plugin process: the tests keep them few.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins import demo_db
from reconciler.model import CatalogEntry, DesiredState, LiveConnection, LiveMount, LiveState
from reconciler.planner import plan
from tests.helpers import CliResult, CliRun, RequestLog, run_cli, write_desired

TEAM = "ns1/team-a"


def http_in(server: DevServer, namespace: str = "", token: str | None = None) -> httpx.Client:
    """A plain HTTP client for one namespace, independent of the code under test."""
    headers = {"X-Vault-Token": token or server.token}
    if namespace:
        headers["X-Vault-Namespace"] = namespace
    return httpx.Client(base_url=server.address, headers=headers, timeout=30)


def call(
    server: DevServer, namespace: str, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    with http_in(server, namespace) as http:
        answer = http.request(method, f"/v1/{path}", json=body)
    assert answer.status_code < 400, f"{method} {path}: {answer.status_code} {answer.text}"
    return answer.json() if answer.content else {}


def create_namespaces(server: DevServer, *paths: str) -> None:
    for path in paths:
        parent, _, name = path.rpartition("/")
        call(server, parent, "POST", f"sys/namespaces/{name}")


def register(server: DevServer, plugins: Path, plugin_type: str, name: str, version: str) -> None:
    command = f"{name}-{version.lstrip('v')}"
    sha256 = hashlib.sha256((plugins / command).read_bytes()).hexdigest()
    call(
        server,
        "",
        "PUT",
        f"sys/plugins/catalog/{plugin_type}/{name}",
        {"version": version, "command": command, "sha256": sha256},
    )


def deregister(server: DevServer, plugin_type: str, name: str, version: str) -> None:
    call(server, "", "DELETE", f"sys/plugins/catalog/{plugin_type}/{name}?version={version}")


def connect(
    server: DevServer, tmp: Path, namespace: str, name: str, version: str, mount: str = "db"
) -> None:
    """A database mount (when absent) and connection `name` pinned to demo-db `version`."""
    mounts = call(server, namespace, "GET", "sys/mounts")["data"]
    if f"{mount}/" not in mounts:
        call(server, namespace, "POST", f"sys/mounts/{mount}", {"type": "database"})
    database = tmp / "databases" / namespace.replace("/", "_") / name / "db.json"
    database.parent.mkdir(parents=True)
    demo_db.create_database(database, "admin", "secret-pw")
    call(
        server,
        namespace,
        "POST",
        f"{mount}/config/{name}",
        {
            "plugin_name": "demo-db",
            "plugin_version": version,
            "connection_url": demo_db.connection_url(database),
            "username": "admin",
            "password": "secret-pw",
            "allowed_roles": [name],
        },
    )


def catalog_versions(server: DevServer, name: str) -> list[str]:
    listed = call(server, "", "GET", "sys/plugins/catalog")["data"]["detailed"]
    return sorted(e["version"] for e in listed if e["name"] == name and not e.get("builtin"))


def cli(server: DevServer, *args: str) -> CliResult:
    return run_cli(server, *args)


# --- status -------------------------------------------------------------------------------


def test_status_covers_every_namespace_dead_mounts_pin_drift_and_connections(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    register(server, plugins, "secret", "demo-kv", "v1.0.0")
    register(server, plugins, "secret", "demo-kv", "v2.0.0")
    register(server, plugins, "database", "demo-db", "v1.0.0")
    create_namespaces(server, "ns1", TEAM)
    # An external mount inside ns1, and a built-in there that answers (not listed).
    call(
        server,
        "ns1",
        "POST",
        "sys/mounts/app",
        {"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}},
    )
    call(server, "ns1", "POST", "sys/mounts/plain", {"type": "transit"})
    connect(server, tmp_path, TEAM, "orders", "v1.0.0")

    healthy = cli(server, "status", "--json")
    assert healthy.exit_code == 0, healthy.output
    document = json.loads(healthy.stdout)
    assert document["namespaces"] == ["", "ns1/", "ns1/team-a/"]
    assert [(m["namespace"], m["path"]) for m in document["mounts"]] == [("ns1/", "app/")]
    (connection,) = document["connections"]
    assert (connection["namespace"], connection["mount"], connection["name"]) == (
        "ns1/team-a/",
        "db/",
        "orders",
    )
    assert (connection["plugin"], connection["version"]) == ("demo-db", "v1.0.0")
    assert connection["runs"] == "database/demo-db/v1.0.0" and connection["problems"] == []
    text = cli(server, "status")
    assert "secret app/ in namespace ns1/ demo-kv v1.0.0" in text.stdout, text.output
    assert "connection db/orders in namespace ns1/team-a/ demo-db v1.0.0" in text.stdout

    # Pinned to v2 but running v1 (a tune without its reload, as `--no-rollback` leaves it).
    call(server, "ns1", "POST", "sys/mounts/app/tune", {"plugin_version": "v2.0.0"})
    drifted = cli(server, "status", "--json")
    assert drifted.exit_code == 2, drifted.output
    (app,) = json.loads(drifted.stdout)["mounts"]
    assert app["version"] == "v2.0.0"
    assert "pinned to v2.0.0 but runs v1.0.0" in app["nodes"][0]["problems"][0]

    # v2 deregistered, then reloaded: the mount has no backend; the connection's pin is gone.
    deregister(server, "secret", "demo-kv", "v2.0.0")
    with http_in(server, "ns1") as http:  # 400 "plugin not found", and the mount is dead
        http.post("/v1/sys/plugins/reload/backend", json={"mounts": ["app/"]})
    deregister(server, "database", "demo-db", "v1.0.0")
    dead = cli(server, "status")
    assert dead.exit_code == 2, dead.output
    assert "DOES NOT ANSWER" in dead.stdout and "backend is nil" in dead.stdout, dead.output
    assert "pinned to database/demo-db/v1.0.0, which is not in the catalog" in dead.stdout


# --- connections in every namespace: in use, and pins to missing entries -------------------

WHOLE_SERVER = """\
version: 1
plugin_directory: {plugins}
settings: {{prune_plugins: {prune}}}
plugins:
  - {{type: database, name: demo-db, version: v1.0.0, command: demo-db-1.0.0}}
{absent}namespaces:
  ns1/:
    namespaces:
      team-a/: {{}}
"""
ABSENT_V2 = "  - {type: database, name: demo-db, version: v2.0.0, state: absent}\n"
TEAM_FILE = "version: 1\nnamespace: ns1/\n"


def test_a_version_only_a_connection_two_namespaces_down_uses_is_never_deregistered(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    register(server, plugins, "database", "demo-db", "v1.0.0")
    register(server, plugins, "database", "demo-db", "v2.0.0")
    create_namespaces(server, "ns1", TEAM)
    connect(server, tmp_path, TEAM, "orders", "v2.0.0")
    held = "secrets/db/connections/orders in namespace ns1/team-a/"
    forms = {
        "absent": WHOLE_SERVER.format(plugins=plugins, prune="false", absent=ABSENT_V2),
        "prune": WHOLE_SERVER.format(plugins=plugins, prune="true", absent=""),
    }
    for form, text in forms.items():
        desired = write_desired(tmp_path, text, f"{form}.yaml")
        with RequestLog(server) as log:
            result = cli(server, "apply", str(desired), "--yes")
        assert result.exit_code == 1, (form, result.output)
        assert "cannot deregister" in result.output and held in result.output, result.output
        assert log.writes() == [], form
    # A team file bound to ns1 never writes the catalog, pruning or not.
    team = write_desired(tmp_path, TEAM_FILE + "settings: {prune_plugins: true}\n", "team.yaml")
    planned = CliRun.invoke(
        ["plan", str(team), "--json"],
        env={"BAO_ADDR": server.address, "BAO_TOKEN": server.token, "BAO_NAMESPACE": "ns1"},
    )
    assert planned.exit_code == 0, planned.output
    assert not [a for a in json.loads(planned.stdout)["actions"] if a["kind"] == "deregister"]
    assert catalog_versions(server, "demo-db") == ["v1.0.0", "v2.0.0"]


def test_a_connection_pinned_to_a_version_the_catalog_lacks_is_a_plan_error(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    register(server, plugins, "database", "demo-db", "v1.0.0")
    register(server, plugins, "database", "demo-db", "v2.0.0")
    create_namespaces(server, "ns1", TEAM)
    connect(server, tmp_path, "", "orders", "v2.0.0")
    connect(server, tmp_path, TEAM, "billing", "v2.0.0")
    deregister(server, "database", "demo-db", "v2.0.0")  # by hand, behind the file's back
    desired = write_desired(
        tmp_path, WHOLE_SERVER.format(plugins=plugins, prune="false", absent="")
    )

    result = cli(server, "plan", str(desired), "--detailed-exitcode")

    assert result.exit_code == 1, result.output
    for name in (
        "secrets/db/connections/orders",
        "secrets/db/connections/billing in namespace ns1/team-a/",
    ):
        assert f"{name}: pinned to database/demo-db/v2.0.0, which is not in the catalog" in (
            result.output
        ), result.output


# --- the namespace guard ------------------------------------------------------------------

TEAM_POLICY = """
path "sys/plugins/catalog"        { capabilities = ["read"] }
path "sys/namespaces"             { capabilities = ["list"] }
path "sys/mounts"                 { capabilities = ["read"] }
path "sys/mounts/*"               { capabilities = ["create", "read", "update", "delete", "sudo"] }
path "sys/auth"                   { capabilities = ["read", "sudo"] }
path "sys/auth/*"                 { capabilities = ["create", "read", "update", "delete", "sudo"] }
path "sys/plugins/reload/backend" { capabilities = ["update", "sudo"] }
path "+/config/*"                 { capabilities = ["read", "list"] }
path "+"                          { capabilities = ["read"] }
path "auth/+"                     { capabilities = ["read"] }
"""


def team_token(server: DevServer, namespace: str) -> str:
    """A token made in `namespace` with a policy of that namespace only."""
    call(server, namespace, "PUT", "sys/policies/acl/team", {"policy": TEAM_POLICY})
    created = call(server, namespace, "POST", "auth/token/create", {"policies": ["team"]})
    return str(created["auth"]["client_token"])


def run_as(server: DevServer, token: str, namespace: str | None, *args: str) -> CliResult:
    env = {"BAO_ADDR": server.address, "BAO_TOKEN": token}
    if namespace is not None:
        env["BAO_NAMESPACE"] = namespace
    return CliRun.invoke(args, env=env)


def changes(log: RequestLog) -> list[tuple[str, str]]:
    """Requests that change the server (asking sys/capabilities-self changes nothing)."""
    return [w for w in log.writes() if w[1] != "/v1/sys/capabilities-self"]


GUARDED = """\
version: 1
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, sha256: {sha}}}
settings: {{prune_mounts: true}}
secrets:
  - {{path: app1/, plugin: demo-kv}}
namespaces:
  ns1/:
    namespaces:
      team-a/:
        secrets:
          - {{path: team-app/, plugin: demo-kv}}
"""


def test_a_whole_server_file_in_a_namespace_is_refused_before_any_write(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    register(server, plugins, "secret", "demo-kv", "v1.0.0")
    create_namespaces(server, "ns1", TEAM)
    call(server, TEAM, "POST", "sys/mounts/own", {"type": "kv"})
    sha = hashlib.sha256((plugins / "demo-kv-1.0.0").read_bytes()).hexdigest()
    desired = write_desired(tmp_path, GUARDED.format(sha=sha))

    for args in (("--namespace", TEAM), ()):
        with RequestLog(server) as log:
            env_namespace = None if args else TEAM
            result = run_as(
                server, server.token, env_namespace, "apply", str(desired), "--yes", *args
            )
        assert result.exit_code == 1, result.output
        assert "describes the whole server (it has `plugins:` and `namespaces:`)" in result.output
        assert "the namespace is set to ns1/team-a/" in result.output, result.output
        assert "unset BAO_NAMESPACE" in result.output
        assert changes(log) == []

    token = team_token(server, TEAM)
    with RequestLog(server) as log:
        scoped = run_as(server, token, None, "plan", str(desired))
    assert scoped.exit_code == 1, scoped.output
    assert "the token is scoped to namespace ns1/team-a/" in scoped.output, scoped.output
    assert "run it with a token of the root namespace" in scoped.output
    assert changes(log) == []
    # Nothing was created in the team's namespace, and its own mount is still there.
    assert call(server, TEAM, "GET", "sys/mounts")["data"].keys() >= {"own/"}
    with http_in(server, TEAM) as http:
        assert http.request("LIST", "/v1/sys/namespaces").status_code == 404


# --- team-scoped runs tell the truth ------------------------------------------------------


def test_a_team_token_exports_status_and_plans_what_its_namespace_really_has(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    register(server, plugins, "secret", "demo-kv", "v1.0.0")
    register(server, plugins, "database", "demo-db", "v1.0.0")
    create_namespaces(server, "ns1", TEAM)
    call(
        server,
        TEAM,
        "POST",
        "sys/mounts/app",
        {"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}},
    )
    connect(server, tmp_path, TEAM, "orders", "v1.0.0")
    token = team_token(server, TEAM)

    exported = tmp_path / "team-a.yaml"
    result = run_as(server, token, TEAM, "export", "--out", str(exported))
    assert result.exit_code == 0, result.output
    text = exported.read_text()
    assert "namespace: ns1/team-a/" in text and "plugins:" not in text, text
    assert "- path: app/\n    plugin: demo-kv\n    version: v1.0.0" in text, text
    assert "connections:\n      - name: orders\n        plugin: demo-db\n" in text, text
    assert "not in the catalog" not in text and "Not exported" not in text, text
    planned = run_as(server, token, TEAM, "plan", str(exported), "--detailed-exitcode")
    assert planned.exit_code == 0, planned.output
    assert "no changes" in planned.stdout, planned.output

    status = run_as(server, token, TEAM, "status", "--json")
    assert status.exit_code == 0, status.output
    document = json.loads(status.stdout)
    (app,) = document["mounts"]
    seen = app["nodes"][0]
    assert seen["answers"] and seen["catalog"]["sha256"], seen
    assert document["unreadable"], document  # says what it could not check
    (connection,) = document["connections"]
    assert connection["runs"] == "database/demo-db/v1.0.0"
    text_status = run_as(server, token, TEAM, "status")
    assert "missing" not in text_status.stdout, text_status.output
    assert "not readable with this token: single catalog entries" in text_status.stdout


def test_identical_entries_read_from_the_list_only_never_plan_an_update() -> None:
    sha = "ab" * 32
    desired = DesiredState.model_validate(
        {
            "version": 1,
            "plugins": [
                {
                    "type": "secret",
                    "name": "demo-kv",
                    "version": "v1.0.0",
                    "command": "demo-kv-1.0.0",
                    "sha256": sha,
                }
            ],
        }
    )
    listed = CatalogEntry(
        type="secret", name="demo-kv", version="v1.0.0", sha256=sha, details_read=False
    )
    assert plan(desired, LiveState(catalog=[listed])).actions == []
    changed = listed.model_copy(update={"sha256": "cd" * 32})
    assert [a.kind for a in plan(desired, LiveState(catalog=[changed])).actions] == ["update"]


# --- complete views -----------------------------------------------------------------------

SIX_MOUNTS = """\
version: 1
secrets:
  - {path: a/, plugin: kv}
  - {path: b/, plugin: kv}
auth:
  - {path: c/, plugin: approle}
namespaces:
  ns1/:
    secrets:
      - {path: d/, plugin: kv}
    namespaces:
      team-a/:
        secrets:
          - {path: e/, plugin: kv}
        auth:
          - {path: f/, plugin: approle}
"""


def test_validate_counts_the_mounts_of_every_namespace(tmp_path: Path) -> None:
    desired = write_desired(tmp_path, SIX_MOUNTS)
    result = CliRun.invoke(["validate", str(desired)])
    assert result.stdout == f"{desired}: valid (0 plugins, 6 mounts in 3 namespaces)\n"


def test_namespaces_the_file_leaves_or_lacks_are_named(server: DevServer, tmp_path: Path) -> None:
    create_namespaces(server, "ns1", TEAM)
    call(server, TEAM, "POST", "sys/mounts/e", {"type": "kv"})
    without_team = SIX_MOUNTS.split("    namespaces:\n      team-a/:", maxsplit=1)[0]
    desired = write_desired(tmp_path, without_team)

    planned = cli(server, "plan", str(desired), "--json")
    assert planned.exit_code == 0, planned.output
    warnings = {w["target"]: w["message"] for w in json.loads(planned.stdout)["warnings"]}
    assert "unmanaged namespace" in warnings["namespace ns1/team-a/"], warnings
    assert "secrets/e/" in warnings["namespace ns1/team-a/"]
    actions = json.loads(planned.stdout)["actions"]
    assert {(a["target"], a["namespace"]) for a in actions} == {
        ("secrets/a/", ""),
        ("secrets/b/", ""),
        ("auth/c/", ""),
        ("secrets/d/ in namespace ns1/", "ns1/"),
    }

    # A file bound to a namespace that does not exist says how to create it.
    team = write_desired(tmp_path, "version: 1\nnamespace: ns1/team-b/\n", "team-b.yaml")
    with RequestLog(server) as log:
        missing = run_as(server, server.token, "ns1/team-b", "apply", str(team), "--yes")
    assert missing.exit_code == 1, missing.output
    assert "namespace ns1/team-b/ does not exist" in missing.output, missing.output
    assert "bao namespace create -namespace=ns1 team-b" in missing.output
    assert changes(log) == []

    # A bound file names its namespace on every action, in text and JSON.
    bound = write_desired(
        tmp_path, "version: 1\nnamespace: ns1/team-a/\nsecrets:\n  - {path: g/, plugin: kv}\n"
    )
    shown = run_as(server, server.token, TEAM, "plan", str(bound))
    assert "+ enable secrets/g/ in namespace ns1/team-a/" in shown.stdout, shown.output
    as_json = json.loads(run_as(server, server.token, TEAM, "plan", str(bound), "--json").stdout)
    assert [a["namespace"] for a in as_json["actions"]] == ["ns1/team-a/"]


def test_an_update_names_the_connections_of_other_namespaces_left_on_the_old_binary() -> None:
    desired = DesiredState.model_validate(
        {
            "version": 1,
            "plugins": [
                {
                    "type": "database",
                    "name": "demo-db",
                    "version": "v1.0.0",
                    "command": "demo-db-1.0.0",
                    "sha256": "ab" * 32,
                }
            ],
        }
    )
    live = LiveState(
        catalog=[
            CatalogEntry(
                type="database",
                name="demo-db",
                version="v1.0.0",
                command="demo-db-1.0.0",
                sha256="cd" * 32,
            )
        ],
        namespaces=["ns1/", "ns1/team-a/"],
        elsewhere=[LiveMount(kind="secret", path="db/", plugin="database", namespace=TEAM + "/")],
        connections=[
            LiveConnection(
                mount="db/",
                name="orders",
                plugin="demo-db",
                plugin_version="v1.0.0",
                namespace=TEAM + "/",
            )
        ],
    )
    the_plan = plan(desired, live)
    assert [a.kind for a in the_plan.actions] == ["update"]
    (warning,) = [w for w in the_plan.warnings if w.target == "database/demo-db/v1.0.0"]
    assert "secrets/db/connections/orders in namespace ns1/team-a/" in warning.message


UPGRADE_EVERYWHERE = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: database, name: demo-db, version: v1.0.0, command: demo-db-1.0.0, state: absent}}
  - {{type: database, name: demo-db, version: v2.0.0, command: demo-db-2.0.0}}
namespaces:
  ns1/:
    namespaces:
      team-a/:
        secrets:
          - path: db/
            plugin: database
            connections:
              - {{name: orders, plugin: demo-db, version: v2.0.0}}
"""


def test_a_whole_server_file_re_pins_a_connection_two_namespaces_down_then_deregisters(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    register(server, plugins, "database", "demo-db", "v1.0.0")
    register(server, plugins, "database", "demo-db", "v2.0.0")
    create_namespaces(server, "ns1", TEAM)
    connect(server, tmp_path, TEAM, "orders", "v1.0.0")
    desired = write_desired(tmp_path, UPGRADE_EVERYWHERE.format(plugins=plugins))

    planned = json.loads(cli(server, "plan", str(desired), "--json").stdout)
    assert [(a["kind"], a["target"], a["namespace"]) for a in planned["actions"]] == [
        ("repin", "secrets/db/connections/orders in namespace ns1/team-a/", "ns1/team-a/"),
        ("deregister", "database/demo-db/v1.0.0", ""),
    ]
    applied = cli(server, "apply", str(desired), "--yes")
    assert applied.exit_code == 0, applied.output
    pin = call(server, TEAM, "GET", "db/config/orders")["data"]["plugin_version"]
    assert pin == "v2.0.0"
    assert catalog_versions(server, "demo-db") == ["v2.0.0"]
    again = cli(server, "plan", str(desired), "--detailed-exitcode")
    assert again.exit_code == 0, again.output
