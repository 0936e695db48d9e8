"""Faults between the command line and the server: retried when transient, explained when not.

A loopback HTTP proxy in front of the real server injects the faults on chosen
requests (the command line offers no transport hook, and a proxy also covers
real sockets): connection resets, answers lost after the server acted, answers
that never come, and error statuses.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from reconciler.client import RetryPolicy
from reconciler.demo.devserver import DevServer, start_dev_server
from reconciler.demo.examples.plugins.build import build_plugins
from tests.helpers import (
    CliResult,
    CliRun,
    RequestLog,
    api,
    mount_config,
    mount_entry,
    write_desired,
)

# A fault: an HTTP status to answer instead of the server, or one of these.
RESET = "reset"  # the connection is reset before the request reaches the server
LOST = "lost"  # the server acts, then the connection is reset before the answer
HANG = "hang"  # no answer until the client gives up
Fault = int | str

_INJECTED = {
    400: "injected: invalid request",
    403: "permission denied",
    404: "injected: no handler for route",
    429: "injected: request rate limit exceeded",
    500: "injected: internal error",
    502: "injected: bad gateway",
    503: "injected: service unavailable",
}
_FORWARDED_HEADERS = ("X-Vault-Token", "X-Vault-Namespace", "X-Vault-Request", "Content-Type")


class FaultProxy:
    """An HTTP proxy to `upstream` that meets chosen requests with faults."""

    def __init__(self, upstream: str, hang_seconds: float = 1.5) -> None:
        self.hang_seconds = hang_seconds
        self.requests: list[tuple[str, str]] = []
        self._rules: list[tuple[str, str, list[Fault]]] = []
        self._first_attempts: tuple[Fault, frozenset[str] | None] | None = None
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._upstream = httpx.Client(base_url=upstream, timeout=30)
        handler = type("Handler", (_ProxyHandler,), {"proxy": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, method: str, path: str, *faults: Fault) -> None:
        """The next len(faults) requests `METHOD path` (no query) meet these faults in order."""
        with self._lock:
            self._rules.append((method, path, list(faults)))

    def fail_first_attempts(self, fault: Fault, methods: set[str] | None = None) -> None:
        """The first attempt of every distinct request (of these methods) meets `fault`."""
        with self._lock:
            self._first_attempts = (fault, frozenset(methods) if methods else None)

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.requests.count((method, path))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._upstream.close()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for rule_method, rule_path, pending in self._rules:
                if (rule_method, rule_path) == (method, path) and pending:
                    return pending.pop(0)
            if self._first_attempts is not None:
                fault, methods = self._first_attempts
                if (methods is None or method in methods) and (method, path) not in self._seen:
                    self._seen.add((method, path))
                    return fault
        return None

    def _forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> httpx.Response:
        return self._upstream.request(method, target, headers=headers, content=body)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Resets are made on purpose; their aftermath is not worth a traceback.
        pass


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.proxy._fault_for(self.command, self.path.split("?", 1)[0])
        if isinstance(fault, int):
            message = json.dumps({"errors": [_INJECTED[fault]]}).encode()
            self._answer(fault, message, "application/json")
            return
        if fault == RESET:
            self._reset()
            return
        if fault == HANG:
            time.sleep(self.proxy.hang_seconds)
            self._reset()
            return
        headers = {k: v for k in _FORWARDED_HEADERS if (v := self.headers.get(k)) is not None}
        answer = self.proxy._forward(self.command, self.path, headers, body)
        if fault == LOST:
            self._reset()
            return
        self._answer(answer.status_code, answer.content, answer.headers.get("Content-Type"))

    do_GET = do_PUT = do_POST = do_DELETE = do_LIST = do_PATCH = _handle

    def _answer(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        # Linger 0: close() sends RST, as a crashed peer or a middlebox would.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


@pytest.fixture
def proxy(server: DevServer) -> Iterator[FaultProxy]:
    the_proxy = FaultProxy(server.address)
    try:
        yield the_proxy
    finally:
        the_proxy.close()


def via(proxy: FaultProxy, server: DevServer, *args: str, **env: str) -> CliResult:
    return CliRun.invoke(args, env={"BAO_ADDR": proxy.address, "BAO_TOKEN": server.token, **env})


def assert_clean_failure(result: CliResult, server: DevServer, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "error: " in result.stderr, result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.output
    assert server.token not in result.output


# --- transient faults: retried, the apply converges --------------------------------------

EVERY_KIND_OF_WRITE = """\
version: 1
plugin_directory: {plugins}
settings: {{prune_mounts: true}}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
  - {{type: auth, name: demo-auth, version: v1.0.0, state: absent}}
secrets:
  - {{path: fresh/, plugin: kv, options: {{version: "2"}}, config: {{default_lease_ttl: 1h}}}}
  - {{path: tuned/, plugin: kv, description: after}}
  - {{path: moved-to/, plugin: kv, moved_from: moved-from/}}
auth:
  - {{path: robots/, plugin: approle}}
"""
CATALOG_WRITES = [
    ("PUT", "/v1/sys/plugins/catalog/secret/demo-kv"),
    ("DELETE", "/v1/sys/plugins/catalog/auth/demo-auth"),
]
MOUNT_WRITES = [
    ("POST", "/v1/sys/remount"),
    ("POST", "/v1/sys/mounts/fresh"),
    ("POST", "/v1/sys/auth/robots"),
    ("POST", "/v1/sys/mounts/tuned/tune"),
    ("DELETE", "/v1/sys/mounts/doomed"),
]


def _without_catalog(text: str) -> str:
    """The same mounts without the plugins section (each catalog write runs a plugin binary)."""
    start, end = text.index("plugins:\n"), text.index("secrets:\n")
    return text[:start] + text[end:]


def _live_before_the_apply(server: DevServer, plugins: Path | None) -> None:
    http = api(server)
    if plugins is not None:
        auth = next(p for p in build_plugins(plugins) if p.name == "demo-auth")
        http.put(
            "/v1/sys/plugins/catalog/auth/demo-auth",
            json={"sha256": auth.sha256, "command": auth.command, "version": auth.version},
        ).raise_for_status()
    http.post("/v1/sys/mounts/tuned", json={"type": "kv", "description": "before"})
    http.post("/v1/sys/mounts/moved-from", json={"type": "kv"}).raise_for_status()
    http.put("/v1/moved-from/item", json={"value": "moves along"}).raise_for_status()
    http.post("/v1/sys/mounts/doomed", json={"type": "kv"}).raise_for_status()


def _assert_converged(server: DevServer, desired: Path, with_catalog: bool) -> None:
    http = api(server)
    catalog = http.get("/v1/sys/plugins/catalog").json()["data"]["detailed"]
    external = sorted((e["type"], e["name"]) for e in catalog if not e["builtin"])
    assert external == ([("secret", "demo-kv")] if with_catalog else [])
    mounts = http.get("/v1/sys/mounts").json()["data"]
    assert {"fresh/", "tuned/", "moved-to/"} <= set(mounts)
    assert not {"moved-from/", "doomed/"} & set(mounts)
    assert mounts["fresh/"]["options"] == {"version": "2"}
    assert mount_config(server, "secret", "fresh/")["default_lease_ttl"] == 3600
    assert mount_entry(server, "secret", "tuned/")["description"] == "after"
    assert http.get("/v1/moved-to/item").json()["data"] == {"value": "moves along"}
    assert "robots/" in http.get("/v1/sys/auth").json()["data"]
    again = CliRun.invoke(
        ["plan", str(desired), "--detailed-exitcode"],
        env={"BAO_ADDR": server.address, "BAO_TOKEN": server.token},
    )
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    ("fault", "with_catalog"),
    # Resets and lost answers are where idempotence matters: every kind of write meets them.
    # Statuses never reach the server: the mounts alone show that they are retried.
    [(RESET, True), (LOST, True), (500, False), (502, False), (503, False), (429, False)],
    ids=["reset", "lost-answer", "500", "502", "503", "429"],
)
def test_every_request_failing_once_still_converges(
    server: DevServer,
    plugins: Path,
    proxy: FaultProxy,
    tmp_path: Path,
    fault: Fault,
    with_catalog: bool,
) -> None:
    _live_before_the_apply(server, plugins if with_catalog else None)
    text = EVERY_KIND_OF_WRITE.format(plugins=plugins)
    desired = write_desired(tmp_path, text if with_catalog else _without_catalog(text))
    proxy.fail_first_attempts(fault)
    result = via(proxy, server, "apply", str(desired), "--yes", "--allow-destroy")
    assert result.exit_code == 0, result.output
    assert "Applied and verified" in result.stdout
    for method, path in MOUNT_WRITES + (CATALOG_WRITES if with_catalog else []):
        assert proxy.count(method, path) == 2, (method, path, proxy.requests)
    _assert_converged(server, desired, with_catalog)


def test_answers_that_never_come_time_out_and_are_retried(
    server: DevServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    desired = write_desired(
        tmp_path, "version: 1\nsecrets:\n  - {path: slow/, plugin: kv, description: patient}\n"
    )
    proxy.fail("GET", "/v1/sys/mounts", HANG)
    proxy.fail("POST", "/v1/sys/mounts/slow", HANG, 502)
    result = via(proxy, server, "apply", str(desired), "--yes", BAO_CLIENT_TIMEOUT="1s")
    assert result.exit_code == 0, result.output
    assert proxy.count("GET", "/v1/sys/mounts") >= 2
    assert proxy.count("POST", "/v1/sys/mounts/slow") == 3
    assert mount_entry(server, "secret", "slow/")["description"] == "patient"


def test_a_fault_that_outlasts_the_retries_is_reported_with_the_attempts(
    server: DevServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, "version: 1\nsecrets:\n  - {path: fresh/, plugin: kv}\n")
    proxy.fail("POST", "/v1/sys/mounts/fresh", *[503] * 10)
    result = via(proxy, server, "apply", str(desired), "--yes", BAO_MAX_RETRIES="2")
    assert_clean_failure(
        result,
        server,
        "server error 503 on POST /v1/sys/mounts/fresh",
        "injected: service unavailable",
        "(after 3 attempts)",
    )
    assert proxy.count("POST", "/v1/sys/mounts/fresh") == 3


# --- terminal answers: no retry, exit 1, method + path + cause ---------------------------

TWO_STEPS = """\
version: 1
secrets:
  - {path: fresh/, plugin: kv}
  - {path: tuned/, plugin: kv, description: after}
"""


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (400, "refused POST /v1/sys/mounts/fresh (400): injected: invalid request"),
        (403, "permission denied (403) on POST /v1/sys/mounts/fresh"),
        (404, "not found (404): POST /v1/sys/mounts/fresh: injected: no handler for route"),
    ],
)
def test_a_client_error_is_terminal_and_stops_the_apply(
    server: DevServer, proxy: FaultProxy, tmp_path: Path, status: int, cause: str
) -> None:
    api(server).post("/v1/sys/mounts/tuned", json={"type": "kv", "description": "before"})
    desired = write_desired(tmp_path, TWO_STEPS)
    proxy.fail("POST", "/v1/sys/mounts/fresh", status)
    result = via(proxy, server, "apply", str(desired), "--yes")
    assert_clean_failure(result, server, "apply did not converge", cause)
    assert proxy.count("POST", "/v1/sys/mounts/fresh") == 1
    # Nothing after the failed action ran.
    assert proxy.count("POST", "/v1/sys/mounts/tuned/tune") == 0
    assert mount_entry(server, "secret", "tuned/")["description"] == "before"


def test_a_403_while_planning_names_the_capability(server: DevServer, tmp_path: Path) -> None:
    token = api(server).post("/v1/auth/token/create", json={"policies": ["default"]})
    limited = token.json()["auth"]["client_token"]
    desired = write_desired(tmp_path, TWO_STEPS)
    result = CliRun.invoke(
        ["plan", str(desired)], env={"BAO_ADDR": server.address, "BAO_TOKEN": limited}
    )
    assert_clean_failure(result, server, "permission denied (403) on ", "capability")
    assert limited not in result.output


def test_a_real_400_names_the_request_and_the_servers_reason(
    server: DevServer, plugins: Path, tmp_path: Path
) -> None:
    kv = next(p for p in build_plugins(plugins) if p.name == "demo-kv" and p.version == "v1.0.0")
    # The binary reports v1.0.0: registering it as another version is refused.
    desired = write_desired(
        tmp_path,
        "version: 1\nplugins:\n"
        f"  - {{type: secret, name: demo-kv, version: v9.9.9, command: {kv.command}, "
        f"sha256: {kv.sha256}}}\n",
    )
    result = CliRun.invoke(
        ["apply", str(desired), "--yes"],
        env={"BAO_ADDR": server.address, "BAO_TOKEN": server.token},
    )
    assert_clean_failure(
        result, server, "PUT /v1/sys/plugins/catalog/secret/demo-kv (400)", "version"
    )


# --- the server cannot be used at all ---------------------------------------------------


@pytest.fixture(scope="module")
def sealed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with start_dev_server(workdir=tmp_path_factory.mktemp("sealed")) as server:
        api(server).put("/v1/sys/seal").raise_for_status()
        yield server


@pytest.mark.parametrize("command", ["plan", "apply", "export"])
def test_a_sealed_server_is_reported_with_the_fix(
    sealed_server: DevServer, tmp_path: Path, command: str
) -> None:
    desired = write_desired(tmp_path, TWO_STEPS)
    args = {"plan": ["plan", str(desired)], "apply": ["apply", str(desired), "--yes"]}.get(
        command, [command]
    )
    with RequestLog(sealed_server) as requests:
        result = CliRun.invoke(
            args, env={"BAO_ADDR": sealed_server.address, "BAO_TOKEN": sealed_server.token}
        )
    assert_clean_failure(result, sealed_server, "is sealed", "bao operator unseal")
    # An operator has to act: no request is sent twice.
    assert requests.requests and requests.repeated() == [], requests.requests


@dataclass(frozen=True)
class _Address:
    address: str


RETRY_ATTEMPTS = RetryPolicy().attempts


@pytest.mark.parametrize("command", ["apply", "export"])
def test_an_unreachable_address_is_reported_with_the_fix(tmp_path: Path, command: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{sock.getsockname()[1]}"
    desired = write_desired(tmp_path, TWO_STEPS)
    args = ["apply", str(desired), "--yes"] if command == "apply" else [command]
    with RequestLog(_Address(address)) as requests:
        result = CliRun.invoke(args, env={"BAO_ADDR": address, "BAO_TOKEN": "some-token-value"})
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"cannot reach the server at {address}" in result.stderr
    assert "BAO_ADDR" in result.stderr
    assert "some-token-value" not in result.output
    # Nothing listens: retrying is worth it (a server may be starting), but only a few times.
    sent = [requests.requests.count(r) for r in set(requests.requests)]
    assert sent and max(sent) == RETRY_ATTEMPTS, requests.requests
