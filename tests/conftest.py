"""Shared fixtures: one real OpenBao dev server per test session, reset before each test.

Tests that ask for `cluster` (or `bao_cluster`) also get a real 3-node raft
cluster, started once per session on first use (see tests/cluster.py). The
server-upgrade tests ask for `old_server` or `old_cluster`: raft servers of an
older OpenBao release (tests/releases.py), started once per session on first
use, which those tests upgrade — nothing else may use them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.client import Client
from reconciler.demo.devserver import DevServer, DevServerError, start_dev_server
from reconciler.demo.examples.plugins.build import build_plugins
from tests.cluster import Cluster, ClusterError, start_cluster
from tests.declarative_server import (
    DeclarativeServer,
    start_declarative_server,
)
from tests.releases import OLD_RELEASE, release_binary
from tests.server_reset import reset_server

# Fixtures that start an OpenBao server (or hand out the binary to start one). A test that
# starts a server without any of them is marked by hand.
SERVER_FIXTURES = frozenset(
    {
        "bao_server",
        "bao",
        "tls_server",
        "sealed_server",
        "declarative_bao_server",
        "bao_cluster",
        "old_server",
        "old_cluster",
    }
)

# Servers too costly to start once per xdist worker, and the worker group that runs every
# test using them: clusters share one group, so two clusters never run at once.
_WORKER_GROUPS = {
    "bao_cluster": "clusters",
    "old_cluster": "clusters",
    "declarative_bao_server": "declarative",
}

# What the declarative server's configuration declares at the start of every test.
DECLARED_AT_START = (("secret", "demo-kv", "v1.0.0"), ("auth", "demo-auth", "v1.0.0"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses or starts a server carries the `server` marker (-m 'not server');
    tests on the 3-node cluster also carry the `cluster` marker (-m cluster, -m 'not cluster')."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SERVER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.server)
        if {"bao_cluster", "old_cluster"} & fixtures:
            item.add_marker(pytest.mark.cluster)
        # Under pytest-xdist (`--dist loadgroup`), the tests of one session-wide server run on
        # one worker, so each such server starts once, not once per worker.
        for group in {_WORKER_GROUPS[f] for f in _WORKER_GROUPS.keys() & fixtures}:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def bao_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """The session's dev server; its plugin directory is `bao_server.plugin_directory`."""
    try:
        server = start_dev_server(workdir=tmp_path_factory.mktemp("bao"))
    except DevServerError as error:
        # A missing or broken `bao` must fail the run, never skip the end-to-end tests.
        pytest.fail(f"cannot start the OpenBao dev server: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(bao_server: DevServer) -> DevServer:
    """The session server, emptied: only the server's own mounts, no external plugins."""
    if bao_server.process.poll() is not None:
        pytest.fail(
            f"the OpenBao dev server died (exit {bao_server.process.returncode}):\n"
            f"{bao_server.log_tail()}",
            pytrace=False,
        )
    reset_server(bao_server.address, bao_server.token)
    return bao_server


@pytest.fixture
def client(server: DevServer) -> Iterator[Client]:
    """A Client for the emptied session server (explicit settings, no environment)."""
    with Client(server.address, server.token) as the_client:
        yield the_client


@pytest.fixture(scope="session")
def plugins(bao_server: DevServer) -> Path:
    """The example plugins, built once into the session server's plugin directory."""
    build_plugins(bao_server.plugin_directory)
    return bao_server.plugin_directory


@pytest.fixture(scope="session")
def declarative_bao_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DeclarativeServer]:
    """A second dev server whose configuration declares plugins; started only when asked for."""
    try:
        server = start_declarative_server(
            tmp_path_factory.mktemp("bao-declarative"), DECLARED_AT_START
        )
    except DevServerError as error:
        pytest.fail(f"cannot start the declarative OpenBao dev server: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def declarative_server(declarative_bao_server: DeclarativeServer) -> DeclarativeServer:
    """The declarative server, back to no mounts and the stanzas of `DECLARED_AT_START`."""
    declarative_bao_server.reset([declarative_bao_server.stanza(*key) for key in DECLARED_AT_START])
    return declarative_bao_server


_cluster_costs: dict[str, float] = {}


@pytest.fixture(scope="session")
def bao_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's 3-node raft cluster, started the first time a test asks for it."""
    try:
        started = start_cluster(workdir=tmp_path_factory.mktemp("cluster"))
    except ClusterError as error:
        pytest.fail(f"cannot start the OpenBao cluster: {error}", pytrace=False)
    _cluster_costs["start-up seconds"] = started.started_in
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def cluster(bao_cluster: Cluster) -> Iterator[Cluster]:
    """The session cluster, healthy and emptied: every node running, unsealed and a voter;
    no external catalog entries, only the server's own mounts on every node; every plugin
    directory holds exactly the example plugins (`cluster.plugins`)."""
    try:
        bao_cluster.heal()  # a test may have stopped or restarted a node and failed
        reset_server(bao_cluster.active().address, bao_cluster.root_token)
        bao_cluster.wait_replicated()
    except ClusterError as error:
        pytest.fail(f"cannot bring the OpenBao cluster back to health: {error}", pytrace=False)
    bao_cluster.install_example_plugins()
    yield bao_cluster
    resident = bao_cluster.memory_bytes() / 2**20
    _cluster_costs["peak MiB"] = max(_cluster_costs.get("peak MiB", 0.0), resident)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its cluster costs to the controller, which prints the summary."""
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None and _cluster_costs:
        worker_output["cluster_costs"] = dict(_cluster_costs)


def pytest_testnodedown(node: Any, error: object) -> None:
    """(xdist controller) Gather the costs a worker measured."""
    _cluster_costs.update(getattr(node, "workeroutput", {}).get("cluster_costs", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the cluster cost this run, so a slow or fat start-up shows in every run."""
    if _cluster_costs:
        costs = ", ".join(f"{name} {value:.1f}" for name, value in _cluster_costs.items())
        terminalreporter.write_line(f"OpenBao cluster: {costs}")


def _start_old(tmp_path_factory: pytest.TempPathFactory, size: int) -> Cluster:
    """`size` raft nodes of the release the upgrade tests start from, plugins built on each."""
    try:
        binary = release_binary()
        started = start_cluster(size, workdir=tmp_path_factory.mktemp(f"old-{size}"), binary=binary)
    except (ClusterError, OSError, subprocess.CalledProcessError) as error:
        pytest.fail(f"cannot start OpenBao {OLD_RELEASE}: {error}", pytrace=False)
    started.install_example_plugins()
    return started


@pytest.fixture(scope="session")
def old_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One raft node on the older release; the test that asks for it upgrades it."""
    started = _start_old(tmp_path_factory, 1)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def old_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three raft nodes on the older release; the test that asks for it rolls them."""
    started = _start_old(tmp_path_factory, 3)
    try:
        yield started
    finally:
        started.stop()
