"""The committed JSON Schema matches the models and accepts every valid example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from reconciler.cli import cli
from reconciler.errors import DesiredStateError
from reconciler.loader import load_desired_text
from reconciler.model import json_schema, json_schema_text

ROOT = Path(__file__).parent.parent
SCHEMA_FILE = ROOT / "schemas" / "reconciler.schema.json"
DOCUMENTS = sorted((ROOT / "reconciler" / "demo" / "examples").glob("*.yaml")) + sorted(
    (ROOT / "tests" / "data" / "valid").glob("*.yaml")
)


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == json_schema_text(), (
        f"{SCHEMA_FILE.relative_to(ROOT)} is stale: regenerate it with `make schema`"
    )


def test_schema_command_prints_the_committed_schema() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    assert result.stdout == SCHEMA_FILE.read_text()


def test_schema_header() -> None:
    schema = json_schema()
    assert list(schema)[:4] == ["$schema", "$id", "title", "description"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False


def test_there_are_documents_to_check() -> None:
    names = {path.name for path in DOCUMENTS}
    assert {"desired.yaml", "desired-upgrade.yaml", "full.yaml"} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_valid_documents_satisfy_the_schema(path: Path) -> None:
    errors = sorted(validator().iter_errors(load_yaml(path)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "document",
    [
        {"version": 2},
        {"version": 1, "plugin_dir": "x"},
        {"version": 1, "plugins": [{"type": "secret", "name": "x", "version": "latest"}]},
        {
            "version": 1,
            "plugins": [{"type": "secret", "name": "x", "version": "v1", "sha256": "z"}],
        },
        {
            "version": 1,
            "plugins": [{"type": "s", "name": "x", "version": "1.0.0", "command": "../x"}],
        },
        {"version": 1, "secrets": [{"path": "a/", "plugin": "kv", "config": {"ttl": 1}}]},
        {"version": 1, "secrets": [{"path": "a/", "plugin": "kv", "protect": "yes"}]},
        {"version": 1, "auth": [{"plugin": "userpass"}]},
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(document: dict[str, Any]) -> None:
    with pytest.raises(DesiredStateError):
        load_desired_text(json.dumps(document), "rejected.yaml", check_plugin_files=False)
    assert list(validator().iter_errors(document))
