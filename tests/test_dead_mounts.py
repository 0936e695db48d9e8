"""Plans that see dead mounts (SPEC §12): a mount whose plugin failed to start is
reloaded, even though `sys/mounts` still reports it running."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.state import read_live_state
from reconciler.watch import Watcher, WatchOptions
from tests.helpers import RequestLog, api, run_cli, write_desired
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


MISSING_FILE = """\
version: 1
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: gone-kv-1.0.0, sha256: {v1}}}
secrets:
  - {{path: kept/, plugin: demo-kv, version: v1.0.0}}
"""


def test_a_plugin_file_gone_from_the_server_is_named_not_retried_and_flagged(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    # The server answers 500 to a catalog read of an entry whose file is gone: the mount
    # keeps running its process, and only its next reload would fail.
    binary = plugins / "gone-kv-1.0.0"
    binary.write_bytes((plugins / "demo-kv-1.0.0").read_bytes())
    binary.chmod(0o755)
    desired = write_desired(tmp_path, MISSING_FILE.format(v1=sha256_of(binary)))
    assert run_cli(server, "apply", str(desired), "--yes").ok
    binary.unlink()

    with RequestLog(server) as requests:
        planned = run_cli(server, "plan", str(desired), "--detailed-exitcode", "--json")
    assert planned.exit_code == 0, planned.output
    warned = {w["target"]: w["message"] for w in json.loads(planned.stdout)["warnings"]}
    assert "kept/" in warned["secret/demo-kv/v1.0.0"], warned
    assert "gone-kv-1.0.0" in warned["secret/demo-kv/v1.0.0"], warned
    # Not a transient failure: asked once per plan, never retried.
    assert len(requests.matching("GET", "/v1/sys/plugins/catalog/secret/demo-kv")) == 1

    status = run_cli(server, "status", "--json")
    assert status.exit_code == 2, status.output
    (mount,) = [m for m in json.loads(status.stdout)["mounts"] if m["path"] == "kept/"]
    assert mount["nodes"][0]["answers"], mount
    assert any("missing" in problem for problem in mount["nodes"][0]["problems"]), mount
