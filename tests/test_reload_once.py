"""A reload is sent once (SPEC §12): when its answer is lost, the mounts are read
back and only those that did not take their new plugin are reloaded, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.demo.devserver import DevServer
from tests.helpers import CliResult, CliRun, api, mount_entry, write_desired
from tests.lying_proxy import LyingProxy

RELOAD = ("POST", "/v1/sys/plugins/reload/backend")
MOUNTS = ("one/", "two/")

TWO_MOUNTS = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: demo-kv-2.0.0}}
secrets:
  - {{path: one/, plugin: demo-kv, version: {version}}}
  - {{path: two/, plugin: demo-kv, version: {version}}}
"""


@pytest.fixture
def proxy(server: DevServer) -> Iterator[LyingProxy]:
    with LyingProxy(server.address) as the_proxy:
        yield the_proxy


def _apply(address: str, server: DevServer, desired: Path) -> CliResult:
    return CliRun.invoke(
        ["apply", str(desired), "--yes"], env={"BAO_ADDR": address, "BAO_TOKEN": server.token}
    )


def _on_v1_then_upgrade(server: DevServer, plugins: Path, tmp_path: Path) -> Path:
    v1 = write_desired(tmp_path, TWO_MOUNTS.format(plugins=plugins, version="v1.0.0"))
    assert _apply(server.address, server, v1).ok
    for mount in MOUNTS:
        api(server).put(f"/v1/{mount}data/kept", json={"v": mount}).raise_for_status()
    return write_desired(tmp_path, TWO_MOUNTS.format(plugins=plugins, version="v2.0.0"))


def _pids(server: DevServer) -> dict[str, int]:
    http = api(server)
    return {mount: int(http.get(f"/v1/{mount}info").json()["data"]["pid"]) for mount in MOUNTS}


def _assert_on_v2_with_data(server: DevServer) -> None:
    for mount in MOUNTS:
        assert mount_entry(server, "secret", mount)["running_plugin_version"] == "v2.0.0"
        assert api(server).get(f"/v1/{mount}data/kept").json()["data"]["v"] == mount


def test_a_reload_whose_answer_is_lost_is_not_sent_again(
    server: DevServer, plugins: Path, proxy: LyingProxy, tmp_path: Path
) -> None:
    upgrade = _on_v1_then_upgrade(server, plugins, tmp_path)
    before = _pids(server)
    # The first reload (the canary, one/) runs on the server; its answer is lost.
    proxy.drop_answer(*RELOAD, forward=True)

    result = _apply(proxy.address, server, upgrade)

    assert result.exit_code == 0, result.output
    # Restarted once: the canary's reload is not sent again, then two/ is reloaded.
    assert proxy.count(*RELOAD) == 2
    assert proxy.forwarded(*RELOAD) == 2
    after = _pids(server)
    assert all(after[mount] != before[mount] for mount in MOUNTS)
    _assert_on_v2_with_data(server)
    assert run_plan_is_empty(server, upgrade)


def test_a_reload_lost_before_the_server_saw_it_is_sent_once_more(
    server: DevServer, plugins: Path, proxy: LyingProxy, tmp_path: Path
) -> None:
    upgrade = _on_v1_then_upgrade(server, plugins, tmp_path)
    proxy.drop_answer(*RELOAD, forward=False)

    result = _apply(proxy.address, server, upgrade)

    assert result.exit_code == 0, result.output
    # The canary's reload, lost on the way, is sent once more; then two/'s.
    assert proxy.count(*RELOAD) == 3
    assert proxy.forwarded(*RELOAD) == 2
    _assert_on_v2_with_data(server)


def run_plan_is_empty(server: DevServer, desired: Path) -> bool:
    planned = CliRun.invoke(
        ["plan", str(desired), "--detailed-exitcode"],
        env={"BAO_ADDR": server.address, "BAO_TOKEN": server.token},
    )
    return planned.exit_code == 0
