"""Plan → text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.model import DesiredState, LiveState, ServerIdentity
from reconciler.plan import (
    PLAN_FORMAT_VERSION,
    Action,
    ActionKind,
    DesiredSource,
    FieldChange,
    Plan,
    Problem,
    ReasonCode,
    RegisterAction,
    Safety,
    Stage,
    parse_action,
)
from reconciler.planner import plan
from reconciler.render import render_plan, summary
from tests.helpers import CliRun
from tests.planner_sim import builtin_catalog, reserved_mounts
from tests.test_planner import CASES_DIR, load_case

SHA = "ab" * 32

# Written out rather than imported: the symbols are part of the user interface (SPEC §4).
SYMBOLS = {
    ActionKind.CREATE_NAMESPACE: "+",
    ActionKind.REGISTER: "+",
    ActionKind.ENABLE: "+",
    ActionKind.UPDATE: "~",
    ActionKind.TUNE: "~",
    ActionKind.MOVE: "→",
    ActionKind.RELOAD: "↻",
    ActionKind.DISABLE: "-",
    ActionKind.DEREGISTER: "-",
    ActionKind.REPLACE: "±",
    ActionKind.REPIN: "⇢",
    ActionKind.RESET: "↻",
}


# One valid set of params per kind: rendering does not look at them.
_MOUNT = {"kind": "secret", "path": "a/"}
_ENTRY = {"type": "secret", "name": "a", "version": "v1.0.0"}
_REGISTRATION = {**_ENTRY, "command": "a", "sha256": SHA, "args": [], "has_env": False}
PARAMS: dict[ActionKind, dict[str, object]] = {
    ActionKind.CREATE_NAMESPACE: {"parent": "team1", "name": "sub"},
    ActionKind.REGISTER: _REGISTRATION,
    ActionKind.UPDATE: _REGISTRATION,
    ActionKind.DEREGISTER: _ENTRY,
    ActionKind.ENABLE: {**_MOUNT, "plugin": "kv"},
    ActionKind.REPLACE: {**_MOUNT, "plugin": "kv"},
    ActionKind.MOVE: {"kind": "secret", "from": "a/", "to": "b/"},
    ActionKind.TUNE: {**_MOUNT, "body": {"description": "a"}},
    ActionKind.DISABLE: _MOUNT,
    ActionKind.RELOAD: {"mounts": ["a/"]},
    ActionKind.REPIN: {
        "mount": "db/",
        "name": "a",
        "plugin": "a",
        "version": "v2.0.0",
        "previous_version": "v1.0.0",
    },
    ActionKind.RESET: {"mount": "db/", "name": "a", "plugin": "a"},
}


def _action(kind: ActionKind, target: str, **extra: object) -> Action:
    return parse_action(
        {
            "kind": kind,
            "target": target,
            "reason": "because",
            "reason_code": ReasonCode.NOT_MOUNTED,
            "params": PARAMS[kind],
            **extra,
        }
    )


def _plan(*actions: Action, **extra: object) -> Plan:
    return Plan.model_validate({"actions": list(actions), **extra})


def test_every_kind_has_a_symbol() -> None:
    assert set(SYMBOLS) == set(ActionKind)


@pytest.mark.parametrize("kind", list(ActionKind), ids=[k.value for k in ActionKind])
def test_each_kind_is_shown_with_its_symbol(kind: ActionKind) -> None:
    text = render_plan(_plan(_action(kind, "some/target")), allow_destroy=True)
    assert f"\n  {SYMBOLS[kind]} {kind.value} some/target  (because" in text


def test_refused_lines_are_marked() -> None:
    the_plan = _plan(
        _action(ActionKind.ENABLE, "secrets/new/"),
        _action(ActionKind.DISABLE, "secrets/old/", stage=Stage.CLEANUP),
    )
    text = render_plan(the_plan)
    assert "\n! - disable secrets/old/  (because; destructive; after verification)" in text
    assert "refused: destructive: needs --allow-destroy" in text
    assert "\n  + enable secrets/new/" in text

    allowed = render_plan(the_plan, allow_destroy=True)
    assert "\n  - disable secrets/old/" in allowed
    assert "!" not in allowed
    assert "refused" not in allowed


def test_more_than_max_destroy_is_refused_with_the_reason() -> None:
    disables = [_action(ActionKind.DISABLE, f"secrets/m{i}/") for i in range(3)]
    text = render_plan(_plan(*disables, max_destroy=2), allow_destroy=True)
    assert text.count("\n! - disable") == 3
    assert "3 destructive actions exceed max_destroy=2" in text
    assert "Plan: 3 refused." in text


def test_summary_wording() -> None:
    the_plan = _plan(
        _action(ActionKind.REGISTER, "secret/a/v1.0.0"),
        _action(ActionKind.REGISTER, "secret/b/v1.0.0"),
        _action(ActionKind.TUNE, "secrets/a/"),
        _action(ActionKind.RELOAD, "mounts a/"),
        _action(ActionKind.DISABLE, "secrets/old/", stage=Stage.CLEANUP),
    )
    assert summary(the_plan) == "2 to register, 1 to tune, 1 to reload, 1 refused"
    assert summary(the_plan, allow_destroy=True) == (
        "2 to register, 1 to tune, 1 to reload, 1 to disable"
    )
    assert render_plan(the_plan).endswith(
        "\nPlan: 2 to register, 1 to tune, 1 to reload, 1 refused.\n"
    )


def test_summary_of_an_empty_plan_and_of_errors() -> None:
    assert summary(_plan()) == "no changes: the server matches the file"
    one = Problem(target="secrets/a/", message="ambiguous")
    two = Problem(target="secrets/b/", message="ambiguous")
    assert summary(_plan(errors=[one])) == "1 error"
    assert summary(_plan(_action(ActionKind.ENABLE, "x"), errors=[one, two])) == (
        "1 to enable, 2 errors"
    )


def test_errors_and_warnings_are_listed() -> None:
    the_plan = _plan(
        errors=[Problem(target="secret/kv/v1.0.0", message="hard-wired")],
        warnings=[Problem(target="secrets/old/", message="unmanaged mount (kv): left alone")],
    )
    text = render_plan(the_plan)
    assert "Errors (this plan cannot be applied):\n  ✗ secret/kv/v1.0.0: hard-wired" in text
    assert "Warnings:\n  ⚠ secrets/old/: unmanaged mount (kv): left alone" in text


def test_changes_show_before_and_after() -> None:
    tune = _action(
        ActionKind.TUNE,
        "secrets/apps/",
        changes=[
            FieldChange(field="default_lease_ttl", before=3600, after=7200),
            FieldChange(field="description", before="", after="apps"),
        ],
    )
    text = render_plan(_plan(tune))
    assert "      default_lease_ttl: 1h → 2h\n" in text
    assert '      description: "" → apps\n' in text


def test_no_ansi_codes_without_colour() -> None:
    the_plan = _plan(
        _action(ActionKind.ENABLE, "secrets/a/"),
        _action(ActionKind.DISABLE, "secrets/b/"),
        errors=[Problem(target="x", message="y")],
        warnings=[Problem(target="x", message="z")],
    )
    assert "\x1b[" not in render_plan(the_plan, colour=False)
    assert "\x1b[" in render_plan(the_plan, colour=True)


def _plan_with_env() -> tuple[Plan, str]:
    secret = "hunter2-never-shown"
    desired = DesiredState.model_validate(
        {
            "version": 1,
            "plugins": [
                {
                    "type": "secret",
                    "name": "kv-plus",
                    "version": "v1.0.0",
                    "sha256": SHA,
                    "env": {"KV_PLUS_TOKEN": secret},
                }
            ],
            "secrets": [{"path": "apps/", "plugin": "kv-plus"}],
        }
    )
    live = LiveState(catalog=builtin_catalog(), mounts=reserved_mounts())
    return plan(desired, live), secret


def test_env_is_never_shown() -> None:
    the_plan, secret = _plan_with_env()
    for text in (
        render_plan(the_plan),
        render_plan(the_plan, colour=True),
        the_plan.to_json(),
        summary(the_plan),
    ):
        assert secret not in text
        assert "KV_PLUS_TOKEN" not in text
    text = render_plan(the_plan)
    assert "      env: (sensitive)\n" in text
    assert "(sensitive) cannot be verified" in text


@pytest.mark.parametrize(
    "name",
    [
        "actions_of_every_stage_in_order",
        "override_of_kv_is_refused",
        "empty_desired_busy_server_without_prune",
    ],
)
def test_json_round_trip(name: str) -> None:
    case = load_case(CASES_DIR / f"{name}.yaml")
    the_plan = plan(
        case.desired,
        case.live,
        source=DesiredSource(path="desired.yaml", sha256="0" * 64),
        replace=case.replace,
    )
    assert Plan.from_json(the_plan.to_json()) == the_plan
    assert json.loads(the_plan.to_json())["format_version"] == PLAN_FORMAT_VERSION


def test_env_plan_round_trips_without_env() -> None:
    the_plan, _ = _plan_with_env()
    loaded = Plan.from_json(the_plan.to_json())
    assert loaded == the_plan
    [register] = [a for a in loaded.actions if isinstance(a, RegisterAction)]
    assert register.params.has_env is True


@pytest.mark.parametrize(
    "document",
    [
        {"format_version": "3.0", "actions": []},
        {"format_version": 1},
        {"format_version": "1"},
        {"actions": []},
        [1, 2],
    ],
)
def test_other_format_versions_are_refused(document: object) -> None:
    with pytest.raises(ValueError, match="format"):
        Plan.from_json(json.dumps(document))


def test_a_plan_of_the_previous_format_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"format version 1, .* make the plan again"):
        Plan.from_json(json.dumps({"format_version": 1, "actions": []}))


def test_apply_of_a_previous_format_plan_says_to_plan_again(tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps({"format_version": 1, "actions": []}, indent=2))
    result = CliRun.invoke(["apply", str(saved), "--yes"])
    assert result.exit_code == 1
    assert "format version 1" in result.stderr
    assert "make the plan again" in result.stderr


def test_a_later_minor_version_may_add_fields() -> None:
    document = json.loads(_plan(_action(ActionKind.ENABLE, "secrets/a/")).to_json())
    document["format_version"] = "2.7"
    document["added_later"] = True
    document["actions"][0]["added_later"] = True
    assert Plan.from_json(json.dumps(document)).actions[0].target == "secrets/a/"


def test_safety_follows_from_the_kind_and_cannot_be_relabelled() -> None:
    document = json.loads(_plan(_action(ActionKind.DISABLE, "secrets/a/")).to_json())
    assert document["actions"][0]["safety"] == "destructive"
    document["actions"][0]["safety"] = "safe"
    assert Plan.from_json(json.dumps(document)).actions[0].safety is Safety.DESTRUCTIVE


def test_params_must_fit_the_kind() -> None:
    with pytest.raises(ValidationError):
        _action(ActionKind.TUNE, "secrets/a/", params=PARAMS[ActionKind.DISABLE])
    with pytest.raises(ValidationError):
        _action(ActionKind.DISABLE, "secrets/a/", params=PARAMS[ActionKind.TUNE])


def test_header_names_server_and_file(tmp_path: Path) -> None:
    the_plan = _plan(
        server=ServerIdentity(address="https://bao.example:8200"),
        desired=DesiredSource(path=str(tmp_path / "desired.yaml")),
    )
    first = render_plan(the_plan).splitlines()[0]
    assert first == f"Plan for https://bao.example:8200 from {tmp_path / 'desired.yaml'}"
