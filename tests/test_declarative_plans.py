"""Plans never write catalog entries that a `plugin` stanza of the server's configuration owns."""

from __future__ import annotations

from pathlib import Path

from tests.declarative_server import DeclarativeServer
from tests.helpers import RequestLog, run_cli, write_desired


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
