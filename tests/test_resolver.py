"""The server facts of `reconciler.resolver`, and where the built-in list comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.builtins import OPENBAO_BUILTINS
from reconciler.loader import load_desired
from reconciler.model import CatalogEntry, LiveMount, LiveState, PluginEntry
from reconciler.plan import ActionKind
from reconciler.planner import plan
from reconciler.resolver import (
    SHIPPED_BUILTINS,
    Target,
    Unresolved,
    api_path,
    effective_entry,
    entries_by_name,
    is_builtin_version,
    live_builtins,
    newest_version,
    normalize_version,
    pins_builtin,
    resolve_mount,
    runs_external,
    split_api_path,
)
from tests.helpers import CliRun
from tests.planner_sim import builtin_catalog, reserved_mounts

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
AWS_ONLY_LIVE = "version: 1\nsecrets:\n  - {path: aws/, plugin: aws}\n"


def _live_with(*extra: CatalogEntry) -> LiveState:
    return LiveState(catalog=[*builtin_catalog(), *extra], mounts=reserved_mounts())


def test_a_builtin_only_the_live_server_lists_plans_but_does_not_validate(
    tmp_path: Path,
) -> None:
    assert ("secret", "aws") not in OPENBAO_BUILTINS
    path = tmp_path / "desired.yaml"
    path.write_text(AWS_ONLY_LIVE)
    aws = CatalogEntry(type="secret", name="aws", version="v0.21.0+builtin", builtin=True)

    the_plan = plan(load_desired(path).state, _live_with(aws))

    assert the_plan.errors == []
    assert [(a.kind, a.target) for a in the_plan.actions] == [(ActionKind.ENABLE, "secrets/aws/")]
    result = CliRun.invoke(["validate", str(path)], env={})
    assert result.exit_code == 1
    assert f"{path}:3:26: plugin 'aws' is neither declared" in result.stderr


def test_a_builtin_the_live_server_lacks_is_a_plan_error(tmp_path: Path) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text(AWS_ONLY_LIVE)
    the_plan = plan(load_desired(path).state, _live_with())
    assert [p.message for p in the_plan.errors] == [
        "secret plugin 'aws' is neither declared in the file nor a built-in of this server"
    ]


def test_versions_normalise_and_order_by_precedence() -> None:
    assert normalize_version("1.2.3") == "v1.2.3"
    assert normalize_version("") == ""
    with pytest.raises(ValueError, match="invalid semantic version"):
        normalize_version("1.2")
    assert newest_version(["v1.9.0", "v1.10.0", "v1.10.0-rc.1"]) == "v1.10.0"
    assert newest_version(["v2.0.0-rc.2", "v2.0.0-rc.10"]) == "v2.0.0-rc.10"


def test_builtin_versions() -> None:
    assert is_builtin_version("v2.7.2+builtin.bao")
    assert not is_builtin_version("v2.7.2")
    assert pins_builtin("v1.0.0", "v1.0.0")
    assert not pins_builtin("v1.0.0", "")
    assert not pins_builtin("v1.0.0", None)


def test_live_builtins_include_those_the_catalog_never_lists() -> None:
    found = live_builtins(builtin_catalog("v9.9.9+builtin"))
    assert found[("secret", "transit")] == "v9.9.9+builtin"
    assert found[("secret", "database")] == ""
    assert set(SHIPPED_BUILTINS) == OPENBAO_BUILTINS


@pytest.mark.parametrize(
    ("kind", "path", "api"),
    [("secret", "kv/", "kv/"), ("auth", "sso/", "auth/sso/"), ("auth", "a/b", "auth/a/b/")],
)
def test_mount_and_api_paths(kind: str, path: str, api: str) -> None:
    assert api_path(kind, path) == api  # type: ignore[arg-type]
    assert split_api_path(api) == (kind, path.rstrip("/") + "/")


def _entry(version: str, state: str = "present") -> PluginEntry:
    return PluginEntry.model_validate(
        {"type": "secret", "name": "x", "version": version, "sha256": SHA, "state": state}
    )


def test_entries_by_name_groups_in_file_order() -> None:
    other = PluginEntry.model_validate(
        {"type": "auth", "name": "x", "version": "v1.0.0", "sha256": SHA}
    )
    first, second = _entry("v2.0.0"), _entry("v1.0.0", "absent")
    grouped = entries_by_name([first, other, second])
    assert grouped == {("secret", "x"): [first, second], ("auth", "x"): [other]}


@pytest.mark.parametrize(
    ("version", "plugins", "builtins", "expected"),
    [
        (None, [_entry("v1.0.0")], {}, Target("secret", "x", False, "v1.0.0", SHA)),
        (None, [_entry("v1.0.0"), _entry("v2.0.0")], {}, Unresolved.AMBIGUOUS),
        (None, [], {("secret", "x"): ""}, Target("secret", "x", True)),
        (None, [], {}, Unresolved.UNDECLARED),
        (None, [_entry("v1.0.0", "absent")], {}, Unresolved.ONLY_ABSENT),
        ("v1.0.0", [_entry("v1.0.0", "absent")], {}, Unresolved.ABSENT_VERSION),
        ("v3.0.0", [_entry("v1.0.0")], {}, Unresolved.UNKNOWN_VERSION),
        ("v1.0.0+builtin", [], {}, Unresolved.NOT_A_BUILTIN),
        ("v7.0.0", [_entry("v1.0.0")], {("secret", "x"): "v7.0.0"}, Target("secret", "x", True)),
    ],
)
def test_resolve_mount(
    version: str | None,
    plugins: list[PluginEntry],
    builtins: dict[tuple[str, str], str],
    expected: Target | Unresolved,
) -> None:
    assert resolve_mount("secret", "x", version, plugins, builtins) == expected


def test_a_reserved_builtin_resolves_to_nothing() -> None:
    assert resolve_mount("secret", "cubbyhole", None, [], SHIPPED_BUILTINS) is Unresolved.RESERVED


@pytest.mark.parametrize(
    ("pin", "running_sha256", "external"),
    [
        ("", "", False),  # unpinned, the server reports no binary: the built-in
        ("v2.7.2+builtin.bao", "", False),  # pinned to the built-in
        ("", "ab" * 32, True),  # runs a binary of its own
        ("v1.0.0", "", True),  # pinned to an external version it does not run yet
    ],
)
def test_a_mount_runs_an_external_plugin(pin: str, running_sha256: str, external: bool) -> None:
    mount = LiveMount(
        kind="secret",
        path="m/",
        plugin="transit",
        plugin_version=pin,
        running_sha256=running_sha256,
    )
    assert runs_external(mount) is external


def test_what_a_live_mount_runs_at_its_next_reload() -> None:
    builtins = {("secret", "transit"), ("secret", "kv")}
    shadow = {("secret", "transit", "")}
    assert effective_entry("secret", "transit", "", shadow, builtins) == Target(
        "secret", "transit", False, ""
    )
    assert effective_entry("secret", "transit", "v1+builtin", shadow, builtins) == Target(
        "secret", "transit", True
    )
    assert effective_entry("secret", "transit", "v1.0.0", shadow, builtins) is None
    # kv is hard-wired: an external entry of its name never runs.
    assert effective_entry("secret", "kv", "", {("secret", "kv", "")}, builtins) == Target(
        "secret", "kv", True
    )
    assert effective_entry("secret", "aws", "", set(), builtins) is None
