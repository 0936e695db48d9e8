"""`plan --json` output follows the plan schema committed in schemas/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reconciler.plan import ActionKind, Plan, plan_schema_text
from reconciler.planner import plan
from tests.helpers import api, run_cli, write_desired
from tests.test_planner import CASES_DIR, load_case

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


def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _document(*kinds: ActionKind) -> dict[str, Any]:
    """A plan document holding one action of each kind, made by the planner."""
    case = load_case(CASES_DIR / "actions_of_every_stage_in_order.yaml")
    document: dict[str, Any] = json.loads(plan(case.desired, case.live).to_json())
    found = {action["kind"] for action in document["actions"]}
    assert set(kinds) <= found, found
    return document


def test_a_planned_document_validates() -> None:
    document = _document(ActionKind.TUNE, ActionKind.DISABLE)
    assert not [e.message for e in _validator().iter_errors(document)]


@pytest.mark.parametrize(
    ("kind", "params_of"),
    [
        (ActionKind.TUNE, ActionKind.DISABLE),
        (ActionKind.DISABLE, ActionKind.TUNE),
        (ActionKind.ENABLE, ActionKind.MOVE),
        (ActionKind.DEREGISTER, ActionKind.REGISTER),
    ],
)
def test_the_schema_rejects_params_of_another_kind(kind: ActionKind, params_of: ActionKind) -> None:
    document = _document(kind, params_of)
    actions = {action["kind"]: action for action in document["actions"]}
    actions[kind]["params"] = actions[params_of]["params"]
    assert list(_validator().iter_errors(document))
    with pytest.raises(ValueError, match="params"):
        Plan.from_json(json.dumps(document))
