"""`reconciler policy`, proven per file form on the real server.

Sufficient: a token holding only the generated policy (no `default` policy) runs an
upgrade of two mounts with a canary, a forced rollback (a broken new binary), a watch
pass that renews the token, `status` and `export`; the read-only one plans, and its
apply is refused before any write. Minimal: without any one stanza, the cheap step that
needs it fails, naming the path. The forms: a whole-server file at the root, a file
bound to a namespace (its policy written in that namespace), and `--read-only`.

The minimality cases share one prepared server state per form (rebuilt only when
another test emptied the server): a missing write capability is refused before the
first write, so they leave it as it was.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins import demo_db
from reconciler.watch import PassOutcome, Watcher, WatchOptions
from tests.helpers import CliResult, CliRun, RequestLog, api, tampered_copy, write_desired
from tests.server_reset import reset_server
from tests.test_apply_plugins import sha256_of
from tests.test_namespaces import create_namespaces, in_namespace, running_version

ROOT_FILE = """\
version: 1
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, sha256: {v1}}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: {v2_command}, sha256: {v2}}}
secrets:
  - {{path: a1/, plugin: demo-kv, version: {version}}}
  - {{path: a2/, plugin: demo-kv, version: {version}}}
  - {{path: moved/, plugin: kv, moved_from: old/, config: {{default_lease_ttl: {ttl}}}}}
auth:
  - {{path: robots/, plugin: approle, config: {{default_lease_ttl: {ttl}}}}}
namespaces:
  team1/:
    secrets:
      - {{path: cache/, plugin: kv, config: {{default_lease_ttl: {ttl}}}}}
    namespaces:
      sub/:
        auth:
          - {{path: robots/, plugin: approle, config: {{default_lease_ttl: {ttl}}}}}
"""

TEAM_FILE = """\
version: 1
namespace: team1/
secrets:
  - {{path: a1/, plugin: demo-kv, version: {version}}}
  - {{path: a2/, plugin: demo-kv, version: {version}}}
auth:
  - {{path: robots/, plugin: approle, config: {{default_lease_ttl: {ttl}}}}}
namespaces:
  sub/:
    secrets:
      - {{path: deep/, plugin: kv, config: {{default_lease_ttl: {ttl}}}}}
"""

# A database mount whose one connection the file declares (the connection itself, with
# its credentials, is created by hand, as users do).
DB_FILE = """\
version: 1
plugins:
  - {{type: database, name: demo-db, version: v1.0.0, command: demo-db-1.0.0, sha256: {db1}}}
  - {{type: database, name: demo-db, version: v2.0.0, command: demo-db-2.0.0, sha256: {db2}}}
secrets:
  - {{path: db/, plugin: database, connections: [{{name: orders, plugin: demo-db, version: {version}}}]}}
"""

BROKEN = "policy-broken-kv-2.0.0"


@dataclass(frozen=True)
class Form:
    """One file form: the file, the namespace its token and policy live in."""

    name: str
    template: str
    namespace: str  # "" for the root
    read_only: bool = False

    def where(self, path: str) -> str:
        """A policy path as the server's messages name it (from the root)."""
        return f"{self.namespace}/{path}" if self.namespace else path


ROOT = Form("root", ROOT_FILE, "")
DB = Form("db", DB_FILE, "")
TEAM = Form("team", TEAM_FILE, "team1")
READ_ONLY = Form("read-only", ROOT_FILE, "", read_only=True)
TEAM_READ_ONLY = Form("team-read-only", TEAM_FILE, "team1", read_only=True)


@pytest.fixture(scope="module")
def broken(plugins: Path) -> Iterator[str]:
    """demo-kv v2.0.0 with one more line: the registered sha256 does not match, it cannot start."""
    path = tampered_copy(plugins, BROKEN)
    yield path.name
    path.unlink()


def _file(
    form: Form, plugins: Path, tmp_path: Path, *, version: str, ttl: str, v2: str = ""
) -> Path:
    text = form.template.format(
        v1=sha256_of(plugins / "demo-kv-1.0.0"),
        v2=sha256_of(plugins / "demo-kv-2.0.0"),
        db1=sha256_of(plugins / "demo-db-1.0.0"),
        db2=sha256_of(plugins / "demo-db-2.0.0"),
        v2_command=v2 or "demo-kv-2.0.0",
        version=version,
        ttl=ttl,
    )
    return write_desired(tmp_path, text, name=f"{form.name}-{version}-{ttl}-{v2 or 'good'}.yaml")


def _stanzas(hcl: str) -> dict[str, str]:
    """Path → its stanza's text."""
    return {
        match.group(1): match.group(0)
        for match in re.finditer(r'path "([^"]+)" \{\n[^}]*\}\n?', hcl)
    }


def _policy(desired: Path, *, read_only: bool) -> str:
    result = CliRun.invoke(["policy", str(desired), *(["--read-only"] if read_only else [])])
    assert result.ok, result.output
    return result.stdout


_token_names = itertools.count(1)


def _token(server: DevServer, namespace: str, policy: str) -> str:
    """A renewable token of `namespace` holding `policy` alone (not the default policy)."""
    http = in_namespace(server, namespace)
    name = f"reconciler-{next(_token_names)}"
    http.put(f"/v1/sys/policies/acl/{name}", json={"policy": policy}).raise_for_status()
    created = http.post(
        "/v1/auth/token/create",
        json={"policies": [name], "no_default_policy": True, "ttl": "1h", "renewable": True},
    )
    created.raise_for_status()
    return str(created.json()["auth"]["client_token"])


def _as(server: DevServer, token: str, namespace: str, *args: str) -> CliResult:
    env = {"BAO_ADDR": server.address, "BAO_TOKEN": token}
    if namespace:
        env["BAO_NAMESPACE"] = namespace
    return CliRun.invoke(list(args), env=env)


def _renewed(server: DevServer, namespace: str, token: str) -> bool:
    answer = in_namespace(server, namespace).post("/v1/auth/token/lookup", json={"token": token})
    answer.raise_for_status()
    return bool(answer.json()["data"].get("last_renewal_time"))


def _watch(server: DevServer, form: Form, token: str, desired: Path) -> PassOutcome:
    """One watch pass with `token`."""

    def client() -> Client:
        return Client.from_environment(
            address=server.address, token=token, namespace=form.namespace or None
        )

    watcher = Watcher(desired, client, WatchOptions(interval=60.0, debounce=0.1))
    return watcher.run_pass()


def _watch_pass(server: DevServer, form: Form, token: str, desired: Path) -> bool:
    return _watch(server, form, token, desired).ok


def _register(
    server: DevServer, plugins: Path, version: str, command: str, entry: str = "secret/demo-kv"
) -> None:
    """Register an example plugin, unless it is registered so already (a register starts
    the plugin once)."""
    http = api(server)
    body = {
        "version": version,
        "command": command,
        "sha256": sha256_of(plugins / f"{entry.split('/')[1]}-{version.lstrip('v')}"),
    }
    found = http.get(f"/v1/sys/plugins/catalog/{entry}", params={"version": version})
    if found.status_code == 200 and all(found.json()["data"][k] == body[k] for k in body):
        return
    api(server).put(f"/v1/sys/plugins/catalog/{entry}", json=body).raise_for_status()


def _fresh(server: DevServer, plugins: Path, form: Form) -> None:
    """Empty but for what the file does not manage: a namespace it does not declare, a
    catalog entry it does not declare, and the mount it moves; the catalog entries the
    file declares may be there already."""
    reset_server(server.address, server.token, keep_catalog=True)
    http = api(server)
    if form is DB:
        for version in ("v1.0.0", "v2.0.0"):
            command = f"demo-db-{version.lstrip('v')}"
            _register(server, plugins, version, command, "database/demo-db")
        http.post("/v1/sys/mounts/db", json={"type": "database"}).raise_for_status()
        _connect(server, plugins, "orders")
        return
    if form.namespace:
        create_namespaces(server, "team1", "team1/other")
        _register(server, plugins, "v1.0.0", "demo-kv-1.0.0")
        _register(server, plugins, "v2.0.0", "demo-kv-2.0.0")
        return
    create_namespaces(server, "other")
    http.post("/v1/sys/mounts/old", json={"type": "kv"}).raise_for_status()
    _register(server, plugins, "v1.0.0", "demo-auth-1.0.0", "auth/demo-auth")


def _connect(server: DevServer, plugins: Path, name: str) -> None:
    """Create connection `name` of db/, pinned to demo-db v1.0.0, by hand as users do."""
    database = plugins.parent / "policy-databases" / f"{name}-{next(_token_names)}.json"
    database.parent.mkdir(exist_ok=True)
    demo_db.create_database(database, "admin", "admin-password")
    connection = {
        "plugin_name": "demo-db",
        "plugin_version": "v1.0.0",
        "connection_url": demo_db.connection_url(database),
        "username": "admin",
        "password": "admin-password",
        "allowed_roles": [name],
    }
    api(server).post(f"/v1/db/config/{name}", json=connection).raise_for_status()


def _apply_as_root(server: DevServer, form: Form, desired: Path) -> None:
    result = _as(server, server.token, form.namespace, "apply", str(desired), "--yes")
    assert result.ok, result.output


# --- sufficient -----------------------------------------------------------------------


@pytest.mark.parametrize("form", [ROOT, TEAM], ids=lambda f: f.name)
def test_a_token_with_only_the_policy_upgrades_rolls_back_watches_and_reads(
    bao_server: DevServer, plugins: Path, broken: str, tmp_path: Path, form: Form
) -> None:
    server = bao_server
    _fresh(server, plugins, form)
    on_v1 = _file(form, plugins, tmp_path, version="v1.0.0", ttl="1h", v2=broken)
    writer = _token(server, form.namespace, _policy(on_v1, read_only=False))
    reader = _token(server, form.namespace, _policy(on_v1, read_only=True))
    if form.namespace:  # the catalog is the root's: the broken binary is registered there
        _register(server, plugins, "v2.0.0", broken)

    created = _as(server, writer, form.namespace, "apply", str(on_v1), "--yes")
    assert created.ok, created.output
    # A broken v2.0.0: the canary fails and is rolled back; the other mount never moved.
    failing = _file(form, plugins, tmp_path, version="v2.0.0", ttl="1h", v2=broken)
    failed = _as(server, writer, form.namespace, "apply", str(failing), "--yes")
    assert failed.exit_code == 1, failed.output
    assert "rolled back: secrets/a1/" in failed.stderr, failed.output
    assert "permission denied" not in failed.output, failed.output
    for mount in ("a1/", "a2/"):
        assert running_version(server, form.namespace, mount) == "v1.0.0"
    # A good v2.0.0: the canary, then the other mount.
    if form.namespace:
        _register(server, plugins, "v2.0.0", "demo-kv-2.0.0")
    upgrade = _file(form, plugins, tmp_path, version="v2.0.0", ttl="1h")
    upgraded = _as(server, writer, form.namespace, "apply", str(upgrade), "--yes")
    assert upgraded.ok, upgraded.output
    for mount in ("a1/", "a2/"):
        assert running_version(server, form.namespace, mount) == "v2.0.0"

    assert not _renewed(server, form.namespace, writer)
    assert _watch_pass(server, form, writer, upgrade)
    assert _renewed(server, form.namespace, writer)
    for token in (writer, reader):
        status = _as(server, token, form.namespace, "status")
        assert status.ok and "permission denied" not in status.stdout, status.output
    exported = tmp_path / "exported.yaml"
    export = _as(server, reader, form.namespace, "export", "--out", str(exported))
    assert export.ok, export.output
    again = _as(server, reader, form.namespace, "plan", str(exported), "--detailed-exitcode")
    assert again.exit_code == 0, again.output + exported.read_text()
    planned = _as(server, reader, form.namespace, "plan", str(upgrade), "--detailed-exitcode")
    assert planned.exit_code == 0, planned.output

    # The read-only token is refused before any write, and says why.
    drifted = _file(form, plugins, tmp_path, version="v2.0.0", ttl="2h")
    with RequestLog(server) as log:
        refused = _as(server, reader, form.namespace, "apply", str(drifted), "--yes")
    assert refused.exit_code == 1, refused.output
    assert "the token cannot write what the plan changes" in refused.stderr, refused.output
    assert "lacks 'update' on " + form.where("sys/auth/robots/tune") in refused.stderr
    assert log.writes() == []
    # In watch mode too, and retrying cannot help until the token or its policy changes.
    watched = _watch(server, form, reader, drifted)
    assert not watched.ok and not watched.retryable, watched.failures
    assert "the token cannot write" in watched.failures[0], watched.failures


def test_a_token_with_only_the_policy_repins_and_resets_a_declared_connection(
    bao_server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    server = bao_server
    _prepared.clear()
    _fresh(server, plugins, DB)
    on_v1 = _file(DB, plugins, tmp_path, version="v1.0.0", ttl="")
    writer = _token(server, "", _policy(on_v1, read_only=False))
    reader = _token(server, "", _policy(on_v1, read_only=True))
    planned = _as(server, reader, "", "plan", str(on_v1), "--detailed-exitcode")
    assert planned.exit_code == 0, planned.output

    upgrade = _file(DB, plugins, tmp_path, version="v2.0.0", ttl="")
    repinned = _as(server, writer, "", "apply", str(upgrade), "--yes")
    assert repinned.ok, repinned.output
    assert api(server).get("/v1/db/config/orders").json()["data"]["plugin_version"] == "v2.0.0"
    reset = _as(
        server, writer, "", "apply", str(upgrade), "--yes", "--replace", "database/demo-db/v2.0.0"
    )
    assert reset.ok, reset.output
    assert "reset" in reset.stdout, reset.output
    for token in (writer, reader):
        for command in ("status", "export"):
            shown = _as(server, token, "", command)
            assert shown.ok and "permission denied" not in shown.output, shown.output
    refused = _as(server, reader, "", "apply", str(on_v1), "--yes")
    assert "lacks 'create' or 'update' on db/config/orders" in refused.stderr, refused.output
    # A connection the file does not declare is not readable: the plan stops, naming it.
    _connect(server, plugins, "billing")
    stopped = _as(server, reader, "", "plan", str(upgrade))
    assert stopped.exit_code == 1, stopped.output
    assert "capability on db/config/billing" in stopped.stderr, stopped.output


def test_a_root_token_without_ha_status_works_on_one_node_with_a_warning(
    server: DevServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    desired = write_desired(tmp_path, "version: 1\nsecrets:\n  - {path: app/, plugin: kv}\n")
    hcl = _policy(desired, read_only=False)
    without = "\n".join(text for path, text in _stanzas(hcl).items() if path != "sys/ha-status")
    token = _token(server, "", without)
    planned = _as(server, token, "", "plan", str(desired))
    assert planned.ok, planned.output
    assert "may not read sys/ha-status (its policy does not grant" in caplog.text
    applied = _as(server, token, "", "apply", str(desired), "--yes")
    assert applied.ok, applied.output


def test_a_bound_file_grants_nothing_at_the_root_and_no_ha_status(tmp_path: Path) -> None:
    desired = write_desired(tmp_path, TEAM_FILE.format(version="v1.0.0", ttl="1h"))
    hcl = _policy(desired, read_only=False)
    paths = _stanzas(hcl)
    assert "sys/ha-status" not in paths and not [p for p in paths if "team1" in p], paths
    assert "# Write it in namespace team1/ (its paths are relative to it)" in hcl
    assert 'path "sys/plugins/reload/backend"' in hcl


def test_only_the_declared_connections_are_read(tmp_path: Path) -> None:
    desired = write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        "  - {type: database, name: demo-db, version: v1.0.0, sha256: " + "ab" * 32 + "}\n"
        "secrets:\n"
        "  - {path: db/, plugin: database, connections: [{name: orders, plugin: demo-db}]}\n"
        "  - {path: app/, plugin: kv}\n",
    )
    for read_only in (True, False):
        stanzas = _stanzas(_policy(desired, read_only=read_only))
        config = sorted(path for path in stanzas if "config" in path)
        assert config == ["db/config/", "db/config/orders"], config
    stanzas = _stanzas(_policy(desired, read_only=False))
    assert '"read", "update"' in stanzas["db/config/orders"]
    assert "db/reset/orders" in stanzas


# --- minimal --------------------------------------------------------------------------

# (form, stanza, situation): the situation in which the step that needs the stanza runs.
#   plan     plan, on the prepared state (converged on the first file)
#   next     apply of the next file (v2.0.0, other TTLs) on the prepared state
#   fresh    apply on a server that has none of the file's mounts, namespaces or entries
#   bare     the same, without the mount that `moved_from` names either
#   watch    a watch pass on the prepared state (nothing to change): the token is renewed
#   grown    apply of a file with one more mount: refused before the first write
#   refusal  the read-only token's apply of the next file: refused before the first write
#   replace  apply --replace of the entry the connection runs: re-registered, connection reset
NEEDED = [
    # The root form and its read-only policy, on the prepared state.
    (ROOT, "sys/plugins/catalog", "plan"),
    (ROOT, "sys/plugins/catalog/+/+", "plan"),
    (ROOT, "sys/mounts", "plan"),
    (ROOT, "sys/auth", "plan"),
    (ROOT, "sys/namespaces", "plan"),
    (ROOT, "+/sys/namespaces", "plan"),
    (ROOT, "+/sys/mounts", "plan"),
    (ROOT, "+/sys/auth", "plan"),
    (ROOT, "team1/sub/sys/namespaces", "plan"),
    (ROOT, "team1/sub/sys/mounts", "plan"),
    (ROOT, "team1/sub/sys/auth", "plan"),
    (ROOT, "sys/ha-status", "plan"),
    (ROOT, "auth/token/lookup-self", "watch"),
    (ROOT, "auth/token/renew-self", "watch"),
    (ROOT, "sys/plugins/catalog/secret/demo-kv", "replace"),
    (ROOT, "sys/mounts/a1/tune", "next"),
    (ROOT, "sys/mounts/a2/tune", "next"),
    (ROOT, "sys/plugins/reload/backend", "next"),
    (ROOT, "sys/mounts/moved/tune", "next"),
    (ROOT, "sys/auth/robots/tune", "next"),
    (ROOT, "team1/sys/mounts/cache/tune", "next"),
    (ROOT, "team1/sub/sys/auth/robots/tune", "next"),
    (READ_ONLY, "sys/plugins/catalog", "plan"),
    (READ_ONLY, "sys/plugins/catalog/+/+", "plan"),
    (READ_ONLY, "sys/mounts", "plan"),
    (READ_ONLY, "sys/auth", "plan"),
    (READ_ONLY, "sys/namespaces", "plan"),
    (READ_ONLY, "+/sys/namespaces", "plan"),
    (READ_ONLY, "+/sys/mounts", "plan"),
    (READ_ONLY, "+/sys/auth", "plan"),
    (READ_ONLY, "team1/sub/sys/namespaces", "plan"),
    (READ_ONLY, "team1/sub/sys/mounts", "plan"),
    (READ_ONLY, "team1/sub/sys/auth", "plan"),
    (READ_ONLY, "sys/ha-status", "plan"),
    (READ_ONLY, "sys/capabilities-self", "refusal"),
    # The root form on an emptied server.
    (ROOT, "sys/namespaces/team1", "fresh"),
    (ROOT, "team1/sys/namespaces/sub", "fresh"),
    (ROOT, "sys/mounts/a1", "fresh"),
    (ROOT, "sys/mounts/a2", "fresh"),
    (ROOT, "sys/auth/robots", "fresh"),
    (ROOT, "team1/sys/mounts/cache", "fresh"),
    (ROOT, "team1/sub/sys/auth/robots", "fresh"),
    (ROOT, "sys/remount", "fresh"),
    (ROOT, "sys/remount/status/*", "fresh"),
    (ROOT, "sys/mounts/moved", "bare"),
    (ROOT, "sys/capabilities-self", "grown"),
    # The bound form, on its prepared state, then on an emptied namespace.
    (TEAM, "sys/plugins/catalog", "plan"),
    (TEAM, "sys/mounts", "plan"),
    (TEAM, "sys/auth", "plan"),
    (TEAM, "sys/namespaces", "plan"),
    (TEAM, "+/sys/namespaces", "plan"),
    (TEAM, "+/sys/mounts", "plan"),
    (TEAM, "+/sys/auth", "plan"),
    (TEAM, "auth/token/lookup-self", "watch"),
    (TEAM, "auth/token/renew-self", "watch"),
    (TEAM, "sys/mounts/a1/tune", "next"),
    (TEAM, "sys/mounts/a2/tune", "next"),
    (TEAM, "sys/plugins/reload/backend", "next"),
    (TEAM, "sys/auth/robots/tune", "next"),
    (TEAM, "sub/sys/mounts/deep/tune", "next"),
    (TEAM_READ_ONLY, "sys/plugins/catalog", "plan"),
    (TEAM_READ_ONLY, "sys/mounts", "plan"),
    (TEAM_READ_ONLY, "sys/auth", "plan"),
    (TEAM_READ_ONLY, "sys/namespaces", "plan"),
    (TEAM_READ_ONLY, "+/sys/namespaces", "plan"),
    (TEAM_READ_ONLY, "+/sys/mounts", "plan"),
    (TEAM_READ_ONLY, "+/sys/auth", "plan"),
    (TEAM_READ_ONLY, "sys/capabilities-self", "refusal"),
    (TEAM, "sys/namespaces/sub", "fresh"),
    (TEAM, "sys/mounts/a1", "fresh"),
    (TEAM, "sys/mounts/a2", "fresh"),
    (TEAM, "sys/auth/robots", "fresh"),
    (TEAM, "sub/sys/mounts/deep", "fresh"),
    (TEAM, "sys/capabilities-self", "grown"),
    # A declared database connection.
    (DB, "db/config/", "plan"),
    (DB, "db/config/orders", "plan"),
    (DB, "sys/plugins/catalog/database/demo-db", "replace"),
    (DB, "db/reset/orders", "replace"),
]
# The DB form's other stanzas follow the same rules as the root form's rows above.
DB_AS_ROOT = {
    "sys/plugins/catalog",
    "sys/plugins/catalog/+/+",
    "sys/mounts",
    "sys/auth",
    "sys/namespaces",
    "+/sys/namespaces",
    "+/sys/mounts",
    "+/sys/auth",
    "sys/ha-status",
    "auth/token/lookup-self",
    "auth/token/renew-self",
    "sys/capabilities-self",
    "sys/mounts/db",
    "sys/mounts/db/tune",
}


@pytest.mark.parametrize("form", [ROOT, TEAM, READ_ONLY, TEAM_READ_ONLY, DB], ids=lambda f: f.name)
def test_every_stanza_has_a_row(plugins: Path, tmp_path: Path, form: Form) -> None:
    desired = _file(form, plugins, tmp_path, version="v1.0.0", ttl="1h")
    generated = set(_stanzas(_policy(desired, read_only=form.read_only)))
    rows = {path for f, path, _ in NEEDED if f is form}
    assert generated == rows | (DB_AS_ROOT if form is DB else set())


# What the prepared state is, per form: the accessor of its mount a1/ (gone after a reset).
_prepared: dict[str, str] = {}


def _a1_accessor(server: DevServer, form: Form) -> str:
    """The accessor of the form's first mount: a new one after a reset."""
    mounts = in_namespace(server, form.namespace).get("/v1/sys/mounts").json()["data"]
    return str(mounts.get("db/" if form is DB else "a1/", {}).get("accessor", ""))


def _prepare(server: DevServer, plugins: Path, tmp_path: Path, form: Form) -> None:
    """Converged on the form's first file, as root; built again only when it is gone."""
    key = "db" if form is DB else form.namespace or "root"
    if _prepared.get(key) and _a1_accessor(server, form) == _prepared[key]:
        return
    _prepared.clear()
    _fresh(server, plugins, form)
    if form is not DB:  # the connection was made by hand, pinned like the file
        _apply_as_root(server, form, _file(form, plugins, tmp_path, version="v1.0.0", ttl="1h"))
    _prepared[key] = _a1_accessor(server, form)


def _names(form: Form, path: str) -> str:
    """A pattern for how a failure names the path: a `+` is any one namespace."""
    pattern = re.escape(form.where(path)).replace(r"\+", "[^ /]+").replace(r"\*", "")
    if pattern.endswith("/") and not path.endswith("*"):  # a LIST names the path without it
        pattern += "?"
    return rf"on {pattern}[ ,]"


@pytest.mark.parametrize(
    ("form", "path", "situation"), NEEDED, ids=[f"{f.name}:{p}" for f, p, _ in NEEDED]
)
def test_without_any_one_stanza_the_step_that_needs_it_fails(
    bao_server: DevServer,
    plugins: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    form: Form,
    path: str,
    situation: str,
) -> None:
    server = bao_server
    first = _file(form, plugins, tmp_path, version="v1.0.0", ttl="1h")
    stanzas = _stanzas(_policy(first, read_only=form.read_only))
    without = "\n".join(text for other, text in stanzas.items() if other != path)
    if situation in ("fresh", "bare", "grown"):
        _prepared.clear()
        _fresh(server, plugins, form)
        if situation == "bare":
            api(server).delete("/v1/sys/mounts/old").raise_for_status()
    else:
        _prepare(server, plugins, tmp_path, form)
    token = _token(server, form.namespace, without)

    if situation == "watch":
        assert _watch_pass(server, form, token, first)  # nothing to change
        assert not _renewed(server, form.namespace, token)
        return
    if situation == "grown":
        # Without the question, the writes start and stop at the first refused one.
        grown = write_desired(
            tmp_path,
            first.read_text().replace("- {path: a1/", "- {path: a0/, plugin: kv}\n  - {path: a1/"),
        )
        with RequestLog(server) as log:
            result = _as(server, token, form.namespace, "apply", str(grown), "--yes")
        assert result.exit_code == 1, result.output
        assert log.writes(), "the writes started"
        assert re.search(_names(form, "sys/mounts/a0"), result.stderr), result.stderr
        assert "the token cannot write" not in result.stderr, result.output
        return
    if situation == "refusal":
        following = _file(form, plugins, tmp_path, version="v2.0.0", ttl="3h")
        result = _as(server, token, form.namespace, "apply", str(following), "--yes")
        assert result.exit_code == 1, result.output
        assert "the token cannot write" not in result.stderr, result.output
        return
    if situation == "plan":
        result = _as(server, token, form.namespace, "plan", str(first))
        if path == "sys/ha-status":
            assert result.ok, result.output
            assert "may not read sys/ha-status" in caplog.text
            return
    else:
        desired, replace = first, []
        if situation == "next":
            desired = _file(form, plugins, tmp_path, version="v2.0.0", ttl="3h")
        if situation == "replace":
            entry = "database/demo-db" if form is DB else "secret/demo-kv"
            replace = ["--replace", f"{entry}/v1.0.0"]
        with RequestLog(server) as log:
            result = _as(server, token, form.namespace, "apply", str(desired), "--yes", *replace)
        # Refused before the first write: the prepared state stays as it was.
        assert log.writes() == []
    assert result.exit_code == 1, result.output
    assert re.search(_names(form, path), result.stderr), result.stderr


class _Writes:
    """Every request sent while active, with its namespace and JSON body (an independent
    record of what the apply asked and wrote, at the transport)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, bytes]] = []
        self._original = httpx.HTTPTransport.handle_request

    def __enter__(self) -> _Writes:
        original, sent = self._original, self.sent

        def handle(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            namespace = request.headers.get("X-Vault-Namespace", "").strip("/")
            path = request.url.path.removeprefix("/v1/")
            sent.append((request.method, namespace, path, request.read()))
            return original(transport, request)

        httpx.HTTPTransport.handle_request = handle  # type: ignore[method-assign]
        return self

    def __exit__(self, *_exc: object) -> None:
        httpx.HTTPTransport.handle_request = self._original  # type: ignore[method-assign]


def test_the_writes_asked_about_are_the_writes_sent(
    bao_server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    """The question before the first write names each path the apply then writes to, as
    the policy does (namespaced ones prefixed): the refusals above are the server's."""
    server = bao_server
    _prepared.clear()
    _fresh(server, plugins, ROOT)
    api(server).delete("/v1/sys/plugins/catalog/secret/demo-kv", params={"version": "v2.0.0"})
    stanzas = _stanzas(
        _policy(_file(ROOT, plugins, tmp_path, version="v1.0.0", ttl="1h"), read_only=False)
    )
    # From empty: namespaces, a register, enables, a move; then an upgrade: tunes, reloads.
    every: set[str] = set()
    for version, ttl in (("v1.0.0", "1h"), ("v2.0.0", "3h")):
        desired = _file(ROOT, plugins, tmp_path, version=version, ttl=ttl)
        with _Writes() as record:
            applied = _as(server, server.token, "", "apply", str(desired), "--yes")
        assert applied.ok, applied.output
        (question,) = [body for m, _, p, body in record.sent if p == "sys/capabilities-self"]
        asked = set(json.loads(question)["paths"])
        written = {
            f"{namespace}/{path}" if namespace else path
            for method, namespace, path, _ in record.sent
            if method in {"POST", "PUT", "DELETE"} and path != "sys/capabilities-self"
        }
        assert written == asked - {"sys/remount/status/"}, (sorted(written), sorted(asked))
        assert {path for path in written if path not in stanzas} == set()
        every |= written
    kinds = {
        "sys/namespaces/team1",
        "team1/sys/namespaces/sub",
        "sys/plugins/catalog/secret/demo-kv",
        "team1/sub/sys/auth/robots",
        "sys/remount",
        "team1/sys/mounts/cache/tune",
        "sys/plugins/reload/backend",
    }
    assert kinds <= every, sorted(every)
    _prepared.clear()


def test_the_reload_is_granted_where_mounts_can_run_an_external_plugin(tmp_path: Path) -> None:
    builtin_only = "version: 1\nsecrets:\n  - {path: app/, plugin: kv}\n"
    cases = {
        builtin_only: set(),
        builtin_only + "settings: {reload_unmanaged: true}\n": {"sys/plugins/reload/backend"},
        builtin_only
        + "plugins:\n  - {type: secret, name: transit, version: v1.0.0, sha256: "
        + "ab" * 32
        + "}\nnamespaces:\n  team1/:\n    secrets:\n"
        "      - {path: t/, plugin: transit, version: v1.0.0}\n": {
            "team1/sys/plugins/reload/backend"
        },
    }
    for text, expected in cases.items():
        desired = write_desired(tmp_path, text)
        stanzas = _stanzas(_policy(desired, read_only=False))
        assert {p for p in stanzas if p.endswith("reload/backend")} == expected, text
