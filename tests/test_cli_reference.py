"""docs/cli.md is the reference of every command and flag: nothing may be missing."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from reconciler.cli import cli

REFERENCE = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()


def _section(command: str) -> str:
    match = re.search(rf"^## `reconciler {command}`\n(.*?)(?=^## |\Z)", REFERENCE, re.M | re.S)
    assert match, f"docs/cli.md has no section for `reconciler {command}`"
    return match.group(1)


GLOBAL_OPTIONS = {"verbose", "quiet"}


def test_global_flags_are_documented_once() -> None:
    section = REFERENCE.split("## Global", 1)[1].split("\n## ", 1)[0]
    for param in cli.params:
        if isinstance(param, click.Option) and param.name in GLOBAL_OPTIONS:
            for flag in param.opts:
                assert f"`{flag}`" in section, f"`reconciler {flag}` is not documented"


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_flag_of_every_command_is_documented(command: str) -> None:
    section = _section(command)
    for param in cli.commands[command].params:
        if param.name in GLOBAL_OPTIONS:
            continue  # documented once, under "Global": they work before or after the command
        if isinstance(param, click.Option):
            for flag in param.opts + param.secondary_opts:
                assert f"`{flag}`" in section, f"`reconciler {command} {flag}` is not documented"


def test_every_environment_variable_is_documented() -> None:
    for name in ("BAO_ADDR", "BAO_TOKEN", "BAO_NAMESPACE", "BAO_CACERT", "RECONCILER_LOCK_DIR"):
        assert f"`{name}`" in REFERENCE
