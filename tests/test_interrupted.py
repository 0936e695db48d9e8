"""SIGINT and SIGTERM in the middle of a real run (a subprocess, a request held in flight).

A proxy holds one request of the run until the test has sent the signal: the action it
belongs to is the running one. `apply` must finish it, start no other, say what it did
(and, with --json, print its document marked interrupted), exit 1; a re-run converges.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from reconciler.demo.devserver import DevServer
from tests.helpers import SLACK, api, run_cli, schema_validator, write_desired
from tests.lying_proxy import LyingProxy

THREE_MOUNTS = (
    "version: 1\nsecrets:\n"
    "  - {path: int-a/, plugin: kv}\n  - {path: int-b/, plugin: kv}\n"
    "  - {path: int-c/, plugin: kv}\n"
)


class _Run:
    """`python -m reconciler ARGS` against `address`, its stderr read as it comes."""

    def __init__(self, server: DevServer, address: str, lock_dir: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env |= {
            "BAO_ADDR": address,
            "BAO_TOKEN": server.token,
            "RECONCILER_LOCK_DIR": str(lock_dir),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        # Said on stderr when apply takes the signal; a plan's document says it on stdout.
        self.stopping = threading.Event()
        self.interrupted = threading.Event()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        for line in stream:
            lines.append(line)
            if "stopping after the running action" in line:
                self.stopping.set()
            if "interrupted" in line:
                self.interrupted.set()

    def finish(self) -> tuple[int, str, str]:
        code = self.process.wait(timeout=SLACK)
        for reader in self._readers:
            reader.join(timeout=5)
        return code, "".join(self.stdout), "".join(self.stderr)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=SLACK)


def _mounts(server: DevServer) -> set[str]:
    data = api(server).get("/v1/sys/mounts").json()["data"]
    return {path for path in data if path.startswith("int-")}


@pytest.mark.parametrize(
    ("signum", "as_json"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["int", "term"]
)
def test_a_signal_during_apply_stops_after_the_running_action(
    server: DevServer, tmp_path: Path, signum: signal.Signals, as_json: bool
) -> None:
    desired = write_desired(tmp_path, THREE_MOUNTS)
    with LyingProxy(server.address) as proxy:
        held = proxy.hold("POST", "/v1/sys/mounts/int-b")
        run = _Run(
            server,
            proxy.address,
            tmp_path,
            "apply",
            str(desired),
            "--yes",
            *(["--json"] if as_json else []),
        )
        try:
            assert held.arrived.wait(SLACK), "the apply never reached its second action"
            run.process.send_signal(signum)
            assert run.stopping.wait(SLACK), "".join(run.stderr)
            held.release.set()
            code, stdout, stderr = run.finish()
        finally:
            held.release.set()
            run.kill()

    assert code == 1, (stdout, stderr)
    assert "Traceback" not in stderr and "Aborted" not in stderr, stderr
    # The running action finished, the next one never started.
    assert _mounts(server) == {"int-a/", "int-b/"}
    if as_json:
        document = json.loads(stdout)
        assert not list(schema_validator("apply.schema.json").iter_errors(document))
        assert document["verdict"] == "interrupted" and document["interrupted"] is True
        assert document["converged"] is False
        assert [a["target"] for a in document["applied"]] == ["secrets/int-a/", "secrets/int-b/"]
        assert document["writes"] == 2
    else:
        assert "interrupted: 2 of 3 actions applied" in stderr, stderr
        assert "A re-run converges" in stderr, stderr

    again = run_cli(server, "apply", str(desired), "--yes")
    assert again.ok, again.output
    assert _mounts(server) == {"int-a/", "int-b/", "int-c/"}


def test_a_signal_during_plan_stops_it_and_writes_no_plan(
    server: DevServer, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, THREE_MOUNTS)
    saved = tmp_path / "plan.json"
    with LyingProxy(server.address) as proxy:
        held = proxy.hold("GET", "/v1/sys/mounts")
        run = _Run(
            server, proxy.address, tmp_path, "plan", str(desired), "--json", "--out", str(saved)
        )
        try:
            assert held.arrived.wait(SLACK), "the plan never read the mounts"
            run.process.send_signal(signal.SIGTERM)
            # The plan waits for its concurrent reads: it can only end once the held one is
            # answered. The handler has run by then whatever the order: Python runs it at
            # the main thread's next step, and the plan has many steps left.
            held.release.set()
            code, stdout, stderr = run.finish()
        finally:
            held.release.set()
            run.kill()
    assert code == 1, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    document = json.loads(stdout)
    assert document["kind"] == "interrupted" and "nothing was changed" in document["error"]
    assert not saved.exists() and not list(tmp_path.glob(".plan.json.*"))
    assert _mounts(server) == set()
