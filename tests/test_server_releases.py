"""The built-in lists per OpenBao release and the dead-mount facts built on them (no server).

The end-to-end upgrade is in tests/test_server_upgrade.py; these pin the pure parts: the
generated data, `resolver.mount_failure`, export's comment and watch's health.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from reconciler.builtin_releases import RELEASES
from reconciler.builtins import OPENBAO_BUILTINS, SHIPPED_RELEASE, UNCATALOGUED_BUILTINS
from reconciler.export import export_desired
from reconciler.loader import load_desired_text
from reconciler.model import CatalogEntry, DesiredState, LiveMount, LiveState
from reconciler.planner import plan
from reconciler.releases import (
    UnknownRelease,
    builtins_of_release,
    known_releases,
    last_release_shipping,
)
from reconciler.resolver import live_builtins, mount_failure
from reconciler.watch._metrics import Metrics
from tests.helpers import CliRun
from tests.planner_sim import builtin_catalog, reserved_mounts

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
REMOVED_IN_2_7 = {
    ("auth", "kerberos"),
    ("auth", "ldap"),
    ("auth", "radius"),
    ("secret", "ldap"),
    ("secret", "openldap"),
}
SCRIPT = Path(__file__).parent.parent / "scripts" / "builtin_releases.py"


def test_the_releases_2_6_and_2_7_differ_by_the_removed_builtins_only() -> None:
    assert {"2.6.2", "2.7.2"} <= set(known_releases())
    assert known_releases()[-1] == SHIPPED_RELEASE
    assert builtins_of_release("2.6.2") - builtins_of_release("2.7.2") == REMOVED_IN_2_7
    assert builtins_of_release("2.7.2") <= builtins_of_release("2.6.2")
    assert builtins_of_release("v2.7.2") == builtins_of_release("2.7.2") == OPENBAO_BUILTINS
    assert builtins_of_release("2.6.1") >= UNCATALOGUED_BUILTINS


def test_an_unknown_release_names_the_known_ones_and_the_script() -> None:
    with pytest.raises(UnknownRelease, match=r"2\.5\.0.*2\.6\.2.*scripts/builtin_releases\.py"):
        builtins_of_release("2.5.0")


def test_the_last_release_that_shipped_a_builtin() -> None:
    assert last_release_shipping(("auth", "ldap")) == "2.6.2"
    assert last_release_shipping(("secret", "kv")) == "2.7.2"
    assert last_release_shipping(("secret", "never-a-builtin")) is None


def test_the_data_module_is_the_scripts_output() -> None:
    # Hand edits would be lost at the next regeneration: the file must be what it renders.
    spec = importlib.util.spec_from_file_location("builtin_releases_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data = Path(__file__).parent.parent / "reconciler" / "builtin_releases.py"
    assert data.read_text() == script.render(RELEASES)


# --- mount_failure: why a live mount does not answer ---------------------------------


def _live_2_7(*mounts: LiveMount, catalog: tuple[CatalogEntry, ...] = ()) -> LiveState:
    return LiveState(catalog=[*builtin_catalog(), *catalog], mounts=[*reserved_mounts(), *mounts])


def _dead(kind: Any, path: str, plugin: str, pin: str = "", **fields: Any) -> LiveMount:
    """A mount the server skipped at start: listed, nothing running."""
    return LiveMount(
        kind=kind,
        path=path,
        plugin=plugin,
        plugin_version=pin,
        running_plugin_version="",
        running_sha256="",
        **fields,
    )


def _failure(live: LiveState, mount: LiveMount) -> str | None:
    external = {e.key for e in live.catalog if not e.builtin}
    failure = mount_failure(mount, external, live_builtins(live.catalog))
    return None if failure is None else str(failure)


@pytest.mark.parametrize(
    ("mount", "catalog", "expected"),
    [
        pytest.param(
            _dead("auth", "ldap/", "ldap"),
            (),
            "does not answer: this server no longer ships the built-in auth plugin ldap "
            "(last in OpenBao 2.6.2); its data is still in storage; declare an external auth "
            "plugin named ldap",
            id="removed-builtin",
        ),
        pytest.param(
            _dead("secret", "apps/", "demo-kv", "v2.0.0"),
            (),
            "is pinned to secret plugin demo-kv v2.0.0, which is not in the catalog",
            id="missing-pinned-entry",
        ),
        pytest.param(
            _dead("secret", "apps/", "nothing-like-it"),
            (),
            "no built-in and no catalog entry is named secret plugin nothing-like-it",
            id="never-a-builtin",
        ),
        pytest.param(
            LiveMount(
                kind="secret",
                path="apps/",
                plugin="demo-kv",
                plugin_version="v1.0.0",
                running_plugin_version="v1.0.0",
                running_sha256=SHA,
                backend_answers=False,
            ),
            (CatalogEntry(type="secret", name="demo-kv", version="v1.0.0", sha256=SHA),),
            "does not answer: its plugin failed to start",
            id="plugin-failed-to-start",
        ),
        pytest.param(
            _dead("auth", "ldap/", "ldap", "v1.0.0"),
            (CatalogEntry(type="auth", name="ldap", version="v1.0.0", sha256=SHA),),
            None,
            id="replacement-registered-not-yet-reloaded",
        ),
        pytest.param(
            LiveMount(kind="secret", path="kv/", plugin="kv", running_plugin_version="v2.7.2"),
            (),
            None,
            id="a-running-builtin",
        ),
    ],
)
def test_why_a_mount_does_not_answer(
    mount: LiveMount, catalog: tuple[CatalogEntry, ...], expected: str | None
) -> None:
    failure = _failure(_live_2_7(mount, catalog=catalog), mount)
    if expected is None:
        assert failure is None
    else:
        assert failure is not None and expected in failure, failure


# --- export and watch ------------------------------------------------------------------


def test_export_names_a_dead_mount_in_a_comment_and_leaves_out_what_cannot_plan() -> None:
    live = _live_2_7(
        _dead("auth", "ldap/", "ldap"),
        LiveMount(kind="secret", path="kv/", plugin="kv", running_plugin_version="v2.7.2"),
    )
    text = export_desired(live)
    (line,) = [line for line in text.splitlines() if "auth/ldap/" in line]
    assert line.startswith("#   auth/ldap/ (ldap) does not answer: ")
    assert "no longer ships the built-in auth plugin ldap" in line
    assert line.endswith("left out of this file")
    assert "MOUNTS THAT DO NOT ANSWER" in text
    desired = load_desired_text(text).state
    assert [m.path for m in desired.secrets] == ["kv/"] and desired.auth == []


def test_watch_health_names_dead_mounts_and_stays_200() -> None:
    metrics = Metrics(60.0, monotonic=lambda: 0.0, wall_clock=lambda: 0.0)
    metrics.pass_finished(ok=True, not_answering=["auth/ldap/ (ldap)"])
    health = metrics.health()
    assert health.healthy and health.to_dict()["status"] == "degraded"
    assert "1 mount(s) do not answer: auth/ldap/ (ldap)" in health.reason
    assert "reconciler_mounts_not_answering 1.0" in metrics.render()
    # A pass that did not read the server keeps the last count; a clean one clears it.
    metrics.pass_finished(ok=False)
    assert "reconciler_mounts_not_answering 1.0" in metrics.render()
    metrics.pass_finished(ok=True, not_answering=[])
    assert metrics.health().to_dict()["status"] == "ok"


def test_an_unknown_server_version_is_refused_before_any_connection(tmp_path: Path) -> None:
    desired = tmp_path / "d.yaml"
    desired.write_text("version: 1\n")
    # Nothing listens on port 9: a connection attempt would fail differently.
    result = CliRun.invoke(
        ["plan", str(desired), "--server-version", "1.0.0"],
        env={"BAO_ADDR": "http://127.0.0.1:9", "BAO_TOKEN": "t"},
    )
    assert result.exit_code == 1, result.output
    assert "no built-in list for OpenBao 1.0.0" in result.stderr


def test_validate_says_a_removed_builtin_needs_a_replacement(tmp_path: Path) -> None:
    desired = tmp_path / "d.yaml"
    desired.write_text("version: 1\nauth:\n  - {path: ldap/, plugin: ldap}\n")
    result = CliRun.invoke(["validate", str(desired)], env={})
    assert result.exit_code == 1, result.output
    assert "d.yaml:3:" in result.output
    assert "a built-in of OpenBao 2.6.2, no longer shipped" in result.output
    assert "declare an external auth plugin named ldap" in result.output


def test_preflight_and_dead_mounts_cover_every_namespace() -> None:
    ldap_2_6 = CatalogEntry(type="auth", name="ldap", version="v2.6.2+builtin.bao", builtin=True)
    on_builtin = LiveMount(
        kind="auth",
        path="ldap/",
        plugin="ldap",
        running_plugin_version="v2.6.2+builtin.bao",
        namespace="team1/",
    )
    before = LiveState(
        catalog=[*builtin_catalog(), ldap_2_6],
        mounts=reserved_mounts(),
        namespaces=["team1/"],
        elsewhere=[on_builtin],
    )
    preflight = plan(DesiredState(version=1), before, server_version="2.7.2")
    assert [(e.target, "does not ship" in e.message) for e in preflight.errors] == [
        ("auth/ldap/ in namespace team1/", True)
    ]
    assert preflight.server_version == "2.7.2"

    # Upgraded: the same mount, skipped at start, is named as not answering, with a warning.
    after = before.model_copy(
        update={
            "catalog": builtin_catalog(),
            "elsewhere": [on_builtin.model_copy(update={"running_plugin_version": ""})],
        }
    )
    upgraded = plan(DesiredState(version=1), after)
    assert [(m.target, m.namespace) for m in upgraded.not_answering] == [
        ("auth/ldap/ in namespace team1/", "team1/")
    ]
    assert any(
        w.target == "auth/ldap/ in namespace team1/" and "no longer ships" in w.message
        for w in upgraded.warnings
    )
