"""Verification and the pre-write state check, proven against a server that lies.

Each case makes a write look successful without its effect (a lying proxy
answers it and drops it), or breaks the mount right after a write that worked.
Only the executor's verification can tell, so each case fails as soon as
verification is weakened. The last case changes the server between planning
and the first write, which only the executor's own state check can catch.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.errors import StaleState
from reconciler.loader import load_desired
from reconciler.reconcile import apply, plan_for
from tests.helpers import CliResult, CliRun, api, mount_entry, write_desired
from tests.lying_proxy import LyingProxy


@pytest.fixture
def proxy(server: DevServer) -> Iterator[LyingProxy]:
    with LyingProxy(server.address) as the_proxy:
        yield the_proxy


def apply_via(proxy: LyingProxy, server: DevServer, desired: Path) -> CliResult:
    return CliRun.invoke(
        ["apply", str(desired), "--yes", "--no-rollback"],
        env={"BAO_ADDR": proxy.address, "BAO_TOKEN": server.token},
    )


def assert_not_converged(result: CliResult, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "Applied and verified" not in result.stdout, result.output
    assert "apply did not converge" in result.stderr, result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.output


def test_a_tune_answered_but_never_made_fails_naming_the_mount(
    server: DevServer, proxy: LyingProxy, tmp_path: Path
) -> None:
    api(server).post(
        "/v1/sys/mounts/tuned", json={"type": "kv", "description": "before"}
    ).raise_for_status()
    desired = write_desired(
        tmp_path, "version: 1\nsecrets:\n  - {path: tuned/, plugin: kv, description: after}\n"
    )
    proxy.lie("POST", "/v1/sys/mounts/tuned/tune", 204)

    result = apply_via(proxy, server, desired)

    assert_not_converged(result, "did not converge: tune secrets/tuned/ is still needed")
    assert proxy.count("POST", "/v1/sys/mounts/tuned/tune") == 1
    assert mount_entry(server, "secret", "tuned/")["description"] == "before"


UPGRADE = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: {v2_command}}}
secrets:
  - {{path: {path}, plugin: demo-kv, version: {version}}}
"""


def _mount_on_v1(server: DevServer, plugins: Path, path: str, v2_command: str) -> Path:
    """`path` runs demo-kv v1.0.0 (v2.0.0 registered too); returns the file that upgrades it."""
    first = UPGRADE.format(plugins=plugins, v2_command=v2_command, path=path, version="v1.0.0")
    applied = CliRun.invoke(
        ["apply", str(write_desired(plugins.parent, first)), "--yes"],
        env={"BAO_ADDR": server.address, "BAO_TOKEN": server.token},
    )
    assert applied.ok, applied.output
    assert mount_entry(server, "secret", path)["running_plugin_version"] == "v1.0.0"
    upgrade = UPGRADE.format(plugins=plugins, v2_command=v2_command, path=path, version="v2.0.0")
    return write_desired(plugins.parent, upgrade)


def test_a_reload_answered_but_never_made_fails_naming_what_still_runs(
    server: DevServer, plugins: Path, proxy: LyingProxy
) -> None:
    upgrade = _mount_on_v1(server, plugins, "stuck/", "demo-kv-2.0.0")
    proxy.lie("POST", "/v1/sys/plugins/reload/backend", 200)

    result = apply_via(proxy, server, upgrade)

    assert_not_converged(result, "did not converge: stuck/ runs v1.0.0")
    assert proxy.count("POST", "/v1/sys/mounts/stuck/tune") == 1
    assert proxy.count("POST", "/v1/sys/plugins/reload/backend") == 1
    assert mount_entry(server, "secret", "stuck/")["running_plugin_version"] == "v1.0.0"


@pytest.fixture
def doomed_binary(plugins: Path) -> Iterator[str]:
    """A private copy of demo-kv v2.0.0 (the shared one must stay intact for other tests)."""
    command = "doomed-kv-2.0.0"
    shutil.copy2(plugins / "demo-kv-2.0.0", plugins / command)
    try:
        yield command
    finally:
        (plugins / command).unlink(missing_ok=True)


def test_a_backend_that_dies_after_the_reload_fails_naming_the_mount(
    server: DevServer, plugins: Path, proxy: LyingProxy, doomed_binary: str
) -> None:
    upgrade = _mount_on_v1(server, plugins, "fragile/", doomed_binary)

    def kill_the_backend() -> None:
        # The server restarts a plugin that died on the next request; a binary that no
        # longer matches its catalog sha256 keeps it from coming back.
        with (plugins / doomed_binary).open("a") as binary:
            binary.write("\n# changed on disk after the reload\n")
        info = api(server).get("/v1/fragile/info")
        info.raise_for_status()
        assert info.json()["data"]["version"] == "v2.0.0"
        os.kill(int(info.json()["data"]["pid"]), signal.SIGKILL)

    proxy.after("POST", "/v1/sys/plugins/reload/backend", kill_the_backend)

    result = apply_via(proxy, server, upgrade)

    # The reload itself worked: the mount runs the new version, but does not answer.
    assert_not_converged(result, "secrets/fragile/ does not answer", "checksums did not match")
    assert mount_entry(server, "secret", "fragile/")["running_plugin_version"] == "v2.0.0"
    assert api(server).get("/v1/fragile/info").status_code >= 500


def test_a_change_between_planning_and_the_first_write_is_refused_before_writing(
    server: DevServer, proxy: LyingProxy, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, "version: 1\nsecrets:\n  - {path: fresh/, plugin: kv}\n")
    loaded = load_desired(desired)
    with Client(proxy.address, server.token) as client:
        the_plan = plan_for(client, loaded)
        assert [a.target for a in the_plan.actions] == ["secrets/fresh/"]
        # Someone else writes after the plan was made (not part of the desired state).
        api(server).post("/v1/sys/mounts/intruder", json={"type": "kv"}).raise_for_status()
        with pytest.raises(StaleState):
            apply(client, the_plan, loaded)

    assert proxy.writes() == []
    mounts = api(server).get("/v1/sys/mounts").json()["data"]
    assert "intruder/" in mounts and "fresh/" not in mounts


def test_a_failed_verification_deregisters_nothing(
    server: DevServer, plugins: Path, proxy: LyingProxy
) -> None:
    upgrade = _mount_on_v1(server, plugins, "retiring/", "demo-kv-2.0.0")
    retiring = upgrade.read_text().replace(
        "command: demo-kv-1.0.0}", "command: demo-kv-1.0.0, state: absent}"
    )
    upgrade.write_text(retiring)
    proxy.lie("POST", "/v1/sys/plugins/reload/backend", 200)

    result = apply_via(proxy, server, upgrade)

    assert_not_converged(result, "did not converge: retiring/ runs v1.0.0")
    # The cleanup stage waits for a verified converge stage: v1.0.0 still runs the mount.
    assert proxy.count("DELETE", "/v1/sys/plugins/catalog/secret/demo-kv") == 0
    v1 = api(server).get("/v1/sys/plugins/catalog/secret/demo-kv", params={"version": "v1.0.0"})
    assert v1.status_code == 200, v1.text
