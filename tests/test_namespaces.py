"""Namespaces on a real server (SPEC §9): one catalog serves every namespace's mounts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.loader import load_desired
from reconciler.model import CatalogEntry, DesiredState, LiveMount, LiveState
from reconciler.plan import DisableAction
from reconciler.planner import plan
from reconciler.state import read_live_state
from tests.helpers import CliResult, CliRun, RequestLog, run_cli, write_desired

PRUNE_EVERYTHING_BUT = """\
version: 1
settings: {{prune_plugins: true}}
secrets:
  - {{path: {path}, plugin: kv}}
"""


def in_namespace(server: DevServer, namespace: str) -> httpx.Client:
    """A plain HTTP client for one namespace, independent of the code under test."""
    headers = {"X-Vault-Token": server.token, "X-Vault-Namespace": namespace}
    return httpx.Client(base_url=server.address, headers=headers, timeout=30)


def create_namespaces(server: DevServer, *paths: str) -> None:
    """Create each namespace in its parent (the server creates one level per call)."""
    for path in paths:
        parent, _, name = path.strip("/").rpartition("/")
        in_namespace(server, parent).post(f"/v1/sys/namespaces/{name}").raise_for_status()


def register(client: Client, plugins: Path, version: str) -> None:
    command = f"demo-kv-{version.lstrip('v')}"
    sha256 = hashlib.sha256((plugins / command).read_bytes()).hexdigest()
    client.register_plugin("secret", "demo-kv", version, command, sha256, [], {})


def enable_pinned(server: DevServer, namespace: str, path: str, version: str) -> None:
    body = {"type": "demo-kv", "config": {"plugin_version": version}}
    answer = in_namespace(server, namespace).post(f"/v1/sys/mounts/{path.rstrip('/')}", json=body)
    assert answer.status_code < 400, answer.text


def serves(server: DevServer, namespace: str, path: str) -> bool:
    """Whether the mount's backend answers a write and a read after a reload."""
    http = in_namespace(server, namespace)
    reload = http.post("/v1/sys/plugins/reload/backend", json={"mounts": [path]})
    if reload.status_code >= 400:
        return False
    written = http.put(f"/v1/{path}data/probe", json={"value": "ok"})
    return written.status_code < 400 and http.get(f"/v1/{path}data/probe").status_code == 200


def test_the_walk_finds_nested_namespaces_and_their_mounts(
    server: DevServer, client: Client
) -> None:
    create_namespaces(server, "team1", "team1/sub", "team1/sub/deep", "team2")
    in_namespace(server, "team1/sub/deep").post(
        "/v1/sys/mounts/kv-deep", json={"type": "kv"}
    ).raise_for_status()
    in_namespace(server, "team2").post(
        "/v1/sys/auth/robots", json={"type": "approle"}
    ).raise_for_status()

    live = read_live_state(client)

    assert live.namespaces == ["team1/", "team1/sub/", "team1/sub/deep/", "team2/"]
    elsewhere = {(m.namespace, m.kind, m.path) for m in live.elsewhere}
    assert ("team1/sub/deep/", "secret", "kv-deep/") in elsewhere
    assert ("team2/", "auth", "robots/") in elsewhere
    assert all(m.namespace == "" for m in live.mounts)
    assert "kv-deep/" not in {m.path for m in live.mounts}


def test_a_namespaced_prune_never_deregisters_what_a_root_mount_runs(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    register(client, plugins, "v2.0.0")
    enable_pinned(server, "", "app1/", "v2.0.0")
    create_namespaces(server, "team1")
    in_namespace(server, "team1").post("/v1/sys/mounts/kv", json={"type": "kv"}).raise_for_status()
    desired = write_desired(tmp_path, PRUNE_EVERYTHING_BUT.format(path="kv/"))

    with RequestLog(server) as log:
        result = run_cli(server, "apply", str(desired), "--namespace", "team1", "--yes")

    assert result.exit_code != 0, result.output
    assert "secret/demo-kv/v2.0.0" in result.output
    assert "secrets/app1/ in the root namespace" in result.output
    assert log.writes() == []
    assert [e.version for e in read_live_state(client).catalog if e.name == "demo-kv"] == ["v2.0.0"]
    assert serves(server, "", "app1/")


def test_a_root_prune_never_deregisters_what_a_namespaced_mount_runs(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    register(client, plugins, "v2.0.0")
    create_namespaces(server, "team1", "team1/sub")
    enable_pinned(server, "team1/sub", "nsapp/", "v2.0.0")
    desired = write_desired(tmp_path, PRUNE_EVERYTHING_BUT.format(path="cache/"))

    with RequestLog(server) as log:
        result = run_cli(server, "apply", str(desired), "--yes")

    assert result.exit_code != 0, result.output
    assert "secrets/nsapp/ in namespace team1/sub/" in result.output
    assert log.writes() == []
    assert serves(server, "team1/sub", "nsapp/")


def test_an_update_names_the_mounts_of_other_namespaces_that_keep_the_old_binary(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    register(client, plugins, "v2.0.0")
    create_namespaces(server, "team1")
    enable_pinned(server, "team1", "nsapp/", "v2.0.0")
    desired = write_desired(
        tmp_path,
        f"version: 1\nplugin_directory: {plugins}\nplugins:\n"
        "  - {type: secret, name: demo-kv, version: v2.0.0, command: demo-kv-2.0.0}\n",
    )

    result = run_cli(server, "plan", str(desired), "--replace", "secret/demo-kv/v2.0.0")

    assert "secrets/nsapp/ in namespace team1/" in result.output, result.output


WHOLE_SERVER = """\
version: 1
plugin_directory: {plugins}
plugins:
{plugins_section}
secrets:
  - {{path: app1/, plugin: demo-kv}}
  - {{path: cache/, plugin: kv}}
namespaces:
  team1/:
    secrets:
      - {{path: nsapp/, plugin: demo-kv}}
    namespaces:
      sub/:
        secrets:
          - {{path: deep/, plugin: demo-kv}}
        auth:
          - {{path: robots/, plugin: approle}}
  team2/:
    secrets:
      - {{path: other/, plugin: demo-kv}}
"""
V1 = "  - {type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}"
V2 = (
    "  - {type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, state: absent}\n"
    "  - {type: secret, name: demo-kv, version: v2.0.0, command: demo-kv-2.0.0}"
)
DEMO_MOUNTS = (("", "app1/"), ("team1", "nsapp/"), ("team1/sub", "deep/"), ("team2", "other/"))


def running_version(server: DevServer, namespace: str, path: str) -> str:
    answer = in_namespace(server, namespace).get(f"/v1/{path}info")
    answer.raise_for_status()
    return str(answer.json()["data"]["version"])


def test_one_file_for_the_whole_server_creates_namespaces_and_upgrades_them_all(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    first = write_desired(
        tmp_path, WHOLE_SERVER.format(plugins=plugins, plugins_section=V1), "server.yaml"
    )
    shown = run_cli(server, "plan", str(first))
    assert "(namespaces: root, team1/, team1/sub/, team2/)" in shown.stdout, shown.output
    assert "secrets/deep/ in namespace team1/sub/" in shown.stdout
    as_json = json.loads(run_cli(server, "plan", str(first), "--json").stdout)
    assert as_json["namespaces"] == ["", "team1/", "team1/sub/", "team2/"]
    enables = {
        (a["params"].get("namespace"), a["params"]["path"])
        for a in as_json["actions"]
        if a["kind"] == "enable"
    }
    assert ("team1/sub/", "deep/") in enables and (None, "app1/") in enables
    assert [a["target"] for a in as_json["actions"] if a["kind"] == "create-namespace"] == [
        "namespace team1/",
        "namespace team1/sub/",
        "namespace team2/",
    ]
    created = run_cli(server, "apply", str(first), "--yes")
    assert created.exit_code == 0, created.output
    assert "3 namespaces to create" in created.stdout
    live = read_live_state(client)
    assert live.namespaces == ["team1/", "team1/sub/", "team2/"]
    for namespace, path in DEMO_MOUNTS:
        assert running_version(server, namespace, path) == "v1.0.0"
    assert ("team1/sub/", "auth", "robots/") in {
        (m.namespace, m.kind, m.path) for m in live.elsewhere
    }

    with RequestLog(server) as log:
        again = run_cli(server, "apply", str(first), "--yes")
    assert again.exit_code == 0, again.output
    assert log.writes() == []

    upgraded = write_desired(
        tmp_path, WHOLE_SERVER.format(plugins=plugins, plugins_section=V2), "server.yaml"
    )
    with RequestLog(server) as log:
        result = run_cli(server, "apply", str(upgraded), "--yes")
    assert result.exit_code == 0, result.output
    assert len(log.matching("PUT", "/v1/sys/plugins/catalog/secret/demo-kv")) == 1
    # One reload per namespace, each in its own namespace with paths relative to it.
    assert len(log.matching("POST", "/v1/sys/plugins/reload/backend")) == 4
    for namespace, path in DEMO_MOUNTS:
        assert running_version(server, namespace, path) == "v2.0.0"
    assert [e.version for e in read_live_state(client).catalog if e.name == "demo-kv"] == ["v2.0.0"]

    exported = tmp_path / "export.yaml"
    assert run_cli(server, "export", "--out", str(exported)).exit_code == 0
    assert load_desired(exported).state.namespace_tree()[1][0] == "team1/sub/"
    planned = run_cli(server, "plan", str(exported))
    assert planned.exit_code == 0, planned.output
    assert "no changes" in planned.stdout, planned.output


TEAM_POLICY = """
path "sys/plugins/catalog"        { capabilities = ["read"] }
path "sys/namespaces"             { capabilities = ["list"] }
path "sys/mounts"                 { capabilities = ["read"] }
path "sys/mounts/*"               { capabilities = ["create", "read", "update", "delete", "sudo"] }
path "sys/auth"                   { capabilities = ["read", "sudo"] }
path "sys/auth/*"                 { capabilities = ["create", "read", "update", "delete", "sudo"] }
path "sys/plugins/reload/backend" { capabilities = ["update", "sudo"] }
"""

TEAM_FILE = """\
version: 1
namespace: team1/
secrets:
  - {path: nsapp/, plugin: demo-kv, version: v2.0.0}
  - {path: cache/, plugin: kv}
"""


def changes(log: RequestLog) -> list[tuple[str, str]]:
    """Requests that change the server: a POST to sys/capabilities-self (sent to name the
    missing capability after a 403, such as the root's refusal of a scoped token) only asks."""
    return [w for w in log.writes() if w[1] != "/v1/sys/capabilities-self"]


def scoped_token(server: DevServer, namespace: str) -> str:
    """A token created in `namespace` whose policy only covers that namespace."""
    http = in_namespace(server, namespace)
    http.put("/v1/sys/policies/acl/team", json={"policy": TEAM_POLICY}).raise_for_status()
    answer = http.post("/v1/auth/token/create", json={"policies": ["team"]})
    answer.raise_for_status()
    return str(answer.json()["auth"]["client_token"])


def run_as(server: DevServer, token: str, namespace: str, *args: str) -> CliResult:
    env = {"BAO_ADDR": server.address, "BAO_TOKEN": token, "BAO_NAMESPACE": namespace}
    return CliRun.invoke(args, env=env)


def test_a_team_file_converges_with_a_token_scoped_to_its_namespace(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    register(client, plugins, "v2.0.0")
    create_namespaces(server, "team1")
    token = scoped_token(server, "team1")
    desired = write_desired(tmp_path, TEAM_FILE)

    with RequestLog(server) as log:
        applied = run_as(server, token, "team1", "apply", str(desired), "--yes")
    assert applied.exit_code == 0, applied.output
    assert not [w for w in log.writes() if "/sys/plugins/catalog" in w[1]]
    assert running_version(server, "team1", "nsapp/") == "v2.0.0"

    with RequestLog(server) as log:
        again = run_as(server, token, "team1", "apply", str(desired), "--yes")
    assert again.exit_code == 0, again.output
    assert changes(log) == []

    exported = tmp_path / "team1-export.yaml"
    assert run_as(server, token, "team1", "export", "--out", str(exported)).exit_code == 0
    text = exported.read_text()
    assert "namespace: team1/" in text and "plugins:" not in text
    planned = run_as(server, token, "team1", "plan", str(exported))
    assert "no changes" in planned.stdout, planned.output


def test_a_team_file_with_plugins_is_a_load_error_at_its_line(tmp_path: Path) -> None:
    desired = write_desired(
        tmp_path,
        TEAM_FILE
        + "plugins:\n  - {type: secret, name: demo-kv, version: v2.0.0, sha256: "
        + "ab" * 32
        + "}\n",
    )
    result = CliRun.invoke(["validate", str(desired)])
    assert result.exit_code != 0, result.output
    assert f"{desired}:7:3:" in result.output, result.output  # the plugins: value
    assert "bound to a namespace" in result.output


def test_a_team_file_run_in_another_namespace_writes_nothing(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    register(client, plugins, "v2.0.0")
    create_namespaces(server, "team1", "team2")
    desired = write_desired(tmp_path, TEAM_FILE)

    with RequestLog(server) as log:
        result = run_as(server, server.token, "team2", "apply", str(desired), "--yes")

    assert result.exit_code != 0, result.output
    assert "bound to namespace team1/ but runs in namespace team2/" in result.output
    assert changes(log) == []


NAMESPACED_ERRORS = """\
version: 1
secrets:
  - {path: nsapp/, plugin: kv}
namespaces:
  team1/:
    secrets:
      - {path: nsapp/, plugin: kv}
      - {path: nsapp/, plugin: transit}
    namespaces:
      sub/:
        auth:
          - {path: token/, plugin: approle}
"""


def test_namespaced_mistakes_are_load_errors_at_their_line(tmp_path: Path) -> None:
    desired = write_desired(tmp_path, NAMESPACED_ERRORS)
    result = CliRun.invoke(["validate", str(desired)])
    assert result.exit_code != 0, result.output
    errors = result.stderr
    # The same path at the root and in team1/ is fine; twice in team1/ is not.
    assert f"{desired}:8:" in errors and "duplicate secrets path 'nsapp/'" in errors, errors
    assert f"{desired}:3:" not in errors, errors
    assert f"{desired}:12:" in errors and "reserved" in errors, errors

    nested_key = write_desired(tmp_path, "version: 1\nnamespaces:\n  team1/a/: {}\n")
    result = CliRun.invoke(["validate", str(nested_key)])
    assert f"{nested_key}:3:3:" in result.stderr, result.output
    assert "invalid namespace name 'team1/a/'" in result.stderr


def test_prunes_and_protect_work_per_namespace_and_leave_undeclared_ones_alone() -> None:
    desired = DesiredState.model_validate(
        {
            "version": 1,
            "settings": {"prune_mounts": True},
            "secrets": [{"path": "old/", "plugin": "kv"}],
            "namespaces": {
                "team1/": {"secrets": [{"path": "kept/", "plugin": "transit", "protect": True}]}
            },
        }
    )

    def kv(namespace: str, path: str) -> LiveMount:
        return LiveMount(kind="secret", path=path, plugin="kv", namespace=namespace)

    live = LiveState(
        catalog=[
            CatalogEntry(type="secret", name=name, version="v0.1.0+builtin", builtin=True)
            for name in ("kv", "transit")
        ],
        mounts=[kv("", "old/"), kv("", "stray/")],
        namespaces=["team1/", "team2/"],
        elsewhere=[kv("team1/", "kept/"), kv("team1/", "gone/"), kv("team2/", "theirs/")],
    )

    the_plan = plan(desired, live)

    disables = {
        (a.target, a.params.namespace) for a in the_plan.actions if isinstance(a, DisableAction)
    }
    assert disables == {
        ("secrets/stray/", None),
        ("secrets/gone/ in namespace team1/", "team1/"),
    }
    assert the_plan.namespaces == ["", "team1/"]
    # protect holds in a namespace as at the root: a replace of kept/ is refused.
    assert [e.target for e in the_plan.errors] == ["secrets/kept/ in namespace team1/"]
    assert not [a for a in the_plan.actions if "team2/" in a.target]
