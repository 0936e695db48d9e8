"""Plans that see dead mounts (SPEC §12): a mount whose plugin failed to start is
reloaded, even though `sys/mounts` still reports it running."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.state import read_live_state
from reconciler.watch import Watcher, WatchOptions
from tests.helpers import api, run_cli, write_desired
from tests.test_apply_plugins import BROKEN_UPGRADE, _broken_upgrade, sha256_of


def test_pin_back_after_a_failed_upgrade_reloads_the_dead_mount(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    # 1. Pinned to a v2 whose binary cannot start: the reload fails and leaves no backend.
    upgrade = _broken_upgrade(server, plugins, tmp_path)
    failed = run_cli(server, "apply", str(upgrade), "--yes", "--no-rollback")
    assert failed.exit_code == 1, failed.output
    assert api(server).get("/v1/fragile/data/precious").status_code == 404

    # 2. Back to v1: the server still reports v1 running, yet the plan reloads the mount.
    v1, v2 = sha256_of(plugins / "demo-kv-1.0.0"), sha256_of(plugins / "demo-kv-2.0.0")
    back = write_desired(tmp_path, BROKEN_UPGRADE.format(v1=v1, v2=v2, version="v1.0.0"))
    planned = run_cli(server, "plan", str(back), "--detailed-exitcode", "--json")
    assert planned.exit_code == 2, planned.output
    reloads = [a for a in json.loads(planned.stdout)["actions"] if a["kind"] == "reload"]
    assert [(a["params"]["mounts"], a["reason_code"]) for a in reloads] == [
        (["fragile/"], "backend-not-answering")
    ]

    # 3. Apply brings it back with its data; then nothing is left to do.
    applied = run_cli(server, "apply", str(back), "--yes")
    assert applied.exit_code == 0, applied.output
    assert api(server).get("/v1/fragile/data/precious").json()["data"]["v"] == 1
    again = run_cli(server, "plan", str(back), "--detailed-exitcode")
    assert again.exit_code == 0, again.output


def test_a_dead_managed_mount_is_never_no_changes(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    upgrade = _broken_upgrade(server, plugins, tmp_path)
    assert run_cli(server, "apply", str(upgrade), "--yes", "--no-rollback").exit_code == 1
    # The file that broke it: the pin is already v2, the mount is dead.
    planned = run_cli(server, "plan", str(upgrade), "--detailed-exitcode")
    assert planned.exit_code == 2, planned.output
    assert "fragile/" in planned.stdout and "does not answer" in planned.stdout


def test_an_unmanaged_dead_mount_is_a_warning(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    upgrade = _broken_upgrade(server, plugins, tmp_path)
    assert run_cli(server, "apply", str(upgrade), "--yes", "--no-rollback").exit_code == 1
    live = {m.path: m for m in read_live_state(client).mounts}
    assert live["fragile/"].backend_answers is False
    assert live["cubbyhole/"].backend_answers is None  # a built-in is never probed

    others = write_desired(tmp_path, "version: 1\n", name="empty.yaml")
    planned = run_cli(server, "plan", str(others))
    assert "secrets/fragile/" in planned.output
    assert "does not answer" in planned.output, planned.output


def test_a_watch_pass_reloads_a_dead_managed_mount(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    upgrade = _broken_upgrade(server, plugins, tmp_path)
    assert run_cli(server, "apply", str(upgrade), "--yes", "--no-rollback").exit_code == 1
    v1, v2 = sha256_of(plugins / "demo-kv-1.0.0"), sha256_of(plugins / "demo-kv-2.0.0")
    back = write_desired(tmp_path, BROKEN_UPGRADE.format(v1=v1, v2=v2, version="v1.0.0"))

    watcher = Watcher(back, lambda: Client(server.address, server.token), WatchOptions())
    outcome = watcher.run_pass()

    assert outcome.ok, outcome.failures
    assert "reload mounts fragile/" in outcome.applied, outcome.applied
    assert api(server).get("/v1/fragile/data/precious").json()["data"]["v"] == 1
