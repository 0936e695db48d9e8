"""One writer at a time: the per-server lock of `apply`, busy, waited for, and dropped on death."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.lock import lock_path, server_lock
from reconciler.model import ServerIdentity
from tests.helpers import SLACK, RequestLog, api, run_cli, write_desired

# Many built-in mounts make an apply last long enough for two of them to overlap.
MANY_MOUNTS = "version: 1\nsecrets:\n" + "".join(
    f"  - {{path: busy-{i:02d}/, plugin: kv, description: mount {i}}}\n" for i in range(25)
)
NOBODY = 65534
ONE_MOUNT = "version: 1\nsecrets:\n  - {path: solo/, plugin: kv}\n"


def _env(server: DevServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=server.address, BAO_TOKEN=server.token)
    return env


def _start_apply(
    server: DevServer, desired: Path, *extra: str, address: str = ""
) -> subprocess.Popen[str]:
    env = _env(server)
    if address:
        env["BAO_ADDR"] = address
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(desired), "--yes", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=desired.parent,
    )


def _identity(server: DevServer, namespace: str = "", address: str = "") -> ServerIdentity:
    with Client(address or server.address, server.token, namespace=namespace) as client:
        return client.server_identity()


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
    with server_lock(_identity(server)), RequestLog(server) as requests:
        attempts = _count_lock_attempts(monkeypatch)
        result = run_cli(server, "apply", str(desired), "--yes")
    assert result.exit_code == 1, result.output
    # At once: one try at the lock, no waiting for it.
    assert len(attempts) == 1
    assert f"another apply holds the lock for {server.address}" in result.stderr
    assert str(lock_path(_identity(server))) in result.stderr
    assert "--lock-timeout" in result.stderr
    assert "Traceback" not in result.output
    assert requests.writes() == []
    assert "solo/" not in _mounts(server)


def test_lock_timeout_waits_then_gives_up(
    server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    with server_lock(_identity(server)):
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


def test_lock_timeout_waits_for_the_holder_to_finish(
    server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    holding = server_lock(_identity(server))
    holding.__enter__()
    released = threading.Event()
    refused: list[int] = []
    original = fcntl.flock

    def release_after_three_refusals(fd: Any, operation: int) -> None:
        # Counts, not a clock: the holder lets go once the apply met the lock three times.
        try:
            original(fd, operation)
        except BlockingIOError:
            refused.append(operation)
            if len(refused) == 3:
                holding.__exit__(None, None, None)
                released.set()
            raise

    monkeypatch.setattr(fcntl, "flock", release_after_three_refusals)
    try:
        result = run_cli(server, "apply", str(desired), "--yes", "--lock-timeout", "30s")
    finally:
        if not released.is_set():
            holding.__exit__(None, None, None)
    assert result.exit_code == 0, result.output
    assert len(refused) == 3, "it met the held lock, kept trying, and went on once released"
    assert "solo/" in _mounts(server)


def test_the_lock_covers_the_namespace_tree_it_writes(server: DevServer, tmp_path: Path) -> None:
    api(server).post("/v1/sys/namespaces/team-lock").raise_for_status()
    api(server).post("/v1/sys/namespaces/team-other").raise_for_status()
    desired = write_desired(tmp_path, ONE_MOUNT)
    # A sibling namespace's apply writes nothing of this one: both run.
    with server_lock(_identity(server, "team-other")):
        result = run_cli(server, "apply", str(desired), "--yes", "--namespace", "team-lock")
    assert result.exit_code == 0, result.output
    with server_lock(_identity(server, "team-lock")):
        busy = run_cli(server, "apply", str(desired), "--yes", "--namespace", "team-lock")
    assert busy.exit_code == 1
    assert "namespace team-lock)" in busy.stderr
    # A root apply writes the catalog and may write every namespace: it excludes them all.
    with server_lock(_identity(server)):
        busy = run_cli(server, "apply", str(desired), "--yes", "--namespace", "team-lock")
    assert busy.exit_code == 1
    assert "an apply in the root namespace writes this namespace too" in busy.stderr
    with server_lock(_identity(server, "team-lock")):
        busy = run_cli(server, "apply", str(desired), "--yes")
    assert busy.exit_code == 1


_HOLDER = """
import sys, time
from reconciler.client import Client
from reconciler.lock import server_lock
with Client(sys.argv[1], sys.argv[2]) as client, server_lock(client.server_identity()):
    print("held", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def _held_by_another_process(
    server: DevServer, address: str = ""
) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the lock, found through `address`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, address or server.address, server.token],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=SLACK)


def test_a_killed_holder_releases_the_lock(server: DevServer, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    with _held_by_another_process(server) as holder:
        assert run_cli(server, "apply", str(desired), "--yes").exit_code == 1
        holder.kill()
        holder.wait(timeout=SLACK)
        # No stale lock file to clean up: the kernel dropped the flock with the process.
        result = run_cli(server, "apply", str(desired), "--yes")
        assert result.exit_code == 0, result.output


def test_two_spellings_of_the_address_share_one_lock(server: DevServer, tmp_path: Path) -> None:
    other_spelling = server.address.replace("127.0.0.1", "localhost")
    assert other_spelling != server.address
    desired = write_desired(tmp_path, ONE_MOUNT)
    with _held_by_another_process(server, address=other_spelling), RequestLog(server) as requests:
        result = run_cli(server, "apply", str(desired), "--yes")
    assert result.exit_code == 1, result.output
    assert "another apply holds the lock" in result.stderr
    assert requests.writes() == []
    assert "solo/" not in _mounts(server)


def test_another_unix_user_can_hold_the_lock_an_apply_created(
    server: DevServer, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("starting a process as another Unix user needs root")
    path = lock_path(_identity(server))
    with server_lock(_identity(server)):
        pass  # the file now exists, created by this user
    # flock(1) stands in for the other user's reconciler: the same flock on the same file.
    holder = subprocess.Popen(
        ["flock", "--nonblock", "--no-fork", str(path), "sh", "-c", "echo held; exec sleep 120"],
        stdout=subprocess.PIPE,
        text=True,
        user=NOBODY,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        desired = write_desired(tmp_path, ONE_MOUNT)
        with RequestLog(server) as requests:
            result = run_cli(server, "apply", str(desired), "--yes")
        assert result.exit_code == 1, result.output
        assert "another apply holds the lock" in result.stderr
        assert requests.writes() == []
    finally:
        holder.kill()
        holder.wait(timeout=SLACK)


def _wait_until_waiting_for(process: subprocess.Popen[str], lock: Path) -> None:
    """Until `process` holds an open descriptor on `lock` (it polls the flock)."""
    deadline = time.monotonic() + SLACK
    descriptors = Path(f"/proc/{process.pid}/fd")
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(OSError):
            if any(Path(os.readlink(fd)) == lock for fd in descriptors.iterdir()):
                return
        time.sleep(0.02)
    raise AssertionError(f"process {process.pid} never opened {lock}")


def _outcomes(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    outcomes = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        outcomes.append((process.returncode, stdout, stderr))
    return outcomes


def _assert_converged(server: DevServer, desired: Path) -> None:
    assert {f"busy-{i:02d}/" for i in range(25)} <= _mounts(server)
    again = run_cli(server, "plan", str(desired), "--detailed-exitcode")
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("second_spelling", ["127.0.0.1", "localhost"])
def test_two_applies_started_together_one_writes_the_other_fails_or_finds_nothing(
    server: DevServer, tmp_path: Path, second_spelling: str
) -> None:
    desired = write_desired(tmp_path, MANY_MOUNTS)
    second_address = server.address.replace("127.0.0.1", second_spelling)
    outcomes = _outcomes(
        [_start_apply(server, desired), _start_apply(server, desired, address=second_address)]
    )
    applied = [o for o in outcomes if o[0] == 0 and "Applied and verified" in o[1]]
    assert len(applied) == 1, outcomes
    for code, stdout, stderr in outcomes:
        assert "Traceback" not in stderr, stderr
        if code != 0:
            assert code == 1, (code, stdout, stderr)
            assert "another apply holds the lock" in stderr
        elif "Applied and verified" not in stdout:
            assert "no changes" in stdout
    _assert_converged(server, desired)


def test_two_applies_with_lock_timeout_run_one_after_the_other(
    server: DevServer, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, MANY_MOUNTS)
    # Holding the lock while both start makes them overlap for certain.
    identity = _identity(server)
    with server_lock(identity):
        processes = [_start_apply(server, desired, "--lock-timeout", "60s") for _ in range(2)]
        # The event, not a clock: each process has the lock file open, so it is waiting
        # for the lock this test holds, and has written nothing.
        for process in processes:
            _wait_until_waiting_for(process, lock_path(identity))
        assert all(p.poll() is None for p in processes)
        assert not any(mount.startswith("busy-") for mount in _mounts(server))
    outcomes = _outcomes(processes)
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    # The second one plans under the lock, after the first: it finds nothing to do.
    assert sorted("Applied and verified" in stdout for _, stdout, _ in outcomes) == [False, True]
    assert any("no changes" in stdout for _, stdout, _ in outcomes)
    _assert_converged(server, desired)
