"""What a person reads: durations as written, each message once, exact 403s, no silent
`moved_from`, progress only where someone watches."""

from __future__ import annotations

from pathlib import Path

from reconciler.demo.devserver import DevServer
from tests.helpers import CliRun, api, run_cli, write_desired

TTL = "version: 1\nsecrets:\n  - {{path: app/, plugin: kv, config: {{default_lease_ttl: {ttl}}}}}\n"


def _token(server: DevServer, policy: str) -> str:
    http = api(server)
    http.put("/v1/sys/policies/acl/limited", json={"policy": policy}).raise_for_status()
    created = http.post("/v1/auth/token/create", json={"policies": ["limited"]})
    return str(created.json()["auth"]["client_token"])


def test_durations_are_shown_in_the_units_people_write(server, tmp_path: Path) -> None:
    assert run_cli(server, "apply", str(write_desired(tmp_path, TTL.format(ttl="1h"))), "--yes").ok
    result = run_cli(server, "plan", str(write_desired(tmp_path, TTL.format(ttl="30m"))))
    assert result.ok, result.output
    assert "default_lease_ttl: 1h → 30m" in result.stdout


def test_verification_is_announced_once(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, TTL.format(ttl="1h"))
    result = run_cli(server, "-v", "apply", str(desired), "--yes")
    assert result.ok, result.output
    assert result.stderr.count("verifying") == 1, result.stderr
    assert "verify…" not in result.stderr


def test_progress_only_on_a_terminal_or_when_asked(server, tmp_path: Path) -> None:
    result = run_cli(server, "apply", str(write_desired(tmp_path, TTL.format(ttl="1h"))), "--yes")
    assert result.ok, result.output
    assert "[1/1]" not in result.stderr and "verifying" not in result.stderr
    assert "Applied and verified" in result.stdout
    assert "\x1b[" not in result.stdout + result.stderr  # no colour off a terminal


def test_a_403_names_exactly_the_missing_capability_once(server, tmp_path: Path) -> None:
    everything_but_sudo = (
        'path "*" { capabilities = ["create", "read", "update", "delete", "list"] }'
    )
    token = _token(server, everything_but_sudo)
    desired = write_desired(tmp_path, "version: 1\nauth:\n  - {path: robots/, plugin: approle}\n")
    result = CliRun.invoke(
        ["-v", "apply", str(desired), "--yes"], env={"BAO_ADDR": server.address, "BAO_TOKEN": token}
    )
    assert result.exit_code == 1, result.output
    output = result.stdout + result.stderr
    assert "the token lacks the 'sudo' capability on sys/auth/robots" in output, output
    assert "'update'" not in output
    assert output.count("permission denied (403)") == 1, output
    assert "robots/" not in api(server).get("/v1/sys/auth").json()["data"]


def test_moved_from_with_both_paths_present_is_a_warning(server, tmp_path: Path) -> None:
    http = api(server)
    for path in ("old", "new"):
        http.post(f"/v1/sys/mounts/{path}", json={"type": "kv"}).raise_for_status()
    desired = write_desired(
        tmp_path, "version: 1\nsecrets:\n  - {path: new/, plugin: kv, moved_from: old/}\n"
    )
    result = run_cli(server, "plan", str(desired))
    assert result.ok, result.output
    assert "moved_from old/: both old/ and new/ exist" in result.stdout
