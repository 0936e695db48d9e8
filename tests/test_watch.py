"""Watch mode: the daemon against the real server, and its pure parts without one.

Built-in plugins (kv, approle) wherever they do, so no plugin process slows the
passes down; the sha256 and rollback cases use the example plugin (one mount at
most). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import reconciler.reconcile as reconcile_module
from reconciler.backoff import backoff_delay
from reconciler.client import Client
from reconciler.demo.devserver import DevServer, free_port, start_dev_server
from reconciler.executor import ApplyResult
from reconciler.lock import server_lock
from reconciler.watch import (
    JsonFormatter,
    Metrics,
    MetricsServer,
    Watcher,
    WatchOptions,
    concerns_file,
)
from tests.helpers import SLACK, RequestLog, api, mount_config, mount_entry, tampered_copy

DESIRED = """\
version: 1
settings:
  prune_mounts: {prune}
secrets:
  - path: app/
    plugin: kv
    options: {{version: "2"}}
    config: {{default_lease_ttl: {ttl}, max_lease_ttl: 24h}}
auth:
  - path: robots/
    plugin: approle
"""


def desired(ttl: str = "1h", prune: bool = False) -> str:
    return DESIRED.format(ttl=ttl, prune=str(prune).lower())


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = SLACK) -> None:
    """Poll until `predicate()` holds. How fast the watcher reacts is measured in
    benchmarks/watch.py; here only that it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError):
            if predicate():
                return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


def ttl_of(server: DevServer, path: str = "app/") -> int:
    return int(mount_config(server, "secret", path)["default_lease_ttl"])


def factory(server: DevServer, token_file: Path | None = None) -> Callable[[], Client]:
    if token_file is not None:
        return lambda: Client.from_environment(address=server.address, token_file=token_file)
    return lambda: Client.from_environment(address=server.address, token=server.token)


@contextlib.contextmanager
def running(watcher: Watcher) -> Iterator[Watcher]:
    """Run the real loop on a thread for the duration of the block."""
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        watcher.stop()
        thread.join(timeout=SLACK)
        assert not thread.is_alive(), "the watcher did not stop"


def metric(metrics: Metrics, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics.render(), re.MULTILINE)
    assert match, f"{name} not in the exposition"
    return float(match.group(1))


def options(**overrides: Any) -> WatchOptions:
    values: dict[str, Any] = {"interval": 60.0, "debounce": 0.1, "backoff_initial": 0.2}
    values.update(overrides)
    return WatchOptions(**values)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="reconciler")
    return caplog


# --- against the shared server --------------------------------------------------------


def test_saved_edits_are_applied(server: DevServer, tmp_path: Path, logs) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(path, factory(server), options())
    with running(watcher):
        wait_for(lambda: ttl_of(server) == 3600, "first pass applied")

        path.write_text(desired("2h"))
        wait_for(lambda: ttl_of(server) == 7200, "in-place save applied")

        # Editors write a temporary file and rename it over the original.
        temporary = tmp_path / ".desired.yaml.swp"
        temporary.write_text(desired("3h"))
        os.replace(temporary, path)
        wait_for(lambda: ttl_of(server) == 10800, "atomic rename applied")

        # Touching the file without changing it is no reason for a pass.
        wait_for(lambda: metric(watcher.metrics, "reconciler_passes_total") == 3, "3 passes")
        logs.clear()
        os.utime(path)
        # The event, not a clock: the watcher saw the touch and decided against a pass.
        wait_for(
            lambda: "file event without a content change: no pass" in logs.text,
            "the touch seen and passed over",
        )
        assert metric(watcher.metrics, "reconciler_passes_total") == 3

    assert metric(watcher.metrics, "reconciler_desired_generation") == 3
    assert 'reconciler_actions_total{kind="tune"} 2' in watcher.metrics.render()
    assert server.token not in logs.text


def test_configmap_symlink_swap_is_noticed(server: DevServer, tmp_path: Path) -> None:
    # The layout of a Kubernetes ConfigMap volume: file → ..data/file, ..data → ..<timestamp>.
    volume = tmp_path / "config"
    (volume / "..2024_01").mkdir(parents=True)
    (volume / "..2024_01" / "desired.yaml").write_text(desired("1h"))
    (volume / "..data").symlink_to("..2024_01")
    (volume / "desired.yaml").symlink_to("..data/desired.yaml")

    watcher = Watcher(volume / "desired.yaml", factory(server), options())
    with running(watcher):
        wait_for(lambda: ttl_of(server) == 3600, "first pass applied")
        (volume / "..2024_02").mkdir()
        (volume / "..2024_02" / "desired.yaml").write_text(desired("4h"))
        (volume / "..data_tmp").symlink_to("..2024_02")
        os.replace(volume / "..data_tmp", volume / "..data")
        shutil.rmtree(volume / "..2024_01")
        wait_for(lambda: ttl_of(server) == 14400, "ConfigMap update applied")


def test_invalid_edit_keeps_the_last_good_state(server: DevServer, tmp_path: Path, logs) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(path, factory(server), options())
    with running(watcher):
        wait_for(lambda: ttl_of(server) == 3600, "first pass applied")
        logs.clear()

        broken = desired("1h").replace("default_lease_ttl: 1h", "default_lease_ttl: soon")
        path.write_text(broken)
        line = broken.splitlines().index(next(x for x in broken.splitlines() if "soon" in x))
        wait_for(lambda: f"{path}:{line + 1}:" in logs.text, "the problem logged with its line")
        assert re.search(rf"{re.escape(str(path))}:{line + 1}:\d+: ", logs.text)
        assert metric(watcher.metrics, "reconciler_desired_file_valid") == 0
        assert ttl_of(server) == 3600

        # The last good state is still enforced: drift is corrected from it.
        api(server).post("/v1/sys/mounts/app/tune", json={"default_lease_ttl": "5h"})
        watcher.request_pass("test")
        wait_for(lambda: ttl_of(server) == 3600, "drift corrected from the last good state")

        path.write_text(desired("2h"))
        wait_for(lambda: ttl_of(server) == 7200, "the next valid edit applied")
        assert metric(watcher.metrics, "reconciler_desired_file_valid") == 1
        assert metric(watcher.metrics, "reconciler_pass_failures_total") == 0
    assert server.token not in logs.text


def test_out_of_band_change_is_corrected_at_the_resync(
    server: DevServer, tmp_path: Path, logs
) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(path, factory(server), options(interval=1.0))
    with running(watcher):
        wait_for(lambda: ttl_of(server) == 3600, "first pass applied")
        api(server).post("/v1/sys/mounts/app/tune", json={"default_lease_ttl": "5h"})
        assert ttl_of(server) == 5 * 3600
        wait_for(lambda: ttl_of(server) == 3600, "drift corrected by the resync")
        wait_for(
            lambda: metric(watcher.metrics, "reconciler_drift_detected_total") >= 1,
            "drift counted",
        )
    assert "drift" in logs.text
    assert server.token not in logs.text


def test_destructive_actions_are_skipped_and_counted(server: DevServer, tmp_path: Path) -> None:
    api(server).post("/v1/sys/mounts/stray", json={"type": "kv"})
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h", prune=True))
    watcher = Watcher(path, factory(server), options())
    with MetricsServer(watcher.metrics, "127.0.0.1", 0) as metrics_server:
        outcome = watcher.run_pass()
        assert outcome.ok, outcome.failures
        assert [s.split(":")[0] for s in outcome.skipped] == ["disable secrets/stray/"]
        assert ttl_of(server) == 3600, "the safe rest of the plan was applied"
        assert mount_entry(server, "secret", "stray/")["type"] == "kv"

        again = watcher.run_pass()
        assert again.ok and not again.applied and len(again.skipped) == 1
        assert not again.drift, "a refused action is not drift"

        base = f"http://127.0.0.1:{metrics_server.port}"
        text = httpx.get(f"{base}/metrics").text
        assert "reconciler_destructive_skipped_total 2" in text
        assert "reconciler_destructive_pending 1" in text
        assert httpx.get(f"{base}/healthz").status_code == 200

    allowed = Watcher(path, factory(server), options(allow_destroy=True))
    outcome = allowed.run_pass()
    assert outcome.ok and "disable secrets/stray/" in outcome.applied
    with pytest.raises(KeyError):
        mount_entry(server, "secret", "stray/")


def test_token_is_reread_from_its_file_and_renewed(server: DevServer, tmp_path: Path) -> None:
    def new_token() -> str:
        answer = api(server).post(
            "/v1/auth/token/create", json={"ttl": "1h", "renewable": True, "policies": ["root"]}
        )
        return str(answer.json()["auth"]["client_token"])

    token_file = tmp_path / "token"
    first = new_token()
    token_file.write_text(first + "\n")
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(path, factory(server, token_file), options())
    assert watcher.run_pass().ok
    looked_up = api(server).post("/v1/auth/token/lookup", json={"token": first}).json()["data"]
    assert looked_up.get("last_renewal_time"), "the renewable token was renewed"

    second = new_token()
    token_file.write_text(second)
    api(server).post("/v1/auth/token/revoke", json={"token": first})
    path.write_text(desired("2h"))
    outcome = watcher.run_pass()
    assert outcome.ok, outcome.failures
    assert ttl_of(server) == 7200


def test_failed_upgrade_is_held_until_the_file_changes(
    server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The executor's rollback is tested with real plugins elsewhere; here only what the
    # watcher does with its report: hold the upgrade, pass it to every plan, drop it on edit.
    failed = ("secret", "kv-plus", "v1.4.0", "ab" * 32)
    seen_held: list[tuple[Any, ...]] = []
    real_plan_for = reconcile_module.plan_for

    def spy_plan_for(*args: Any, **kwargs: Any) -> Any:
        seen_held.append(tuple(kwargs.get("held", ())))
        return real_plan_for(*args, **kwargs)

    def failing_apply(*args: Any, **kwargs: Any) -> ApplyResult:
        return ApplyResult(
            converged=False,
            failures=["secrets/app/ does not answer"],
            rolled_back=["secrets/app/ runs the built-in again"],
            failed_upgrades=[failed],
        )

    monkeypatch.setattr(reconcile_module, "plan_for", spy_plan_for)
    monkeypatch.setattr(reconcile_module, "apply_plan", failing_apply)
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(path, factory(server), options())

    first = watcher.run_pass()
    assert not first.ok and first.held == [failed] and first.rolled_back
    watcher.run_pass()
    assert seen_held[-1] == (failed,), "the resync plans with the failed upgrade set aside"
    assert metric(watcher.metrics, "reconciler_held_upgrades") == 1
    assert metric(watcher.metrics, "reconciler_rollbacks_total") == 2

    path.write_text(desired("2h"))
    watcher.run_pass()
    assert seen_held[-1] == (), "a new file content tries the upgrade again"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _catalog_versions(server: DevServer, name: str) -> set[str]:
    listed = api(server).get("/v1/sys/plugins/catalog").json()["data"]["detailed"]
    return {e["version"] for e in listed if e["name"] == name and not e.get("builtin")}


def test_a_binary_that_does_not_match_its_sha256_keeps_the_last_good_file(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    entry = (
        "  - {{type: secret, name: demo-kv, version: {v}, command: demo-kv-1.0.0, sha256: {sha}}}\n"
    )
    good = f"version: 1\nplugin_directory: {plugins}\nplugins:\n" + entry.format(
        v="v1.0.0", sha=_sha256(plugins / "demo-kv-1.0.0")
    )
    path = tmp_path / "desired.yaml"
    path.write_text(good)
    watcher = Watcher(path, factory(server), options())
    first = watcher.run_pass()
    assert first.ok, first.failures
    assert _catalog_versions(server, "demo-kv") == {"v1.0.0"}

    # The binary on disk is v1.0.0's, not the one this sha256 names.
    path.write_text(good + entry.format(v="v2.0.0", sha=_sha256(plugins / "demo-kv-2.0.0")))
    with RequestLog(server) as requests:
        second = watcher.run_pass()
    assert "sha256 mismatch" in second.desired_error, second
    assert second.generation == first.generation == 1
    assert requests.writes() == []
    assert _catalog_versions(server, "demo-kv") == {"v1.0.0"}
    assert metric(watcher.metrics, "reconciler_desired_file_valid") == 0


def test_a_pass_never_writes_while_an_apply_holds_the_lock(
    server: DevServer, tmp_path: Path
) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(path, factory(server), options(lock_timeout=0.5))
    with Client(server.address, server.token) as client:
        identity = client.server_identity()
    with server_lock(identity), RequestLog(server) as requests:
        busy = watcher.run_pass()
    assert not busy.ok and busy.retryable, busy
    assert any("another apply holds the lock" in failure for failure in busy.failures), busy
    assert requests.writes() == []
    with pytest.raises(KeyError):
        mount_entry(server, "secret", "app/")
    # Once the holder is done, the next pass writes.
    assert watcher.run_pass().ok
    assert ttl_of(server) == 3600


UPGRADED_MOUNT = """\
version: 1
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, sha256: {v1}}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: {v2_command}, sha256: {v2}}}
secrets:
  - {{path: upgraded/, plugin: demo-kv, version: {version}}}
"""


def test_a_failed_upgrade_in_a_pass_is_rolled_back_on_the_server(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    # A binary that does not match the sha256 registered for v2.0.0 cannot start. The file
    # names no plugin_directory, so only the server can tell.
    broken = tampered_copy(plugins, "watch-broken-kv-2.0.0")
    try:

        def on(version: str) -> str:
            return UPGRADED_MOUNT.format(
                v1=_sha256(plugins / "demo-kv-1.0.0"),
                v2=_sha256(plugins / "demo-kv-2.0.0"),
                v2_command=broken.name,
                version=version,
            )

        path = tmp_path / "desired.yaml"
        path.write_text(on("v1.0.0"))
        watcher = Watcher(path, factory(server), options())
        assert watcher.run_pass().ok
        api(server).put("/v1/upgraded/data/kept", json={"v": 1}).raise_for_status()

        path.write_text(on("v2.0.0"))
        failed = watcher.run_pass()
        assert not failed.ok
        assert failed.rolled_back, failed
        entry = mount_entry(server, "secret", "upgraded/")
        assert (entry["plugin_version"], entry["running_plugin_version"]) == ("v1.0.0", "v1.0.0")
        assert api(server).get("/v1/upgraded/data/kept").json()["data"]["v"] == 1
    finally:
        broken.unlink()


# --- a server of its own: killed and restarted ---------------------------------------------


@pytest.mark.server
def test_recovers_from_a_server_restart(tmp_path: Path, logs) -> None:
    port = free_port()
    token = "watch-restart-token"
    own = start_dev_server(port=port, token=token, workdir=tmp_path / "bao-1")
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(
        path,
        factory(own),
        options(interval=1.0, backoff_initial=0.2, lock_timeout=1.0),
    )
    try:
        with MetricsServer(watcher.metrics, "127.0.0.1", 0) as metrics_server, running(watcher):
            health = f"http://127.0.0.1:{metrics_server.port}/healthz"
            wait_for(lambda: ttl_of(own) == 3600, "first pass applied")
            assert httpx.get(health).status_code == 200

            own.stop()
            wait_for(lambda: httpx.get(health).status_code == 503, "healthz turns 503")
            # 503 by three failures in a row or by two intervals without success, whichever first.
            assert metric(watcher.metrics, "reconciler_consecutive_failures") >= 1

            # Dev mode keeps nothing: the restarted server is empty until the watcher acts.
            own = start_dev_server(port=port, token=token, workdir=tmp_path / "bao-2")
            wait_for(lambda: httpx.get(health).status_code == 200, "healthz back to 200")
            assert ttl_of(own) == 3600
            assert mount_entry(own, "auth", "robots/")["type"] == "approle"
            assert metric(watcher.metrics, "reconciler_consecutive_failures") == 0
    finally:
        own.stop()
    assert token not in logs.text


# --- the command line as operators run it --------------------------------------------------


class _Daemon:
    """`python -m reconciler watch` as a subprocess, its JSON log read line by line."""

    def __init__(self, server: DevServer, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env.update(BAO_ADDR=server.address, BAO_TOKEN=server.token)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "watch", *args, "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                self._queue.put(json.loads(line))

    def expect(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                record = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if predicate(record):
                return record
        raise AssertionError("expected log line not seen:\n" + "".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=SLACK)
        self._reader.join(timeout=5)


def many_mounts(count: int) -> str:
    mounts = "".join(f"  - path: bulk-{i:03d}/\n    plugin: kv\n" for i in range(count))
    return f"version: 1\nsecrets:\n{mounts}"


def test_sighup_forces_a_pass_and_sigterm_stops_between_actions(
    server: DevServer, tmp_path: Path
) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    daemon = _Daemon(server, str(path), "--interval", "1h", "--debounce", "50ms")
    try:
        converged = daemon.expect(lambda r: r.get("outcome") == "converged", SLACK)
        assert converged["pass"] == 1 and converged["actions"] >= 2
        assert {"ts", "level", "msg", "duration"} <= converged.keys()

        daemon.process.send_signal(signal.SIGHUP)
        forced = daemon.expect(lambda r: r.get("outcome") == "converged", SLACK)
        assert forced["reason"] == "signal" and forced["actions"] == 0

        # A pass long enough to be caught in the middle.
        path.write_text(many_mounts(60))
        daemon.expect(lambda r: r.get("action") == "enable", SLACK)
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=SLACK) == 0
        daemon._reader.join(timeout=5)
        log = "".join(daemon.lines)
        assert '"outcome": "stopped"' in log, log[-2000:]
        enabled = [p for p in api(server).get("/v1/sys/mounts").json()["data"] if "bulk-" in p]
        assert 0 < len(enabled) < 60, "stopped after the running action, not before or at the end"
        assert server.token not in log
        assert daemon.process.stdout is not None
        assert server.token not in daemon.process.stdout.read()
    finally:
        daemon.stop()


# --- pure parts ----------------------------------------------------------------------------


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    low = [backoff_delay(n, initial=1.0, cap=60.0, rng=lambda: 0.0) for n in range(1, 9)]
    high = [backoff_delay(n, initial=1.0, cap=60.0, rng=lambda: 1.0) for n in range(1, 9)]
    assert low == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert high == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_health_follows_failures_and_the_success_window() -> None:
    now = [1000.0]
    metrics = Metrics(10.0, monotonic=lambda: now[0], wall_clock=lambda: 5.0)
    assert metrics.health().healthy, "starting"
    now[0] += 21
    assert not metrics.health().healthy, "no success within 2 intervals of the start"
    metrics.pass_finished(ok=True, applied_kinds=["tune", "tune", "enable"])
    assert metrics.health().healthy
    metrics.pass_finished(ok=False)
    metrics.pass_finished(ok=False)
    assert metrics.health().healthy, "two failures in a row are tolerated"
    metrics.pass_finished(ok=False)
    assert not metrics.health().healthy
    metrics.pass_finished(ok=True)
    assert metrics.health().healthy
    now[0] += 21
    assert not metrics.health().healthy, "no success for 2 intervals"

    text = metrics.render()
    assert 'reconciler_actions_total{kind="tune"} 2' in text
    assert 'reconciler_actions_total{kind="disable"} 0' in text
    assert "reconciler_passes_total 5" in text
    assert "reconciler_pass_failures_total 3" in text
    assert "reconciler_last_success_timestamp_seconds 5" in text
    assert "# TYPE reconciler_consecutive_failures gauge" in text


def test_file_events_that_concern_the_file(tmp_path: Path) -> None:
    path = tmp_path / "desired.yaml"
    assert concerns_file(path, str(tmp_path / "desired.yaml"))
    assert concerns_file(path, str(tmp_path / "..data"))
    assert not concerns_file(path, str(tmp_path / "other.yaml"))
    assert not concerns_file(path, str(tmp_path / "..2024_01"))


def test_json_log_lines() -> None:
    record = logging.LogRecord("reconciler.watch", logging.INFO, "", 0, "pass %d", (3,), None)
    record.fields = {"pass": 3, "actions": 2, "duration": 0.25}
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "pass 3" and line["level"] == "info" and line["actions"] == 2
    assert line["ts"].endswith("+00:00")
