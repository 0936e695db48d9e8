"""Canary reloads (SPEC §12): a broken binary used by several mounts takes down one
of them, which is rolled back; the others never stop serving."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.demo.devserver import DevServer
from tests.helpers import (
    CliResult,
    CliRun,
    RequestLog,
    api,
    mount_entry,
    run_cli,
    tampered_copy,
    write_desired,
)
from tests.lying_proxy import LyingProxy
from tests.test_apply_plugins import sha256_of

MOUNTS = [f"app-{i}/" for i in range(5)]

FIVE_MOUNTS = """\
version: 1
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, sha256: {v1}}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: {v2_command}, sha256: {v2}}}
secrets:
{mounts}
"""


def _desired(tmp_path: Path, plugins: Path, version: str, v2_command: str) -> Path:
    text = FIVE_MOUNTS.format(
        v1=sha256_of(plugins / "demo-kv-1.0.0"),
        v2=sha256_of(plugins / "demo-kv-2.0.0"),
        v2_command=v2_command,
        mounts="\n".join(f"  - {{path: {m}, plugin: demo-kv, version: {version}}}" for m in MOUNTS),
    )
    return write_desired(tmp_path, text, name=f"desired-{version}.yaml")


def _pids(server: DevServer, mounts: list[str] = MOUNTS) -> dict[str, int]:
    http = api(server)
    return {m: int(http.get(f"/v1/{m}info").json()["data"]["pid"]) for m in mounts}


def test_a_broken_binary_takes_down_only_the_canary_which_is_rolled_back(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    # The binary on disk does not match the sha256 registered for v2.0.0: it cannot start.
    broken = tampered_copy(plugins, "canary-broken-kv-2.0.0")
    on_v1 = _desired(tmp_path, plugins, "v1.0.0", broken.name)
    assert run_cli(server, "apply", str(on_v1), "--yes").ok
    for mount in MOUNTS:
        api(server).put(f"/v1/{mount}data/kept", json={"v": mount}).raise_for_status()
    before = _pids(server)

    upgrade = _desired(tmp_path, plugins, "v2.0.0", broken.name)
    planned = json.loads(run_cli(server, "plan", str(upgrade), "--json").stdout)
    reloads = [a for a in planned["actions"] if a["kind"] == "reload"]
    assert [(a["params"]["mounts"], a["canary"]) for a in reloads] == [
        (["app-0/"], True),
        (MOUNTS[1:], False),
    ]

    with RequestLog(server) as requests:
        result = run_cli(server, "apply", str(upgrade), "--yes")

    assert result.exit_code == 1, result.output
    assert "canary" in result.stderr and "secrets/app-0/" in result.stderr, result.output
    assert broken.name in result.stderr, result.output
    assert "rolled back: secrets/app-0/" in result.stderr, result.output
    # The canary reload, then the rollback's: never one naming the other four.
    assert len(requests.matching("POST", "/v1/sys/plugins/reload/backend")) == 2
    # The rollback's own reload brought the canary back: no node needed a repair.
    assert [r for r in requests.sent_to_one_node if "reload" in r[1]] == []
    after = _pids(server)
    assert {m: after[m] for m in MOUNTS[1:]} == {m: before[m] for m in MOUNTS[1:]}
    for mount in MOUNTS:
        entry = mount_entry(server, "secret", mount)
        assert (entry["plugin_version"], entry["running_plugin_version"]) == ("v1.0.0", "v1.0.0")
        assert api(server).get(f"/v1/{mount}data/kept").json()["data"]["v"] == mount
    broken.unlink()


def test_a_good_binary_goes_canary_first_then_the_rest(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    on_v1 = _desired(tmp_path, plugins, "v1.0.0", "demo-kv-2.0.0")
    assert run_cli(server, "apply", str(on_v1), "--yes").ok
    upgrade = _desired(tmp_path, plugins, "v2.0.0", "demo-kv-2.0.0")
    with RequestLog(server) as requests:
        # The default now, still accepted for scripts that pass it.
        result = run_cli(server, "apply", str(upgrade), "--yes", "--rollback-on-failure")
    assert result.exit_code == 0, result.output
    assert len(requests.matching("POST", "/v1/sys/plugins/reload/backend")) == 2
    for mount in MOUNTS:
        assert mount_entry(server, "secret", mount)["running_plugin_version"] == "v2.0.0"
    assert run_cli(server, "plan", str(upgrade), "--detailed-exitcode").exit_code == 0


def _two_mounts_upgrade(
    server: DevServer, plugins: Path, tmp_path: Path, v2_command: str
) -> tuple[list[str], Path]:
    """Mounts app-0/ and app-1/ on demo-kv v1.0.0; the file that moves both to v2.0.0."""
    two = MOUNTS[:2]

    def on(version: str) -> Path:
        text = FIVE_MOUNTS.format(
            v1=sha256_of(plugins / "demo-kv-1.0.0"),
            v2=sha256_of(plugins / "demo-kv-2.0.0"),
            v2_command=v2_command,
            mounts="\n".join(
                f"  - {{path: {m}, plugin: demo-kv, version: {version}}}" for m in two
            ),
        )
        return write_desired(tmp_path, text)

    assert run_cli(server, "apply", str(on("v1.0.0")), "--yes").ok
    return two, on("v2.0.0")


def _apply_through(proxy: LyingProxy, server: DevServer, desired: Path) -> CliResult:
    return CliRun.invoke(
        ["apply", str(desired), "--yes", "--no-rollback"],
        env={"BAO_ADDR": proxy.address, "BAO_TOKEN": server.token},
    )


@pytest.fixture
def doomed(plugins: Path) -> Iterator[Path]:
    """A private copy of demo-kv v2.0.0 (the shared one must stay intact for other tests)."""
    copy = plugins / "doomed-canary-kv-2.0.0"
    shutil.copy2(plugins / "demo-kv-2.0.0", copy)
    try:
        yield copy
    finally:
        copy.unlink(missing_ok=True)


def test_a_canary_that_does_not_take_its_new_plugin_stops_the_rest(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    two, upgrade = _two_mounts_upgrade(server, plugins, tmp_path, "demo-kv-2.0.0")
    with LyingProxy(server.address) as proxy:
        # The canary's reload is answered as done, but never reaches the server.
        proxy.lie("POST", "/v1/sys/plugins/reload/backend", 200)
        result = _apply_through(proxy, server, upgrade)
        reloads = proxy.count("POST", "/v1/sys/plugins/reload/backend")
    assert result.exit_code == 1, result.output
    assert "canary" in result.stderr and "secrets/app-0/" in result.stderr, result.output
    assert reloads == 1, "the other mounts were reloaded after a canary that did not take"
    for mount in two:
        assert mount_entry(server, "secret", mount)["running_plugin_version"] == "v1.0.0"


def test_a_canary_left_without_a_backend_after_its_reload_stops_the_rest(
    server: DevServer, plugins: Path, tmp_path: Path, doomed: Path
) -> None:
    two, upgrade = _two_mounts_upgrade(server, plugins, tmp_path, doomed.name)
    before = _pids(server, two[1:])

    def lose_the_canarys_backend() -> None:
        # The canary's reload worked; then its binary changes and a reload of its own
        # fails, which leaves the mount without a backend (404 "backend is nil").
        with doomed.open("a") as binary:
            binary.write("\n# changed on disk after the reload\n")
        api(server).post("/v1/sys/plugins/reload/backend", json={"mounts": [two[0]]})
        assert api(server).get(f"/v1/{two[0]}info").status_code == 404

    with LyingProxy(server.address) as proxy:
        proxy.after("POST", "/v1/sys/plugins/reload/backend", lose_the_canarys_backend)
        result = _apply_through(proxy, server, upgrade)
        reloads = proxy.count("POST", "/v1/sys/plugins/reload/backend")
    assert result.exit_code == 1, result.output
    assert "canary" in result.stderr and "secrets/app-0/" in result.stderr, result.output
    assert reloads == 1, "the other mounts were reloaded after a canary that does not answer"
    assert _pids(server, two[1:]) == before
    assert mount_entry(server, "secret", two[1])["running_plugin_version"] == "v1.0.0"


def test_a_canary_whose_plugin_dies_after_its_reload_stops_the_rest(
    server: DevServer, plugins: Path, tmp_path: Path, doomed: Path
) -> None:
    two, upgrade = _two_mounts_upgrade(server, plugins, tmp_path, doomed.name)

    def kill_the_canary() -> None:
        # The server restarts a plugin that died at the next request; a binary that no
        # longer matches its sha256 keeps it from coming back (500 on every request).
        with doomed.open("a") as binary:
            binary.write("\n# changed on disk after the reload\n")
        answer = api(server).get(f"/v1/{two[0]}info")
        answer.raise_for_status()
        os.kill(int(answer.json()["data"]["pid"]), signal.SIGKILL)

    with LyingProxy(server.address) as proxy:
        proxy.after("POST", "/v1/sys/plugins/reload/backend", kill_the_canary)
        result = _apply_through(proxy, server, upgrade)
        reloads = proxy.count("POST", "/v1/sys/plugins/reload/backend")
    assert result.exit_code == 1, result.output
    assert reloads == 1, "the other mounts were reloaded after a canary that does not answer"
    assert mount_entry(server, "secret", two[1])["running_plugin_version"] == "v1.0.0"
