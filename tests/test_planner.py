"""Table-driven planner tests: one scenario per file in tests/planner_cases/.

A case file holds:

- `description`: what the scenario shows;
- `desired`: a desired-state document (format version 1);
- `live`: `catalog` entries, `mounts` and database `connections` as the state
  reader reports them. The
  built-in catalog of OpenBao 2.7.2 and the reserved mounts are added unless
  `builtins: false`. A mount that gives neither `running_plugin_version` nor
  `running_sha256` runs what its pin resolves to (a settled server); drift is
  written out;
- `options` (optional): `replace` ("type/name/version"), `held`
  ([type, name, version, sha256]), `allow_destroy` (for the refusal count);
- `expect`: `actions` ("kind target", exact plan order), `details` per action
  (`safety`, `stage`, `reason` fragment, `params` subset, `params_absent`,
  `changed` field names in order), `errors` (fragments, exact count),
  `warnings` (fragments that must appear), `warning_count` (optional),
  `refused` (default 0).

Top-level `anchors` is free for YAML anchors (sha256 values) and ignored.
Every case without errors must also converge on the simulated server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconciler.model import (
    CatalogEntry,
    DesiredState,
    LiveConnection,
    LiveMount,
    LiveNode,
    LiveState,
    ServerIdentity,
)
from reconciler.plan import Plan
from reconciler.planner import HeldUpgrade, plan
from reconciler.render import render_plan
from reconciler.resolver import CatalogKey, normalize_version
from tests.planner_sim import apply_effects, builtin_catalog, reserved_mounts, resolve

CASES_DIR = Path(__file__).parent / "planner_cases"
CASE_FILES = sorted(CASES_DIR.glob("*.yaml"))
_TOP_KEYS = {"description", "builtins", "anchors", "desired", "live", "options", "expect"}
_EXPECT_KEYS = {"actions", "details", "errors", "warnings", "warning_count", "refused"}
_DETAIL_KEYS = {"safety", "stage", "reason", "params", "params_absent", "changed"}


@dataclass(frozen=True)
class Case:
    name: str
    raw: dict[str, Any]
    desired: DesiredState
    live: LiveState
    replace: frozenset[CatalogKey]
    held: frozenset[HeldUpgrade]
    allow_destroy: bool

    @property
    def expect(self) -> dict[str, Any]:
        expect: dict[str, Any] = self.raw["expect"]
        return expect

    def plan(self) -> Plan:
        return plan(self.desired, self.live, replace=self.replace, held=self.held)


def load_case(path: Path) -> Case:
    raw = YAML(typ="safe", pure=True).load(path.read_text())
    unknown = set(raw) - _TOP_KEYS
    assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
    assert raw.get("description"), f"{path.name}: a case says what it shows"
    unknown = set(raw["expect"]) - _EXPECT_KEYS
    assert not unknown, f"{path.name}: unknown expect keys {sorted(unknown)}"
    for target, detail in (raw["expect"].get("details") or {}).items():
        unknown = set(detail) - _DETAIL_KEYS
        assert not unknown, f"{path.name}: {target}: unknown detail keys {sorted(unknown)}"
    desired = DesiredState.model_validate(raw["desired"])
    live_raw = raw.get("live") or {}
    with_builtins = raw.get("builtins", True)
    catalog = list(builtin_catalog()) if with_builtins else []
    catalog += [CatalogEntry.model_validate(entry) for entry in live_raw.get("catalog") or []]
    mounts = list(reserved_mounts()) if with_builtins else []
    mounts += [_live_mount(entry, catalog, path.name) for entry in live_raw.get("mounts") or []]
    live = LiveState(
        server=ServerIdentity(address="https://bao.example:8200", cluster_id="cluster-1"),
        catalog=catalog,
        mounts=mounts,
        connections=[LiveConnection.model_validate(c) for c in live_raw.get("connections") or []],
        nodes=[LiveNode.model_validate(node) for node in live_raw.get("nodes") or []],
    )
    options = raw.get("options") or {}
    return Case(
        name=path.stem,
        raw=raw,
        desired=desired,
        live=live,
        replace=frozenset(_catalog_key(text) for text in options.get("replace") or []),
        held=frozenset((t, n, normalize_version(v), s) for t, n, v, s in options.get("held") or []),
        allow_destroy=bool(options.get("allow_destroy", False)),
    )


def _live_mount(entry: dict[str, Any], catalog: list[CatalogEntry], case: str) -> LiveMount:
    if "running_plugin_version" not in entry and "running_sha256" not in entry:
        running = resolve(catalog, entry["kind"], entry["plugin"], entry.get("plugin_version", ""))
        assert running is not None, f"{case}: {entry['path']} would have no backend"
        entry = {**entry, "running_plugin_version": running[0], "running_sha256": running[1]}
    return LiveMount.model_validate(entry)


def _catalog_key(text: str) -> CatalogKey:
    plugin_type, name, version = text.split("/")
    return (plugin_type, name, normalize_version(version))


def _explain(case: Case, the_plan: Plan) -> str:
    return (
        f"\ncase {case.name}: {case.raw['description']}\n"
        + render_plan(the_plan, allow_destroy=case.allow_destroy)
        + "actions: "
        + repr([f"{a.kind.value} {a.target}" for a in the_plan.actions])
    )


def _is_subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _is_subset(value, actual[key]) for key, value in expected.items()
        )
    return bool(expected == actual)


def _raw(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = YAML(typ="safe", pure=True).load(path.read_text())
    return raw


def _has_env(path: Path) -> bool:
    plugins = (_raw(path).get("desired") or {}).get("plugins") or []
    return any(plugin.get("env") for plugin in plugins)


def _expects_errors(path: Path) -> bool:
    return bool((_raw(path).get("expect") or {}).get("errors"))


# Each check runs for the cases it applies to only, so a pass means it ran.
CASES_WITH_ENV = [p for p in CASE_FILES if _has_env(p)]
# A plan with errors is never applied; test_plan_matches_the_case checks its errors.
CASES_WITHOUT_ERRORS = [p for p in CASE_FILES if not _expects_errors(p)]


@pytest.fixture(params=CASE_FILES, ids=[p.stem for p in CASE_FILES])
def case(request: pytest.FixtureRequest) -> Case:
    path: Path = request.param
    return load_case(path)


@pytest.fixture(params=CASES_WITH_ENV, ids=[p.stem for p in CASES_WITH_ENV])
def case_with_env(request: pytest.FixtureRequest) -> Case:
    path: Path = request.param
    return load_case(path)


@pytest.fixture(params=CASES_WITHOUT_ERRORS, ids=[p.stem for p in CASES_WITHOUT_ERRORS])
def applicable_case(request: pytest.FixtureRequest) -> Case:
    path: Path = request.param
    return load_case(path)


def test_there_are_enough_cases() -> None:
    assert len(CASE_FILES) >= 45
    assert CASES_WITH_ENV
    assert len(CASES_WITHOUT_ERRORS) < len(CASE_FILES), "error cases are part of the table"


def test_plan_matches_the_case(case: Case) -> None:
    the_plan = case.plan()
    why = _explain(case, the_plan)
    expect = case.expect

    assert [f"{a.kind.value} {a.target}" for a in the_plan.actions] == expect["actions"], why

    by_name = {f"{a.kind.value} {a.target}": a for a in the_plan.actions}
    for name, detail in (expect.get("details") or {}).items():
        action = by_name.get(name)
        assert action is not None, f"no action {name!r}" + why
        if "safety" in detail:
            assert action.safety.value == detail["safety"], f"{name}: safety" + why
        if "stage" in detail:
            assert action.stage.value == detail["stage"], f"{name}: stage" + why
        if "reason" in detail:
            assert detail["reason"] in action.reason, f"{name}: reason {action.reason!r}" + why
        # The params as the plan's JSON holds them (a field left unset is absent).
        params = action.params.model_dump(mode="json", by_alias=True, exclude_none=True)
        if "params" in detail:
            assert _is_subset(detail["params"], params), f"{name}: params {params!r}" + why
        for key in detail.get("params_absent") or []:
            assert key not in params, f"{name}: {key} in {params!r}" + why
        if "changed" in detail:
            assert [c.field for c in action.changes] == detail["changed"], (
                f"{name}: changes {action.changes!r}" + why
            )

    errors = [f"{p.target}: {p.message}" for p in the_plan.errors]
    expected_errors = expect.get("errors") or []
    assert len(errors) == len(expected_errors), f"errors {errors!r}" + why
    for fragment in expected_errors:
        assert any(fragment in e for e in errors), f"no error with {fragment!r}" + why

    warnings = [f"{p.target}: {p.message}" for p in the_plan.warnings]
    for fragment in expect.get("warnings") or []:
        assert any(fragment in w for w in warnings), (
            f"no warning with {fragment!r} in {warnings!r}" + why
        )
    if "warning_count" in expect:
        assert len(warnings) == expect["warning_count"], f"warnings {warnings!r}" + why

    refused = the_plan.refusals(case.allow_destroy)
    assert len(refused) == expect.get("refused", 0), f"refused {refused!r}" + why


def test_env_values_never_reach_the_plan(case_with_env: Case) -> None:
    case = case_with_env
    the_plan = case.plan()
    shown = the_plan.to_json() + render_plan(the_plan, colour=True) + render_plan(the_plan)
    values = [
        value.get_secret_value()
        for entry in case.desired.plugins
        for value in (entry.env or {}).values()
    ]
    assert values and all(values), case.name
    for value in values:
        assert value not in shown


def test_case_converges_on_the_simulated_server(applicable_case: Case) -> None:
    """Applying a plan without errors, then planning again, leaves nothing to do."""
    case = applicable_case
    the_plan = case.plan()
    assert the_plan.errors == [], _explain(case, the_plan)
    for keeps_pin in (False, True):
        after = apply_effects(the_plan, case.live, tune_keeps_builtin_pin=keeps_pin)
        again = plan(case.desired, after, held=case.held)
        assert again.actions == [] and again.errors == [], _explain(case, the_plan) + (
            "\nafter apply:\n" + render_plan(again)
        )
