"""Killed at any point of an upgrade (SIGKILL after its k-th write), a re-run converges.

The executor kills itself after its k-th write when RECONCILER_TEST_KILL_AFTER_WRITES
is set, so every gap between two writes is hit without a proxy. The scenario is
the upgrade an operator runs most: demo-kv v1 → v2 on three mounts holding
data, with v1 deregistered once v2 is verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.demo.devserver import DevServer
from reconciler.executor import KILL_AFTER_WRITES_ENV
from tests.helpers import api, run_cli, write_desired

MOUNTS = ("alpha/", "beta/", "gamma/")
_SECRETS = "".join(f"  - {{{{path: {m}, plugin: demo-kv}}}}\n" for m in MOUNTS)

V1 = (
    "version: 1\nplugin_directory: {plugins}\nplugins:\n"
    "  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}\n"
    "secrets:\n" + _SECRETS
)
V2 = (
    "version: 1\nplugin_directory: {plugins}\nplugins:\n"
    "  - {{type: secret, name: demo-kv, version: v1.0.0, state: absent}}\n"
    "  - {{type: secret, name: demo-kv, version: v2.0.0, command: demo-kv-2.0.0}}\n"
    "secrets:\n" + _SECRETS
)
# register v2, the canary tuned and reloaded alone, the other two tuned, one reload of them,
# deregister v1: one write each.
UPGRADE_ACTIONS = ["register", "tune", "reload", "tune", "tune", "reload", "deregister"]


def _plan_actions(server: DevServer, desired: Path) -> list[str]:
    result = run_cli(server, "plan", str(desired), "--json")
    assert result.exit_code == 0, result.output
    return [action["kind"] for action in json.loads(result.stdout)["actions"]]


def _apply_killed_after(
    server: DevServer, desired: Path, writes: int
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(
        BAO_ADDR=server.address, BAO_TOKEN=server.token, **{KILL_AFTER_WRITES_ENV: str(writes)}
    )
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", str(desired), "--yes"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=desired.parent,
    )


@pytest.mark.parametrize("k", range(1, len(UPGRADE_ACTIONS) + 1))
def test_upgrade_killed_after_each_write_converges_on_rerun(
    server: DevServer, plugins: Path, tmp_path: Path, k: int
) -> None:
    v1 = write_desired(tmp_path, V1.format(plugins=plugins))
    first = run_cli(server, "apply", str(v1), "--yes")
    assert first.exit_code == 0, first.output
    http = api(server)
    for mount in MOUNTS:
        http.put(f"/v1/{mount}data/kept", json={"value": f"{mount} before"}).raise_for_status()

    v2 = write_desired(tmp_path, V2.format(plugins=plugins))
    assert _plan_actions(server, v2) == UPGRADE_ACTIONS

    killed = _apply_killed_after(server, v2, k)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout, killed.stderr)
    # Each write the killed run made is done for good: a re-run has only the rest to do.
    assert len(_plan_actions(server, v2)) == len(UPGRADE_ACTIONS) - k

    rerun = run_cli(server, "apply", str(v2), "--yes")
    assert rerun.exit_code == 0, rerun.output

    v2_sha = hashlib.sha256((plugins / "demo-kv-2.0.0").read_bytes()).hexdigest()
    catalog = http.get("/v1/sys/plugins/catalog/secret/demo-kv", params={"version": "v2.0.0"})
    assert catalog.json()["data"]["sha256"] == v2_sha
    listed = http.get("/v1/sys/plugins/catalog").json()["data"]["detailed"]
    assert sorted(e["version"] for e in listed if e["name"] == "demo-kv") == ["v2.0.0"]
    table = http.get("/v1/sys/mounts").json()["data"]
    for mount in MOUNTS:
        entry = table[mount]
        assert (entry["plugin_version"], entry["running_plugin_version"]) == ("v2.0.0", "v2.0.0")
        assert entry["running_sha256"] == v2_sha
        # running_* can be stale after a failed reload: ask the code that answers.
        assert http.get(f"/v1/{mount}info").json()["data"]["engine"] == "demo-kv v2"
        assert http.get(f"/v1/{mount}data/kept").json()["data"]["value"] == f"{mount} before"
    assert _plan_actions(server, v2) == []
