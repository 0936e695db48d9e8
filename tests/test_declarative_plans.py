"""Plans never write catalog entries that a `plugin` stanza of the server's configuration owns."""

from __future__ import annotations

import json
from pathlib import Path

from tests.declarative_server import DeclarativeServer
from tests.helpers import CliRun, RequestLog, run_cli, write_desired


def owned_entry(server: DeclarativeServer) -> str:
    """The file's entry for the stanza demo-kv v1.0.0, every field as the stanza has it."""
    stanza = server.stanza("secret", "demo-kv", "v1.0.0")
    return (
        "  - {type: secret, name: demo-kv, version: v1.0.0, "
        f"command: {stanza.command}, sha256: {stanza.sha256}}}\n"
    )


def test_replace_naming_a_declarative_entry_is_a_plan_error_with_no_write(
    declarative_server: DeclarativeServer, tmp_path: Path
) -> None:
    server = declarative_server
    desired = write_desired(tmp_path, "version: 1\nplugins:\n" + owned_entry(server))

    with RequestLog(server) as requests:
        result = run_cli(
            server.server, "apply", str(desired), "--yes", "--replace", "secret/demo-kv/v1.0.0"
        )

    assert result.exit_code == 1, result.output
    assert "owned by the server configuration" in result.stdout + result.stderr
    assert requests.writes() == []
    entry = server.catalog_entry("secret", "demo-kv", "v1.0.0")
    assert entry is not None and entry["declarative"] is True
    since = server.reconfigure_and_wait(
        [server.stanza("secret", "demo-kv", "v1.0.0"), server.stanza("auth", "demo-auth", "v1.0.0")]
    )
    assert "conflicts with existing non-declarative plugin" not in server.log_since(since)


def test_a_matching_file_entry_is_a_noop_note(
    declarative_server: DeclarativeServer, tmp_path: Path
) -> None:
    server = declarative_server
    desired = write_desired(tmp_path, "version: 1\nplugins:\n" + owned_entry(server))

    result = run_cli(server.server, "plan", str(desired))

    assert result.exit_code == 0, result.output
    assert "every field matches the file: nothing written" in result.stdout + result.stderr


def test_a_differing_file_entry_is_a_plan_error(
    declarative_server: DeclarativeServer, tmp_path: Path
) -> None:
    server = declarative_server
    differing = owned_entry(server).replace("}", ", args: [--verbose]}")
    desired = write_desired(tmp_path, "version: 1\nplugins:\n" + differing)

    result = run_cli(server.server, "plan", str(desired))

    assert result.exit_code == 1, result.output
    assert "the file gives a different args" in result.stdout + result.stderr


def test_prune_and_absent_leave_declarative_entries_registered(
    declarative_server: DeclarativeServer, tmp_path: Path
) -> None:
    server = declarative_server
    desired = write_desired(
        tmp_path,
        "version: 1\nsettings: {prune_plugins: true}\nplugins:\n"
        "  - {type: secret, name: demo-kv, version: v1.0.0, state: absent}\n",
    )

    with RequestLog(server) as requests:
        result = run_cli(server.server, "apply", str(desired), "--yes")

    assert result.exit_code == 0, result.output
    assert requests.writes() == []
    for key in (("secret", "demo-kv", "v1.0.0"), ("auth", "demo-auth", "v1.0.0")):
        entry = server.catalog_entry(*key)
        assert entry is not None and entry["declarative"] is True, key
    assert "never deregistered" in result.stdout + result.stderr


def _upgrade_file(tmp_path: Path, third_pin: str, *, v1: bool = True, third: bool = True) -> Path:
    v1_item = "  - {type: secret, name: demo-kv, version: v1.0.0, managed_by: server}\n"
    return write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        + (v1_item if v1 else "")
        + "  - {type: secret, name: demo-kv, version: v2.0.0, managed_by: server}\n"
        "secrets:\n"
        "  - {path: one/, plugin: demo-kv, version: v2.0.0}\n"
        "  - {path: two/, plugin: demo-kv, version: v2.0.0}\n"
        + (f"  - {{path: three/, plugin: demo-kv, version: {third_pin}}}\n" if third else ""),
    )


def _served_version(server: DeclarativeServer, path: str) -> str:
    with server.http() as http:
        answer = http.get(f"/v1/{path}info")
    answer.raise_for_status()
    return str(answer.json()["data"]["version"])


def test_upgrade_through_a_stanza_tunes_reloads_and_keeps_data(
    declarative_server: DeclarativeServer, tmp_path: Path
) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")
    on_v1 = write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        "  - {type: secret, name: demo-kv, version: v1.0.0, managed_by: server}\n"
        "secrets:\n"
        "  - {path: one/, plugin: demo-kv, version: v1.0.0}\n"
        "  - {path: two/, plugin: demo-kv, version: v1.0.0}\n"
        "  - {path: three/, plugin: demo-kv, version: v1.0.0}\n",
    )
    first = run_cli(server.server, "apply", str(on_v1), "--yes")
    assert first.exit_code == 0, first.output
    with server.http() as http:
        for path in ("one", "two"):
            http.put(f"/v1/{path}/data/kept", json={"value": path}).raise_for_status()

    server.reconfigure_and_wait([v1, v2, auth])
    upgraded = _upgrade_file(tmp_path, "v1.0.0")
    plan = run_cli(server.server, "plan", str(upgraded))
    assert plan.exit_code == 0, plan.output
    assert "remove its stanza only after secrets/three/ move" in plan.stdout + plan.stderr
    with RequestLog(server) as requests:
        result = run_cli(server.server, "apply", str(upgraded), "--yes")

    assert result.exit_code == 0, result.output
    assert requests.matching("PUT", "/sys/plugins/catalog/") == []
    assert len(requests.matching("POST", "/tune")) == 2
    assert len(requests.matching("POST", "/sys/plugins/reload/backend")) >= 1
    for path in ("one", "two"):
        assert _served_version(server, f"{path}/") == "v2.0.0"
        with server.http() as http:
            kept = http.get(f"/v1/{path}/data/kept").json()["data"]["value"]
        assert kept == path
    assert _served_version(server, "three/") == "v1.0.0"
    entry = server.catalog_entry("secret", "demo-kv", "v2.0.0")
    assert entry is not None and entry["declarative"] is True

    # The v1 stanza goes while three/ is still pinned to it: the unchanged file, and a
    # file that no longer declares three/ at all, both fail naming the mount and v1.
    server.reconfigure_and_wait([v2, auth])
    for desired in (upgraded, _upgrade_file(tmp_path, "v2.0.0", v1=False, third=False)):
        stale = run_cli(server.server, "plan", str(desired))
        assert stale.exit_code == 1, stale.output
        assert (
            "secrets/three/: pinned to secret/demo-kv/v1.0.0, which is not in the catalog: "
            "its next reload will fail"
        ) in stale.stdout + stale.stderr
    # `status` marks it as well: the catalog has no entry for the version three/ is pinned to,
    # a flag (exit 2) although the mount still answers.
    status = run_cli(server.server, "status", "--json")
    assert status.exit_code == 2, status.output
    three = next(m for m in json.loads(status.stdout)["mounts"] if m["path"] == "three/")
    assert three["version"] == "v1.0.0"
    assert three["nodes"], three
    for seen in three["nodes"]:
        assert seen["catalog"]["sha256"] == "", seen
        assert seen["catalog"]["error"], seen
        assert "which is not in the catalog" in seen["problems"][0], seen
    text = run_cli(server.server, "status")
    assert "secret three/ demo-kv v1.0.0" in text.stdout, text.output
    assert "catalog missing: " in text.stdout, text.output


def test_a_reference_to_an_api_entry_is_a_plan_error(
    declarative_server: DeclarativeServer, tmp_path: Path
) -> None:
    server = declarative_server
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    with server.http() as http:
        http.put(
            "/v1/sys/plugins/catalog/secret/demo-kv",
            json={"command": v2.command, "sha256": v2.sha256, "version": "v2.0.0"},
        ).raise_for_status()
    desired = write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        "  - {type: secret, name: demo-kv, version: v2.0.0, managed_by: server}\n",
    )

    result = run_cli(server.server, "plan", str(desired))

    assert result.exit_code == 1, result.output
    assert "registered through the API, not by a stanza" in result.stdout + result.stderr


def test_validate_says_what_it_cannot_check_offline(tmp_path: Path) -> None:
    desired = write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        "  - {type: secret, name: demo-kv, version: v2.0.0, managed_by: server}\n"
        "secrets:\n  - {path: one/, plugin: demo-kv, version: v2.0.0}\n",
    )

    result = CliRun.invoke(["validate", str(desired)])

    assert result.exit_code == 0, result.output
    assert "cannot be checked offline; `plan` checks them" in result.stdout


def test_a_server_entry_refuses_fields_the_stanza_owns(tmp_path: Path) -> None:
    desired = write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        "  - {type: secret, name: demo-kv, version: v2.0.0, managed_by: server, command: x}\n",
    )

    result = CliRun.invoke(["validate", str(desired)])

    assert result.exit_code == 1
    assert "the server configuration owns this entry" in result.stdout + result.stderr


def test_export_refers_to_declarative_entries_and_plans_empty(
    declarative_server: DeclarativeServer, tmp_path: Path
) -> None:
    server = declarative_server
    with server.http() as http:
        http.post(
            "/v1/sys/mounts/pinned",
            json={"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}},
        ).raise_for_status()
    exported = tmp_path / "exported.yaml"
    assert run_cli(server.server, "export", "--out", str(exported)).ok

    text = exported.read_text()
    assert "managed_by: server" in text
    assert "command:" not in text
    plan = run_cli(server.server, "plan", str(exported))
    assert plan.exit_code == 0, plan.output
    assert "No changes" in plan.stdout or "no changes" in plan.stdout.lower(), plan.output

    pruning = exported.with_name("pruning.yaml")
    pruning.write_text(
        text.replace("version: 1\n", "version: 1\nsettings: {prune_plugins: true}\n", 1)
    )
    with RequestLog(server) as requests:
        applied = run_cli(server.server, "apply", str(pruning), "--yes")
    assert applied.exit_code == 0, applied.output
    assert requests.writes() == []
    for key in (("secret", "demo-kv", "v1.0.0"), ("auth", "demo-auth", "v1.0.0")):
        entry = server.catalog_entry(*key)
        assert entry is not None and entry["declarative"] is True, key


def test_a_reference_missing_from_the_catalog_is_never_registered(
    declarative_server: DeclarativeServer, tmp_path: Path
) -> None:
    server = declarative_server
    # A sha256 is given, so registering it would take nothing but the reference itself.
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    desired = write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        f"  - {{type: secret, name: demo-kv, version: v2.0.0, managed_by: server, "
        f"sha256: {v2.sha256}}}\n",
    )

    with RequestLog(server) as requests:
        result = run_cli(server.server, "apply", str(desired), "--yes")

    assert result.exit_code == 0, result.output
    assert "managed_by: server, but not in the catalog" in result.stdout + result.stderr
    assert requests.writes() == []
    assert server.catalog_entry("secret", "demo-kv", "v2.0.0") is None
