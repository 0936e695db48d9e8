"""A real 3-node OpenBao cluster on loopback for the cluster tests (raft storage, not -dev).

Every node is a `bao server` with its own data directory, plugin directory, API
port and cluster port. The first node is initialised (one key share, kept in
memory only) and unsealed; the others join it over the raft join API and are
unsealed with the same key. `start_cluster` returns once every node is an
unsealed, healthy raft voter.

The raft and autopilot settings make a loopback cluster converge in ~7 s
instead of the defaults' ~30 s: `performance_multiplier = 1` (fast leader
election) and the autopilot reconcile/update intervals in the storage stanza
do the work. `server_stabilization_time` is only accepted by the autopilot API
(in the storage stanza it is silently ignored); it is set right after init so
promotion never waits on its 10 s default, though with the short intervals it
made no measurable difference on OpenBao 2.7.2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from reconciler.demo.devserver import find_bao, free_port
from reconciler.demo.examples.plugins.build import BuiltPlugin, build_plugins
from tests.helpers import SLACK

T = TypeVar("T")

# What makes a loopback cluster converge in seconds (see the module docstring).
RAFT_PERFORMANCE_MULTIPLIER = 1
AUTOPILOT_RECONCILE_INTERVAL = "1s"
AUTOPILOT_UPDATE_INTERVAL = "500ms"
SERVER_STABILIZATION_TIME = "1s"

# The header that names the answering node exists only with this setting.
_RAFT_NODE_ID_HEADER_SETTING = "enable_response_header_raft_node_id"
RAFT_NODE_ID_HEADER = "X-Vault-Raft-Node-Id"
NO_FORWARDING_HEADER = "X-Vault-No-Request-Forwarding"


class ClusterError(RuntimeError):
    """The cluster did not come up, or did not get back to health in time."""


@dataclass
class ClusterNode:
    """One `bao server` process of the cluster; its files live under `directory`."""

    node_id: str
    api_port: int
    cluster_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # The `bao` binary it runs: another release than the installed one for upgrade tests.
    binary: str = ""

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def cluster_address(self) -> str:
        return f"https://127.0.0.1:{self.cluster_port}"

    @property
    def data_directory(self) -> Path:
        return self.directory / "data"

    @property
    def plugin_directory(self) -> Path:
        return self.directory / "plugins"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.hcl"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(self, *, raft_node_id_header: bool = True) -> None:
        """The node's server configuration (see the module docstring for the timings)."""
        header = "true" if raft_node_id_header else "false"
        self.config_path.write_text(
            f'storage "raft" {{\n'
            f'  path    = "{self.data_directory}"\n'
            f'  node_id = "{self.node_id}"\n'
            f"  performance_multiplier       = {RAFT_PERFORMANCE_MULTIPLIER}\n"
            f'  autopilot_reconcile_interval = "{AUTOPILOT_RECONCILE_INTERVAL}"\n'
            f'  autopilot_update_interval    = "{AUTOPILOT_UPDATE_INTERVAL}"\n'
            f"}}\n"
            f'listener "tcp" {{\n'
            f'  address         = "127.0.0.1:{self.api_port}"\n'
            f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n'
            f"  tls_disable     = true\n"
            f"}}\n"
            f'api_addr         = "{self.address}"\n'
            f'cluster_addr     = "{self.cluster_address}"\n'
            f'plugin_directory = "{self.plugin_directory}"\n'
            f"{_RAFT_NODE_ID_HEADER_SETTING} = {header}\n"
        )

    def start(self) -> None:
        """Start the server process (sealed until unsealed); its output goes to `log_path`."""
        if self.running:
            raise ClusterError(f"{self.node_id} is already running")
        self.data_directory.mkdir(parents=True, exist_ok=True)
        self.plugin_directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary or find_bao(), "server", f"-config={self.config_path}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """End the server: SIGTERM (a clean leave), or SIGKILL to simulate a crash."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def memory_bytes(self) -> int:
        """Resident memory of the server and of every process it started (its plugins)."""
        if not self.running or self.process is None:
            return 0
        return sum(_resident_bytes(pid) for pid in _process_tree(self.process.pid))

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """A running cluster: its nodes, root token and unseal key (in memory only)."""

    nodes: list[ClusterNode]
    root_token: str
    unseal_key: str
    directory: Path
    started_in: float = 0.0  # seconds from the first process start to healthy voters
    # The example plugins as last installed on every node, by (name, version).
    plugins: dict[tuple[str, str], BuiltPlugin] = field(default_factory=dict)

    def http(self, node: ClusterNode, *, forward: bool = True) -> httpx.Client:
        """A plain HTTP client bound to one node, with the root token.

        With `forward=False` the node answers itself or redirects (307) to the
        active: a probe of one node can never be answered by another.
        """
        headers = {"X-Vault-Token": self.root_token}
        if not forward:
            headers[NO_FORWARDING_HEADER] = "true"
        return httpx.Client(base_url=node.address, headers=headers, timeout=30)

    def install_example_plugins(self) -> dict[tuple[str, str], BuiltPlugin]:
        """Make every node's plugin directory hold exactly the example plugins."""
        built: dict[tuple[str, str], BuiltPlugin] = {}
        for node in self.nodes:
            for stray in node.plugin_directory.iterdir():
                stray.unlink()
            for plugin in build_plugins(node.plugin_directory):
                built[(plugin.name, plugin.version)] = plugin
        self.plugins = built
        return built

    def node(self, node_id: str) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def active(self) -> ClusterNode:
        """The node whose health check says active (200); standbys answer 429."""
        for node in self.nodes:
            if node.running and _health_status(node) == 200:
                return node
        raise ClusterError("no active node")

    def standbys(self) -> list[ClusterNode]:
        active = self.active()
        return [node for node in self.nodes if node is not active]

    def unseal(self, node: ClusterNode) -> None:
        with httpx.Client(timeout=10) as http:
            answer = http.put(f"{node.address}/v1/sys/unseal", json={"key": self.unseal_key})
        _check(answer)

    def seal_and_unseal(self, node: ClusterNode, *, timeout: float = 60.0) -> None:
        """Seal one node and unseal it again (it reads its tables afresh), as an operator
        would; wait until every node is healthy."""
        with self.http(node, forward=False) as http:
            _check(http.put("/v1/sys/seal"))
        self.unseal(node)
        self.wait_healthy(timeout=timeout)

    def restart(self, node: ClusterNode, *, timeout: float = 60.0) -> None:
        """Start a stopped node again and unseal it; it rejoins from its raft data."""
        node.start()
        _wait_until_answering(node, timeout)
        self.unseal(node)
        self.wait_healthy(timeout=timeout)

    def upgrade(self, node: ClusterNode, binary: str, *, timeout: float = 60.0) -> None:
        """Restart one node on another release: stop it, start `binary`, unseal, wait healthy."""
        node.stop()
        node.binary = binary
        self.restart(node, timeout=timeout)

    def heal(self, *, timeout: float = 60.0) -> None:
        """Start every stopped node, unseal every sealed one, wait until all are healthy."""
        for node in self.nodes:
            if not node.running:
                node.start()
            _wait_until_answering(node, timeout)
            if _health_status(node) == 503:  # sealed
                self.unseal(node)
        self.wait_healthy(timeout=timeout)

    def wait_healthy(self, *, timeout: float = 60.0) -> None:
        """Wait until every node runs unsealed, one is active and all are healthy voters."""

        def healthy() -> bool:
            statuses = [_health_status(node) for node in self.nodes]
            if statuses.count(200) != 1 or statuses.count(429) != len(self.nodes) - 1:
                return False
            with self.http(self.active()) as http:
                answer = http.get("/v1/sys/storage/raft/autopilot/state")
            if answer.status_code != 200:
                return False
            state = answer.json()["data"]
            servers = state.get("servers") or {}
            return (
                bool(state.get("healthy"))
                and len(servers) == len(self.nodes)
                and all(s.get("status") in {"voter", "leader"} for s in servers.values())
                and all(s.get("healthy") for s in servers.values())
            )

        _wait_for(healthy, timeout, "every node to be a healthy voter", self.nodes)

    def wait_replicated(self, *, timeout: float = SLACK) -> None:
        """Wait until every standby's mount tables and catalog list what the active's do."""

        def tables(node: ClusterNode) -> object:
            with self.http(node, forward=False) as http:
                answers = [http.get(f"/v1/sys/{t}") for t in ("mounts", "auth", "plugins/catalog")]
            if any(answer.status_code != 200 for answer in answers):
                return None
            mounts, auth, catalog = (answer.json()["data"] for answer in answers)
            entries = sorted(
                (e["type"], e["name"], e.get("version", ""), e.get("sha256", ""))
                for e in catalog.get("detailed") or []
            )
            return sorted(mounts), sorted(auth), entries

        def replicated() -> bool:
            wanted = tables(self.active())
            return wanted is not None and all(tables(node) == wanted for node in self.nodes)

        _wait_for(replicated, timeout, "the standbys to replicate", self.nodes)

    def memory_bytes(self) -> int:
        """Resident memory of every node with its plugin processes."""
        return sum(node.memory_bytes() for node in self.nodes)

    def stop(self) -> None:
        """Stop every node; all are signalled first so their shutdowns overlap."""
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.terminate()
        for node in self.nodes:
            node.stop()


def start_cluster(
    size: int = 3, *, workdir: Path | None = None, timeout: float = 90.0, binary: str = ""
) -> Cluster:
    """Start `size` raft nodes, initialise, unseal and join them; wait for healthy voters.

    `binary` is the `bao` every node runs (default: the installed one).
    """
    began = time.monotonic()
    directory = Path(workdir or tempfile.mkdtemp(prefix="reconciler-cluster-"))
    ports: list[int] = []
    while len(ports) < 2 * size:  # two asks may get the same free port
        if (port := free_port()) not in ports:
            ports.append(port)
    nodes = [
        ClusterNode(
            node_id=f"node{index}",
            api_port=ports[2 * index - 2],
            cluster_port=ports[2 * index - 1],
            directory=directory / f"node{index}",
            binary=binary,
        )
        for index in range(1, size + 1)
    ]
    try:
        for node in nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            node.write_config()
            node.start()
        for node in nodes:
            _wait_until_answering(node, timeout)
        leader, *followers = nodes
        with httpx.Client(base_url=leader.address, timeout=30) as http:
            init = _check(
                http.put("/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1})
            ).json()
        cluster = Cluster(
            nodes=nodes,
            root_token=init["root_token"],
            unseal_key=init["keys_base64"][0],
            directory=directory,
        )
        cluster.unseal(leader)
        _wait_for(lambda: _health_status(leader) == 200, timeout, "the first node", [leader])
        with cluster.http(leader) as http:
            _wait_for(
                lambda: _autopilot_configured(http), timeout, "the autopilot settings", [leader]
            )
        for follower in followers:
            with cluster.http(follower) as http:
                joined = _check(
                    http.post("/v1/sys/storage/raft/join", json={"leader_api_addr": leader.address})
                ).json()
            if not joined.get("joined"):
                raise ClusterError(f"{follower.node_id} did not join: {joined}")
            cluster.unseal(follower)
        cluster.wait_healthy(timeout=timeout)
        cluster.started_in = time.monotonic() - began
    except BaseException:
        for node in nodes:
            node.stop(kill=True)
        raise
    return cluster


def _wait_until_answering(node: ClusterNode, timeout: float) -> None:
    _wait_for(
        lambda: _health_status(node) is not None, timeout, f"{node.node_id} to answer", [node]
    )


def _autopilot_configured(http: httpx.Client) -> bool:
    # The first write after unseal can meet a not-yet-ready raft (500/503): retried.
    answer = http.post(
        "/v1/sys/storage/raft/autopilot/configuration",
        json={"server_stabilization_time": SERVER_STABILIZATION_TIME},
    )
    return answer.status_code in {200, 204}


def _health_status(node: ClusterNode) -> int | None:
    """The node's `sys/health` status code, or None when it does not answer."""
    if not node.running:
        return None
    try:
        with httpx.Client(timeout=2) as http:
            return http.get(f"{node.address}/v1/sys/health").status_code
    except httpx.HTTPError:
        return None


def _check(answer: httpx.Response) -> httpx.Response:
    if answer.status_code >= 400:
        raise ClusterError(
            f"{answer.request.method} {answer.request.url} answered {answer.status_code}: "
            f"{answer.text.strip()}"
        )
    return answer


def _wait_for(
    condition: Callable[[], bool], timeout: float, what: str, nodes: list[ClusterNode]
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for node in nodes:
            if node.process is not None and node.process.poll() is not None:
                raise ClusterError(
                    f"{node.node_id} exited with {node.process.returncode} while waiting for "
                    f"{what}:\n{node.log_tail()}"
                )
        # No active node for a moment (an election) is one more reason to wait.
        with contextlib.suppress(httpx.HTTPError, ClusterError):
            if condition():
                return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n.node_id}\n{n.log_tail(15)}" for n in nodes)
            raise ClusterError(f"gave up after {timeout:.0f}s waiting for {what}\n{tails}")
        time.sleep(0.1)


def wait_until(condition: Callable[[], T | None], timeout: float = SLACK, step: float = 0.05) -> T:
    """Poll `condition` until it returns something other than None/False; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def _process_tree(pid: int) -> Iterator[int]:
    yield pid
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                yield from _process_tree(int(child))


def _resident_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def json_data(answer: httpx.Response) -> Any:
    """The `data` of a successful answer (fails with the answer's text otherwise)."""
    assert answer.status_code == 200, f"{answer.status_code}: {answer.text}"
    return answer.json()["data"]
