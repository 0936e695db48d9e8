"""One duration grammar for every flag, file field and environment setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.durations import SCHEMA_PATTERN, parse_seconds, whole_seconds
from reconciler.model import DesiredState

ACCEPTED = [
    ("200ms", 0.2),
    ("1s", 1.0),
    ("1.5s", 1.5),
    ("90", 90.0),
    ("1.5", 1.5),
    ("15m", 900.0),
    ("1h30m", 5400.0),
    ("7d", 604800.0),
    ("1m30s500ms", 90.5),
    (" 2h ", 7200.0),
    (45, 45.0),
    (0.25, 0.25),
]
REFUSED = ["", "soon", "1x", "-1", "1h 30m", "ms", "30m1h", "1.s", "h", "1hh"]


@pytest.mark.parametrize(("value", "seconds"), ACCEPTED)
def test_accepted_spellings(value: object, seconds: float) -> None:
    assert parse_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [*REFUSED, -1, True, None, [1]])
def test_refused_spellings(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_seconds(value)


def test_the_schema_pattern_is_the_same_grammar() -> None:
    for value, _seconds in ACCEPTED:
        if isinstance(value, str):
            assert re.match(SCHEMA_PATTERN, value.strip()), value
    for text in REFUSED:
        assert not re.match(SCHEMA_PATTERN, text), text


def test_file_fields_take_whole_seconds_in_the_same_grammar() -> None:
    assert whole_seconds("2000ms") == 2
    assert whole_seconds("1h30m") == 5400
    with pytest.raises(ValueError, match="whole seconds"):
        whole_seconds("1500ms")
    config = {"path": "a/", "plugin": "kv", "config": {"default_lease_ttl": "1m30s"}}
    state = DesiredState.model_validate({"version": 1, "secrets": [config]})
    assert state.secrets[0].config.default_lease_ttl == 90


@pytest.mark.parametrize(
    ("command", "flag"),
    [("apply", "--lock-timeout"), ("watch", "--debounce"), ("watch", "--interval")],
)
def test_every_duration_flag_reads_the_same_grammar(
    tmp_path: Path, command: str, flag: str
) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text("version: 1\n")
    refused = CliRunner().invoke(cli, [command, str(path), flag, "soon"])
    assert refused.exit_code == 1 and "invalid duration 'soon'" in refused.output
    # 200ms parses; the command then stops at the missing token, before any request.
    no_token = {"BAO_TOKEN": "", "VAULT_TOKEN": "", "HOME": str(tmp_path)}
    accepted = CliRunner(env=no_token).invoke(
        cli, [command, str(path), flag, "200ms", "--address", "http://127.0.0.1:1"]
    )
    assert accepted.exit_code == 1, accepted.output
    assert "invalid duration" not in accepted.output and "token" in accepted.output
