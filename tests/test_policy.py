"""`reconciler policy`: the generated policy is sufficient (a token holding only it applies
the file, the read-only one plans it) and minimal (without any one stanza, the step that
needs it fails with a 403 naming the capability), on the real server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.demo.devserver import DevServer
from tests.helpers import CliResult, CliRun, api, mount_config, run_cli, write_desired
from tests.server_reset import reset_server

DESIRED = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
secrets:
  - {{path: app/, plugin: kv, config: {{default_lease_ttl: 1h}}}}
  - {{path: ext/, plugin: demo-kv}}
  - {{path: moved/, plugin: kv, moved_from: old/}}
auth:
  - {{path: robots/, plugin: approle, config: {{default_lease_ttl: 2h}}}}
"""


def _stanzas(hcl: str) -> dict[str, str]:
    """Path → its stanza's text."""
    return {
        match.group(1): match.group(0)
        for match in re.finditer(r'path "([^"]+)" \{\n[^}]*\}\n?', hcl)
    }


def _token(server: DevServer, name: str, policy: str) -> str:
    http = api(server)
    http.put(f"/v1/sys/policies/acl/{name}", json={"policy": policy}).raise_for_status()
    created = http.post("/v1/auth/token/create", json={"policies": [name]})
    return str(created.json()["auth"]["client_token"])


def _as(server: DevServer, token: str, *args: str) -> CliResult:
    return CliRun.invoke(list(args), env={"BAO_ADDR": server.address, "BAO_TOKEN": token})


def _fresh(server: DevServer) -> None:
    reset_server(server.address, server.token)
    api(server).post("/v1/sys/mounts/old", json={"type": "kv"}).raise_for_status()


def _drifted(server: DevServer, desired: Path) -> None:
    """Converged, then tuned out of band: the next apply needs only the tunes."""
    _fresh(server)
    assert run_cli(server, "apply", str(desired), "--yes").ok
    http = api(server)
    http.post("/v1/sys/mounts/app/tune", json={"default_lease_ttl": "5m"}).raise_for_status()
    http.post("/v1/sys/auth/robots/tune", json={"default_lease_ttl": "5m"}).raise_for_status()


@pytest.fixture
def desired(plugins: Path, tmp_path: Path) -> Path:
    return write_desired(tmp_path, DESIRED.format(plugins=plugins))


def test_the_policy_is_sufficient_for_apply_and_the_read_only_one_for_plan(
    server: DevServer, desired: Path
) -> None:
    apply_policy = CliRun.invoke(["policy", str(desired)])
    plan_policy = CliRun.invoke(["policy", str(desired), "--read-only"])
    assert apply_policy.ok and plan_policy.ok, apply_policy.output + plan_policy.output
    _fresh(server)
    writer = _token(server, "reconciler-apply", apply_policy.stdout)
    reader = _token(server, "reconciler-plan", plan_policy.stdout)
    applied = _as(server, writer, "apply", str(desired), "--yes")
    assert applied.ok, applied.output
    assert mount_config(server, "secret", "app/")["default_lease_ttl"] == 3600
    assert "moved/" in api(server).get("/v1/sys/mounts").json()["data"]
    planned = _as(server, reader, "plan", str(desired), "--detailed-exitcode")
    assert planned.exit_code == 0, planned.output
    # The read-only policy cannot write.
    _drifted(server, desired)
    refused = _as(server, reader, "apply", str(desired), "--yes")
    assert refused.exit_code == 1 and "permission denied (403)" in refused.stderr


# Each stanza of the apply policy, and the situation in which apply needs it.
NEEDED = [
    ("sys/plugins/catalog", "fresh"),
    ("sys/mounts", "fresh"),
    ("sys/auth", "fresh"),
    ("sys/namespaces", "fresh"),
    ("sys/plugins/catalog/secret/demo-kv", "fresh"),
    ("sys/mounts/app", "fresh"),
    ("sys/mounts/ext", "fresh"),
    ("sys/auth/robots", "fresh"),
    ("sys/remount", "fresh"),
    ("sys/mounts/app/tune", "drifted"),
    ("sys/auth/robots/tune", "drifted"),
]


@pytest.mark.parametrize(("path", "situation"), NEEDED)
def test_every_stanza_is_needed(
    server: DevServer, desired: Path, path: str, situation: str
) -> None:
    stanzas = _stanzas(CliRun.invoke(["policy", str(desired)]).stdout)
    assert path in stanzas, sorted(stanzas)
    without = "\n".join(text for other, text in stanzas.items() if other != path)
    if situation == "fresh":
        _fresh(server)
    else:
        _drifted(server, desired)
    token = _token(server, "reconciler-short", without)
    result = _as(server, token, "apply", str(desired), "--yes")
    assert result.exit_code == 1, result.output
    assert f"capability on {path}" in result.stderr, result.stderr
