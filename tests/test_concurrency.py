"""One writer at a time: the per-server lock of `apply`, busy, waited for, and dropped on death."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.demo.devserver import DevServer
from reconciler.executor import lock_path, server_lock
from tests.helpers import SLACK, RequestLog, api, run_cli, write_desired

# Many built-in mounts make an apply last long enough for two of them to overlap.
MANY_MOUNTS = "version: 1\nsecrets:\n" + "".join(
    f"  - {{path: busy-{i:02d}/, plugin: kv, description: mount {i}}}\n" for i in range(25)
)
ONE_MOUNT = "version: 1\nsecrets:\n  - {path: solo/, plugin: kv}\n"


def _env(server: DevServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=server.address, BAO_TOKEN=server.token)
    return env


def _start_apply(server: DevServer, desired: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(desired), "--yes", *extra],
        env=_env(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=desired.parent,
    )


def _mounts(server: DevServer) -> set[str]:
    return set(api(server).get("/v1/sys/mounts").json()["data"])


def _count_lock_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every non-blocking flock attempt; the list's length is the number of tries."""
    attempts: list[int] = []
    original = fcntl.flock

    def counting_flock(fd: Any, operation: int) -> None:
        if operation & fcntl.LOCK_NB:
            attempts.append(operation)
        original(fd, operation)

    monkeypatch.setattr(fcntl, "flock", counting_flock)
    return attempts


def test_a_held_lock_fails_apply_at_once_naming_the_lock(
    server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    with server_lock(server.address, ""), RequestLog(server) as requests:
        attempts = _count_lock_attempts(monkeypatch)
        result = run_cli(server, "apply", str(desired), "--yes")
    assert result.exit_code == 1, result.output
    # At once: one try at the lock, no waiting for it.
    assert len(attempts) == 1
    assert f"another reconciler is applying to {server.address}" in result.stderr
    assert str(lock_path(server.address, "")) in result.stderr
    assert "--lock-timeout" in result.stderr
    assert "Traceback" not in result.output
    assert requests.writes() == []
    assert "solo/" not in _mounts(server)


def test_lock_timeout_waits_then_gives_up(
    server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    with server_lock(server.address, ""):
        attempts = _count_lock_attempts(monkeypatch)
        started = time.monotonic()
        result = run_cli(server, "apply", str(desired), "--yes", "--lock-timeout", "1s")
        elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "is held" in result.stderr
    # It waited (tried again and again) for the whole second, then gave up.
    assert len(attempts) > 1
    assert 1.0 <= elapsed < SLACK
    assert "solo/" not in _mounts(server)


def test_lock_timeout_waits_for_the_holder_to_finish(server: DevServer, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    holding = server_lock(server.address, "")
    holding.__enter__()
    releaser = threading.Timer(0.5, holding.__exit__, args=(None, None, None))
    releaser.start()
    try:
        started = time.monotonic()
        result = run_cli(server, "apply", str(desired), "--yes", "--lock-timeout", "30s")
        elapsed = time.monotonic() - started
    finally:
        releaser.join()
    assert result.exit_code == 0, result.output
    assert elapsed >= 0.5
    assert "solo/" in _mounts(server)


def test_the_lock_is_per_namespace(server: DevServer, tmp_path: Path) -> None:
    api(server).post("/v1/sys/namespaces/team-lock").raise_for_status()
    desired = write_desired(tmp_path, ONE_MOUNT)
    with server_lock(server.address, ""):
        result = run_cli(server, "apply", str(desired), "--yes", "--namespace", "team-lock")
    assert result.exit_code == 0, result.output
    with server_lock(server.address, "team-lock"):
        busy = run_cli(server, "apply", str(desired), "--yes", "--namespace", "team-lock")
    assert busy.exit_code == 1
    assert "(namespace team-lock)" in busy.stderr


def test_a_killed_holder_releases_the_lock(server: DevServer, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from reconciler.executor import server_lock\n"
            "with server_lock(sys.argv[1], ''):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
            server.address,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        desired = write_desired(tmp_path, ONE_MOUNT)
        assert run_cli(server, "apply", str(desired), "--yes").exit_code == 1
        holder.kill()
        holder.wait(timeout=SLACK)
        # No stale lock file to clean up: the kernel dropped the flock with the process.
        result = run_cli(server, "apply", str(desired), "--yes")
        assert result.exit_code == 0, result.output
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=SLACK)


def _run_two_together(server: DevServer, desired: Path, *extra: str) -> list[tuple[int, str, str]]:
    processes = [_start_apply(server, desired, *extra) for _ in range(2)]
    outcomes = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        outcomes.append((process.returncode, stdout, stderr))
    return outcomes


def _assert_converged(server: DevServer, desired: Path) -> None:
    assert {f"busy-{i:02d}/" for i in range(25)} <= _mounts(server)
    again = run_cli(server, "plan", str(desired), "--detailed-exitcode")
    assert again.exit_code == 0, again.output


def test_two_applies_started_together_one_writes_the_other_fails_or_finds_nothing(
    server: DevServer, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, MANY_MOUNTS)
    outcomes = _run_two_together(server, desired)
    applied = [o for o in outcomes if o[0] == 0 and "Applied and verified" in o[1]]
    assert len(applied) == 1, outcomes
    for code, stdout, stderr in outcomes:
        assert "Traceback" not in stderr, stderr
        if code != 0:
            assert code == 1, (code, stdout, stderr)
            assert "another reconciler is applying" in stderr
        elif "Applied and verified" not in stdout:
            assert "no changes" in stdout
    _assert_converged(server, desired)


def test_two_applies_with_lock_timeout_run_one_after_the_other(
    server: DevServer, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, MANY_MOUNTS)
    # Holding the lock while both start makes them overlap for certain.
    with server_lock(server.address, ""):
        processes = [_start_apply(server, desired, "--lock-timeout", "60s") for _ in range(2)]
        time.sleep(1.0)
        assert all(p.poll() is None for p in processes)
    outcomes = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        outcomes.append((process.returncode, stdout, stderr))
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    # The second one plans under the lock, after the first: it finds nothing to do.
    assert sorted("Applied and verified" in stdout for _, stdout, _ in outcomes) == [False, True]
    assert any("no changes" in stdout for _, stdout, _ in outcomes)
    _assert_converged(server, desired)
