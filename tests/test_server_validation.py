"""Fields the server would refuse or silently drop are refused at load time, with
line:column. Each rule is first shown to hold on the real server, then in the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.durations import SERVER_MAX_SECONDS
from reconciler.errors import DesiredStateError
from reconciler.loader import load_desired
from tests.helpers import CliRun, api, mount_config, run_cli, write_desired


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(DesiredStateError) as caught:
        load_desired(write_desired(tmp_path, text))
    return [str(problem) for problem in caught.value.problems]


def test_server_drops_token_type_on_a_secrets_enable_and_refuses_its_tune(server) -> None:
    http = api(server)
    http.post(
        "/v1/sys/mounts/app", json={"type": "kv", "config": {"token_type": "batch"}}
    ).raise_for_status()
    assert "token_type" not in mount_config(server, "secret", "app/")
    tune = http.post("/v1/sys/mounts/app/tune", json={"token_type": "batch"})
    assert tune.status_code == 400 and "only be modified on auth mounts" in tune.text


def test_token_type_on_a_secrets_mount_is_refused_at_its_line(tmp_path: Path) -> None:
    text = "version: 1\nsecrets:\n  - path: app/\n    plugin: kv\n    config: {token_type: batch}\n"
    (problem,) = _problems(tmp_path, text)
    assert ":5:26: " in problem and "auth methods only" in problem
    auth = (
        "version: 1\nauth:\n  - path: up/\n    plugin: userpass\n    config: {token_type: batch}\n"
    )
    assert load_desired(write_desired(tmp_path, auth)).state.auth[0].config is not None


def test_server_refuses_a_duration_past_int64_nanoseconds(server) -> None:
    http = api(server)
    http.post("/v1/sys/mounts/app", json={"type": "kv"}).raise_for_status()
    over = http.post("/v1/sys/mounts/app/tune", json={"max_lease_ttl": SERVER_MAX_SECONDS + 1})
    assert over.status_code == 400 and "overflow" in over.text
    at_most = http.post("/v1/sys/mounts/app/tune", json={"max_lease_ttl": SERVER_MAX_SECONDS})
    assert at_most.status_code in {200, 204}, at_most.text


@pytest.mark.parametrize("ttl", ["99999999999h", str(SERVER_MAX_SECONDS + 1)])
def test_duration_overflow_is_refused_at_its_line(ttl: str, tmp_path: Path) -> None:
    text = f"version: 1\nsecrets:\n  - path: app/\n    plugin: kv\n    config:\n      max_lease_ttl: {ttl}\n"
    (problem,) = _problems(tmp_path, text)
    assert ":6:22: " in problem and "292 years" in problem


def test_server_refuses_a_default_ttl_above_the_max(server) -> None:
    config = {"default_lease_ttl": "2h", "max_lease_ttl": "1h"}
    answer = api(server).post("/v1/sys/mounts/app", json={"type": "kv", "config": config})
    assert answer.status_code == 400, answer.text


def test_default_ttl_above_the_max_is_refused_at_its_line(tmp_path: Path) -> None:
    text = (
        "version: 1\nsecrets:\n  - path: app/\n    plugin: kv\n"
        "    config: {default_lease_ttl: 2h, max_lease_ttl: 1h}\n"
    )
    (problem,) = _problems(tmp_path, text)
    assert ":5:13: " in problem and "above max_lease_ttl" in problem


@pytest.mark.parametrize("path", ["a?b/", "a#b/", "a%2Fb/", "a b/", "a*/"])
def test_path_characters_a_url_cannot_carry_are_refused(path: str, tmp_path: Path) -> None:
    text = f'version: 1\nsecrets:\n  - path: "{path}"\n    plugin: kv\n'
    (problem,) = _problems(tmp_path, text)
    assert ":3:11: " in problem and "cannot be used in a mount path" in problem


def test_export_names_a_setting_it_cannot_express(server, tmp_path: Path) -> None:
    http = api(server)
    http.post("/v1/sys/auth/people", json={"type": "userpass"}).raise_for_status()
    http.post(
        "/v1/sys/auth/people/tune", json={"user_lockout_config": {"lockout_threshold": "5"}}
    ).raise_for_status()
    result = run_cli(server, "export")
    assert result.ok, result.output
    assert "#   auth/people/: user_lockout_config = " in result.stdout
    assert '"user_lockout_threshold": 5' in result.stdout
    assert "warning: not managed" in result.stderr and "auth/people/" in result.stderr
    # The export still plans clean, and applying it keeps the setting.
    exported = write_desired(tmp_path, result.stdout)
    assert run_cli(server, "apply", str(exported), "--yes").ok
    lockout = http.get("/v1/sys/auth/people/tune").json()["data"]
    assert lockout["user_lockout_threshold"] == 5


def test_validate_command_reports_every_server_rule(tmp_path: Path) -> None:
    text = (
        "version: 1\nsecrets:\n  - path: app/\n    plugin: kv\n    config: {token_type: batch}\n"
        '  - path: "x?/"\n    plugin: kv\n'
    )
    result = CliRun.invoke(["validate", str(write_desired(tmp_path, text))])
    assert result.exit_code == 1
    assert "x?/" in result.stderr
