"""plan/apply end to end against the real server, with built-in plugins only."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from reconciler.client import Client
from reconciler.errors import StaleState
from reconciler.reconcile import load_target, run_pass
from tests.helpers import (
    CliRun,
    RequestLog,
    TrapServer,
    api,
    mount_config,
    run_cli,
    write_desired,
)

KV_TTL = """\
version: 1
secrets:
  - path: app/
    plugin: kv
    options: {{version: "2"}}
    config: {{default_lease_ttl: {ttl}, max_lease_ttl: 24h}}
auth:
  - path: robots/
    plugin: approle
    description: machine logins
"""


def test_apply_then_second_apply_sends_no_write(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, KV_TTL.format(ttl="1h"))
    first = run_cli(server, "apply", str(desired), "--yes")
    assert first.exit_code == 0, first.output
    assert mount_config(server, "secret", "app/")["default_lease_ttl"] == 3600
    assert mount_config(server, "auth", "robots/")["max_lease_ttl"] == 0

    with RequestLog(server) as requests:
        again = run_cli(server, "apply", str(desired), "--yes")
    assert again.exit_code == 0, again.output
    assert "no changes" in again.stdout
    assert requests.writes() == [], requests.writes()


def test_duration_forms_compare_in_seconds(server, tmp_path: Path) -> None:
    assert run_cli(
        server, "apply", str(write_desired(tmp_path, KV_TTL.format(ttl="1h"))), "--yes"
    ).ok
    same = write_desired(tmp_path, KV_TTL.format(ttl="3600"))
    result = run_cli(server, "plan", str(same), "--detailed-exitcode")
    assert result.exit_code == 0, result.output
    changed = write_desired(tmp_path, KV_TTL.format(ttl="90m"))
    result = run_cli(server, "plan", str(changed), "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    assert "default_lease_ttl: 1h → 90m" in result.stdout


def test_plan_json_and_saved_plan(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, KV_TTL.format(ttl="1h"))
    saved = tmp_path / "plan.json"
    result = run_cli(server, "plan", str(desired), "--json", "--out", str(saved))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert json.loads(saved.read_text()) == document
    assert [a["kind"] for a in document["actions"]] == ["enable", "enable"]
    assert document["desired"]["path"] == desired.name  # relative to the saved plan
    applied = run_cli(server, "apply", str(saved), "--yes")
    assert applied.exit_code == 0, applied.output
    assert mount_config(server, "secret", "app/")["default_lease_ttl"] == 3600


def test_stale_saved_plan_is_refused(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, KV_TTL.format(ttl="1h"))
    saved = tmp_path / "plan.json"
    assert run_cli(server, "plan", str(desired), "--out", str(saved)).ok
    api(server).post("/v1/sys/mounts/intruder", json={"type": "kv"}).raise_for_status()
    # The cause, not the wording: the fingerprint check refuses it (StaleState), before
    # the plan is even compared action by action (a PlanFileError).
    with (
        Client(server.address, server.token) as client,
        RequestLog(server) as requests,
        pytest.raises(StaleState),
    ):
        run_pass(client, load_target(saved))
    assert requests.writes() == []
    result = run_cli(server, "apply", str(saved), "--yes")
    assert result.exit_code == 1
    assert "app/" not in api(server).get("/v1/sys/mounts").json()["data"]


def test_saved_plan_with_changed_desired_file_is_refused(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, KV_TTL.format(ttl="1h"))
    saved = tmp_path / "plan.json"
    assert run_cli(server, "plan", str(desired), "--out", str(saved)).ok
    desired.write_text(KV_TTL.format(ttl="2h"))
    result = run_cli(server, "apply", str(saved), "--yes")
    assert result.exit_code == 1
    assert "changed since the plan was made" in result.stderr


def test_apply_needs_yes_without_a_terminal(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, KV_TTL.format(ttl="1h"))
    result = run_cli(server, "apply", str(desired))
    assert result.exit_code == 1
    assert "--yes" in result.stderr
    assert "app/" not in api(server).get("/v1/sys/mounts").json()["data"]


PRUNE = """\
version: 1
settings: {{prune_mounts: {prune}, max_destroy: {max_destroy}}}
secrets:
  - path: keep/
    plugin: kv
"""


def _three_extra_mounts(server) -> None:
    for path in ("keep", "old-a", "old-b"):
        api(server).post(f"/v1/sys/mounts/{path}", json={"type": "kv"}).raise_for_status()


def test_removed_mount_without_prune_is_only_a_warning(server, tmp_path: Path) -> None:
    _three_extra_mounts(server)
    desired = write_desired(tmp_path, PRUNE.format(prune="false", max_destroy=3))
    result = run_cli(server, "apply", str(desired), "--yes")
    assert result.exit_code == 0, result.output
    # Warnings of one kind fold into one line (`-v` lists each).
    assert "2 × unmanaged mount: left alone: secrets/old-a/, secrets/old-b/" in result.stdout
    assert {"old-a/", "old-b/"} <= set(api(server).get("/v1/sys/mounts").json()["data"])


def test_prune_is_refused_without_allow_destroy_and_applied_with_it(server, tmp_path: Path) -> None:
    _three_extra_mounts(server)
    desired = write_desired(tmp_path, PRUNE.format(prune="true", max_destroy=3))
    plan = run_cli(server, "plan", str(desired))
    assert "! - disable secrets/old-a/" in plan.stdout
    refused = run_cli(server, "apply", str(desired), "--yes")
    assert refused.exit_code == 1
    assert "--allow-destroy" in refused.stderr
    assert {"old-a/", "old-b/"} <= set(api(server).get("/v1/sys/mounts").json()["data"])

    allowed = run_cli(server, "apply", str(desired), "--yes", "--allow-destroy")
    assert allowed.exit_code == 0, allowed.output
    mounts = set(api(server).get("/v1/sys/mounts").json()["data"])
    assert "keep/" in mounts
    assert not {"old-a/", "old-b/"} & mounts


def test_more_destruction_than_max_destroy_is_refused_even_when_allowed(
    server, tmp_path: Path
) -> None:
    _three_extra_mounts(server)
    desired = write_desired(tmp_path, PRUNE.format(prune="true", max_destroy=1))
    result = run_cli(server, "apply", str(desired), "--yes", "--allow-destroy")
    assert result.exit_code == 1
    assert "max_destroy" in result.output
    assert {"old-a/", "old-b/"} <= set(api(server).get("/v1/sys/mounts").json()["data"])


def test_moved_from_moves_a_mount_with_its_data(server, tmp_path: Path) -> None:
    http = api(server)
    http.post("/v1/sys/mounts/team-b-old", json={"type": "kv", "options": {"version": "1"}})
    http.put("/v1/team-b-old/greeting", json={"hello": "world"}).raise_for_status()
    desired = write_desired(
        tmp_path,
        "version: 1\nsecrets:\n  - path: team-b/\n    plugin: kv\n    moved_from: team-b-old/\n",
    )
    result = run_cli(server, "apply", str(desired), "--yes")
    assert result.exit_code == 0, result.output
    assert "→ move secrets/team-b/" in result.stdout
    mounts = http.get("/v1/sys/mounts").json()["data"]
    assert "team-b/" in mounts and "team-b-old/" not in mounts
    assert http.get("/v1/team-b/greeting").json()["data"] == {"hello": "world"}


def test_replace_of_protected_mount_is_a_plan_error(server, tmp_path: Path) -> None:
    api(server).post("/v1/sys/mounts/vault", json={"type": "kv"}).raise_for_status()
    desired = write_desired(
        tmp_path,
        "version: 1\nsecrets:\n  - path: vault/\n    plugin: transit\n    protect: true\n",
    )
    result = run_cli(server, "apply", str(desired), "--yes", "--allow-destroy")
    assert result.exit_code == 1
    assert "protected mount would be replaced" in result.stdout
    assert api(server).get("/v1/sys/mounts").json()["data"]["vault/"]["type"] == "kv"


def test_override_of_hard_wired_kv_is_refused_at_plan_time(server, tmp_path: Path) -> None:
    desired = write_desired(
        tmp_path,
        "version: 1\nplugins:\n  - type: secret\n    name: kv\n    version: v9.9.9\n"
        f"    sha256: {'ab' * 32}\n",
    )
    result = run_cli(server, "plan", str(desired))
    assert result.exit_code == 1
    assert "'kv' is hard-wired" in result.stdout
    catalog = api(server).get("/v1/sys/plugins/catalog").json()["data"]["detailed"]
    assert not [e for e in catalog if e["name"] == "kv" and not e["builtin"]]


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_invalid_file_opens_no_connection(tmp_path: Path, command: str) -> None:
    trap = TrapServer()
    try:
        desired = write_desired(
            tmp_path, "version: 1\nsecrets:\n  - path: a/\n    plugin: kv\n    bogus: 1\n"
        )
        result = CliRun.invoke(
            [command, str(desired), "--yes"] if command == "apply" else [command, str(desired)],
            env={"BAO_ADDR": trap.address, "BAO_TOKEN": "t"},
        )
        assert result.exit_code == 1
        assert f"{desired}:5:5" in result.stderr
    finally:
        trap.close()
    assert trap.connections == 0


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    desired = write_desired(tmp_path, "version: 1\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRun.invoke(
        ["plan", str(desired)], env={"BAO_ADDR": f"http://127.0.0.1:{port}", "BAO_TOKEN": "t"}
    )
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.output


def test_export_then_plan_is_empty(server, tmp_path: Path) -> None:
    http = api(server)
    http.post(
        "/v1/sys/mounts/apps",
        json={
            "type": "kv",
            "description": "apps",
            "options": {"version": "2"},
            "config": {"default_lease_ttl": "1h", "max_lease_ttl": "48h"},
        },
    ).raise_for_status()
    http.post("/v1/sys/mounts/crypto", json={"type": "transit"}).raise_for_status()
    http.post("/v1/sys/auth/robots", json={"type": "approle"}).raise_for_status()
    exported = tmp_path / "exported.yaml"
    result = run_cli(server, "export", "--out", str(exported))
    assert result.exit_code == 0, result.output
    assert run_cli(server, "validate", str(exported)).exit_code == 0
    plan = run_cli(server, "plan", str(exported), "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output


def test_request_errors_name_the_path(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, KV_TTL.format(ttl="1h"))
    result = CliRun.invoke(
        ["plan", str(desired)], env={"BAO_ADDR": server.address, "BAO_TOKEN": "not-a-token"}
    )
    assert result.exit_code == 1
    # The first read refused: the namespace walk (LIST) or a table (GET).
    assert "permission denied (403) on " in result.stderr, result.output
    assert " /v1/sys/" in result.stderr, result.output
    assert "not-a-token" not in result.output
