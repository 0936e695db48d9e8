"""`plan --json` output follows the plan schema committed in schemas/."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

from reconciler.plan import plan_schema_text
from tests.helpers import api, run_cli, write_desired

SCHEMA_FILE = Path(__file__).parent.parent / "schemas" / "plan.schema.json"


def test_committed_plan_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == plan_schema_text(), (
        "schemas/plan.schema.json is stale: regenerate it with `make schema`"
    )


def test_plan_json_validates_against_the_committed_schema(server, tmp_path: Path) -> None:
    api(server).post("/v1/sys/mounts/extra", json={"type": "kv"}).raise_for_status()
    desired = write_desired(
        tmp_path,
        "version: 1\nsettings: {prune_mounts: true}\n"
        f"plugins:\n  - {{type: secret, name: kv, version: v9.0.0, sha256: {'a' * 64}}}\n"
        "secrets:\n  - {path: app/, plugin: kv, version: v9.0.0, config: {default_lease_ttl: 1h}}\n",
    )
    result = run_cli(server, "plan", str(desired), "--json")
    assert result.exit_code == 1, result.output  # overriding the hard-wired kv is a plan error
    document = json.loads(result.stdout)
    assert document["actions"] and document["errors"]
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    errors = list(Draft202012Validator(schema).iter_errors(document))
    assert not errors, [e.message for e in errors]
