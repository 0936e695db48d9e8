"""Watch mode's metrics exposition and the retryable/terminal verdict of a failed pass."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from reconciler.client import Client, RetryPolicy
from reconciler.demo.devserver import DevServer
from reconciler.watch import Metrics, MetricsServer, Watcher, WatchOptions
from tests.helpers import api

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
