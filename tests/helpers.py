"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from reconciler.cli import cli
from reconciler.demo.devserver import DevServer

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Sent with a write method, change nothing: the token's capabilities, asked before a write.
ASKING_ONLY = frozenset({"/v1/sys/capabilities-self"})

# The longest a test lets anything take before it calls it hung, in seconds. Generous on
# purpose: a loaded two-core machine must never fail a test. No test asserts a time tighter
# than this; "not retried" and "at once" are proven by counting requests, and the figures
# that matter are measured in benchmarks/.
SLACK = 30.0


def api(server: DevServer) -> httpx.Client:
    """A plain HTTP client for the test server, independent of the code under test."""
    return httpx.Client(
        base_url=server.address, headers={"X-Vault-Token": server.token}, timeout=30
    )


def mount_config(server: DevServer, kind: str, path: str) -> dict[str, Any]:
    table = "auth" if kind == "auth" else "mounts"
    data: dict[str, Any] = api(server).get(f"/v1/sys/{table}").json()["data"]
    return dict(data[path]["config"])


def mount_entry(server: DevServer, kind: str, path: str) -> dict[str, Any]:
    table = "auth" if kind == "auth" else "mounts"
    return dict(api(server).get(f"/v1/sys/{table}").json()["data"][path])


_file_numbers = itertools.count(1)


def tampered_copy(plugins: Path, name: str) -> Path:
    """demo-kv v2.0.0's file as `name`, one line longer: the sha256 registered for v2.0.0
    no longer matches it, so a mount moved onto it cannot start."""
    path = plugins / name
    path.write_text((plugins / "demo-kv-2.0.0").read_text() + "\n# tampered\n")
    path.chmod(0o755)
    return path


def write_desired(directory: Path, text: str, name: str | None = None) -> Path:
    """Write a desired-state file; each call gets a new name unless one is given."""
    path = directory / (name or f"desired-{next(_file_numbers)}.yaml")
    path.write_text(text)
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class CliRun:
    @staticmethod
    def invoke(args: Sequence[str], env: dict[str, str] | None = None) -> CliResult:
        """Run the command line in-process with a clean connection environment."""
        clean = {k: None for k in os.environ if k.startswith(("BAO_", "VAULT_"))}
        runner = CliRunner()
        result = runner.invoke(
            cli, list(args), env={**clean, **(env or {})}, catch_exceptions=False
        )
        check_json_output(args, result.exit_code, result.stdout)
        return CliResult(result.exit_code, result.stdout, result.stderr)


SCHEMAS_DIR = Path(__file__).parent.parent / "schemas"
# The schema of each command's `--json` document; any of them may print the error one.
JSON_SCHEMA_OF_COMMAND = {
    "plan": "plan.schema.json",
    "apply": "apply.schema.json",
    "status": "status.schema.json",
}


@functools.cache
def schema_validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check_json_output(args: Sequence[str], exit_code: int, stdout: str) -> None:
    """Every `--json` run in the suite prints exactly one document that its committed
    schema accepts: the command's own, or the error document with exit code 1."""
    if "--json" not in args:
        return
    command = next(arg for arg in args if not arg.startswith("-"))
    document = json.loads(stdout)  # one document, nothing else on stdout
    if isinstance(document, dict) and "error" in document:
        assert exit_code == 1, f"an error document with exit code {exit_code}"
        name = "error.schema.json"
    else:
        name = JSON_SCHEMA_OF_COMMAND[command]
    problems = [e.message for e in schema_validator(name).iter_errors(document)]
    assert not problems, f"`{command} --json` does not follow {name}: {problems}"


def run_cli(server: DevServer, *args: str) -> CliResult:
    return CliRun.invoke(args, env={"BAO_ADDR": server.address, "BAO_TOKEN": server.token})


class HasAddress(Protocol):
    @property
    def address(self) -> str: ...


class RequestLog:
    """Records every HTTP request sent through httpx's transport while active (attempts that
    get no answer too: a refused connection or a failed TLS handshake counts)."""

    def __init__(self, server: HasAddress | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        # Requests addressed to one node only (a per-node read, a repair's local reload).
        self.sent_to_one_node: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._original: Any = None
        self._prefix = server.address if server else ""

    def __enter__(self) -> RequestLog:
        original = httpx.HTTPTransport.handle_request
        self._original = original
        log = self

        def handle_request(
            transport: httpx.HTTPTransport, request: httpx.Request
        ) -> httpx.Response:
            if str(request.url).startswith(log._prefix):
                with log._lock:
                    log.requests.append((request.method, request.url.path))
                    if request.headers.get("X-Vault-No-Request-Forwarding"):
                        log.sent_to_one_node.append((request.method, request.url.path))
            return original(transport, request)

        httpx.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        httpx.HTTPTransport.handle_request = self._original  # type: ignore[method-assign]

    def writes(self) -> list[tuple[str, str]]:
        """Requests that may change the server: a POST to sys/capabilities-self only asks."""
        return [r for r in self.requests if r[0] in WRITE_METHODS and r[1] not in ASKING_ONLY]

    def matching(self, method: str, path_fragment: str) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] == method and path_fragment in r[1]]

    def repeated(self) -> list[tuple[str, str]]:
        """Requests sent more than once: a retry shows up here."""
        return sorted({r for r in self.requests if self.requests.count(r) > 1})


class TrapServer:
    """A loopback listener that counts connections: proves a command opened none.

    Cheap enough to start one per test case, so a case that connects fails itself and
    no other: `close` wakes the accepting thread with a connection it does not count.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.stop.is_set():
                conn.close()
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            socket.create_connection(self.sock.getsockname(), timeout=SLACK).close()
        self.thread.join(timeout=SLACK)
        self.sock.close()
