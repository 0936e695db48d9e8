"""Watch mode's metrics exposition and the retryable/terminal verdict of a failed pass."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest

from reconciler.client import Client, RetryPolicy
from reconciler.demo.devserver import DevServer
from reconciler.watch import Metrics, MetricsServer, Watcher, WatchOptions
from tests.helpers import RequestLog, api
from tests.test_watch import metric

DOCS = Path(__file__).parent.parent / "docs" / "watch.md"


def documented_metrics() -> list[tuple[str, str]]:
    """(name, type) of every row of the metrics table in docs/watch.md."""
    pattern = r"^\| `(reconciler_[a-z_]+)(?:\{[a-z]+\})?` \| ([a-z]+) \|"
    rows = re.findall(pattern, DOCS.read_text(), re.M)
    assert len(rows) >= 13, rows
    return rows


def test_every_documented_metric_is_exposed() -> None:
    metrics = Metrics(60.0)
    metrics.pass_finished(ok=True, applied_kinds=["enable"], duration=0.3)
    text = metrics.render()
    for name, kind in documented_metrics():
        assert f"# TYPE {name} {kind}\n" in text, name
        assert re.search(rf"^{name}(_bucket|_count|_sum)?(\{{[^}}]*\}})? ", text, re.M), name


def test_pass_duration_is_a_histogram_served_over_http() -> None:
    metrics = Metrics(60.0)
    for seconds in (0.03, 0.4, 7.0):
        metrics.pass_finished(ok=True, duration=seconds)
    with MetricsServer(metrics, "127.0.0.1", 0) as server:
        answer = httpx.get(f"http://127.0.0.1:{server.port}/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert "# TYPE reconciler_pass_duration_seconds histogram" in text
    assert 'reconciler_pass_duration_seconds_bucket{le="0.5"} 2.0' in text
    assert 'reconciler_pass_duration_seconds_bucket{le="+Inf"} 3.0' in text
    assert "reconciler_pass_duration_seconds_count 3.0" in text
    assert "reconciler_last_pass_duration_seconds 7.0" in text


def client_factory(server: DevServer) -> Client:
    return Client(server.address, server.token)


def test_a_file_that_never_was_valid_is_terminal(server: DevServer, tmp_path: Path) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text("version: 1\nsecrets: [oops\n")
    outcome = Watcher(path, lambda: client_factory(server), WatchOptions()).run_pass()
    assert not outcome.ok and not outcome.retryable
    assert "no valid desired state" in outcome.failures[0]


def test_plan_errors_are_terminal(server: DevServer, tmp_path: Path) -> None:
    api(server).post("/v1/sys/mounts/old", json={"type": "kv"})
    path = tmp_path / "desired.yaml"
    path.write_text(
        "version: 1\nsecrets:\n  - path: moved/\n    plugin: transit\n    moved_from: old/\n"
    )
    outcome = Watcher(path, lambda: client_factory(server), WatchOptions()).run_pass()
    assert not outcome.ok and not outcome.retryable
    assert "the plan has errors" in outcome.failures[0]


def test_an_unreachable_server_is_retryable(tmp_path: Path) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text("version: 1\n")
    closed = "http://127.0.0.1:9"  # discard: nothing listens there
    watcher = Watcher(
        path, lambda: Client(closed, "token", retry=RetryPolicy(attempts=1)), WatchOptions()
    )
    outcome = watcher.run_pass()
    assert not outcome.ok and outcome.retryable, outcome.failures


HELD = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: watch-held-kv-2.0.0}}
secrets:
  - {{path: held-a/, plugin: demo-kv, version: {version}}}
  - {{path: held-b/, plugin: demo-kv, version: {version}}}
"""


def test_a_failed_upgrade_is_held_until_its_catalog_entry_or_binary_changes(
    server: DevServer, plugins: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler")
    binary = plugins / "watch-held-kv-2.0.0"
    binary.write_bytes(b"#!/bin/sh\nexit 1\n")  # registered with its own sha256: starts, dies
    binary.chmod(0o755)
    try:
        path = tmp_path / "desired.yaml"
        path.write_text(HELD.format(plugins=plugins, version="v1.0.0"))
        watcher = Watcher(path, lambda: client_factory(server), WatchOptions())
        assert watcher.run_pass().ok
        path.write_text(HELD.format(plugins=plugins, version="v2.0.0"))
        failed = watcher.run_pass()
        assert not failed.ok and [h[:3] for h in failed.held] == [("secret", "demo-kv", "v2.0.0")]

        caplog.clear()
        with RequestLog(server) as requests:
            held = [watcher.run_pass(), watcher.run_pass()]
        assert requests.matching("POST", "/sys/plugins/reload") == [], requests.writes()
        assert all(outcome.ok for outcome in held)
        lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.watch"]
        assert any(" held: upgrade to secret/demo-kv v2.0.0" in line for line in lines), lines
        assert not any("converged" in line for line in lines), lines
        assert metric(watcher.metrics, "reconciler_held_upgrades") == 1
        with MetricsServer(watcher.metrics, "127.0.0.1", 0) as metrics_server:
            answer = httpx.get(f"http://127.0.0.1:{metrics_server.port}/healthz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "held" and "secret/demo-kv v2.0.0" in body["reason"], body
        for mount in ("held-a/", "held-b/"):
            assert api(server).get(f"/v1/{mount}info").json()["data"]["version"] == "v1.0.0"

        # The catalog entry changed by hand: one attempt, which fails and holds it again.
        api(server).put(
            "/v1/sys/plugins/catalog/secret/demo-kv",
            json={"version": "v2.0.0", "command": binary.name, "sha256": "0" * 64},
        ).raise_for_status()
        with RequestLog(server) as requests:
            again = watcher.run_pass()
        assert not again.ok and again.held, again.failures
        assert requests.matching("POST", "/sys/plugins/reload"), requests.writes()
        with RequestLog(server) as requests:
            assert watcher.run_pass().ok
        assert requests.matching("POST", "/sys/plugins/reload") == [], requests.writes()

        # A new binary (its sha256 changes what the file says): one attempt, which works.
        binary.write_bytes((plugins / "demo-kv-2.0.0").read_bytes())
        assert watcher.run_pass().ok
        assert metric(watcher.metrics, "reconciler_held_upgrades") == 0
        assert watcher.metrics.health().status == "ok"
        for mount in ("held-a/", "held-b/"):
            assert api(server).get(f"/v1/{mount}info").json()["data"]["version"] == "v2.0.0"
    finally:
        binary.unlink(missing_ok=True)
