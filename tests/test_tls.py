"""TLS from the command line: verified by default, a CA file or an explicit skip accepted.

A second dev server with a TLS listener (`-dev-tls`) writes its own CA to
`-dev-tls-cert-dir`; the session server speaks plain HTTP.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import certifi
import httpx
import pytest

from reconciler.demo.devserver import DevServer, find_bao, free_port
from tests.helpers import CliResult, CliRun, RequestLog, write_desired

TOKEN = "tls-test-root-token"
KV = "version: 1\nsecrets:\n  - {path: over-tls/, plugin: kv, description: sent over TLS}\n"


@dataclass
class TlsServer:
    address: str
    ca: Path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    # start_dev_server waits for the server over plain HTTP, which a TLS listener refuses.
    certs = tmp_path_factory.mktemp("tls-certs")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    log_path = certs / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                find_bao(),
                "server",
                "-dev",
                "-dev-tls",
                f"-dev-tls-cert-dir={certs}",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={TOKEN}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    server = TlsServer(f"https://127.0.0.1:{port}", certs / "vault-ca.pem")
    try:
        _wait_until_ready(server, process, log_path)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_ready(server: TlsServer, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, "the TLS dev server did not start within 30s"
        if server.ca.exists():
            try:
                answer = httpx.get(
                    f"{server.address}/v1/sys/health",
                    verify=ssl.create_default_context(cafile=server.ca),
                )
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.05)


def plan(server: TlsServer, tmp_path: Path, **settings: str) -> CliResult:
    env = {"BAO_ADDR": server.address, "BAO_TOKEN": TOKEN, "HOME": str(tmp_path), **settings}
    return CliRun.invoke(["plan", str(write_desired(tmp_path, KV))], env=env)


def assert_clean_failure(result: CliResult, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.output
    assert TOKEN not in result.output


def test_an_unknown_ca_is_refused_at_once_naming_bao_cacert(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    with RequestLog(tls_server) as requests:
        result = plan(tls_server, tmp_path)
    assert_clean_failure(result, "TLS verification of", tls_server.address, "BAO_CACERT")
    # A certificate problem is not retried: no request is sent twice.
    assert requests.requests and requests.repeated() == [], requests.requests


def test_a_ca_bundle_without_the_servers_ca_is_refused(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    result = plan(tls_server, tmp_path, BAO_CACERT=certifi.where())
    assert_clean_failure(result, "TLS verification of", "BAO_CACERT")


@pytest.mark.parametrize("variable", ["BAO_CACERT", "VAULT_CACERT"])
def test_the_servers_ca_is_accepted(tls_server: TlsServer, tmp_path: Path, variable: str) -> None:
    result = plan(tls_server, tmp_path, **{variable: str(tls_server.ca)})
    assert result.exit_code == 0, result.output
    assert "+ enable secrets/over-tls/" in result.stdout


def test_bao_cacert_wins_over_vault_cacert(tls_server: TlsServer, tmp_path: Path) -> None:
    result = plan(tls_server, tmp_path, BAO_CACERT=certifi.where(), VAULT_CACERT=str(tls_server.ca))
    assert_clean_failure(result, "TLS verification")


@pytest.mark.parametrize("variable", ["BAO_SKIP_VERIFY", "VAULT_SKIP_VERIFY"])
def test_skip_verify_is_honoured(tls_server: TlsServer, tmp_path: Path, variable: str) -> None:
    result = plan(tls_server, tmp_path, **{variable: "true"})
    assert result.exit_code == 0, result.output


def test_apply_over_tls_with_the_ca(tls_server: TlsServer, tmp_path: Path) -> None:
    env = {
        "BAO_ADDR": tls_server.address,
        "BAO_TOKEN": TOKEN,
        "BAO_CACERT": str(tls_server.ca),
        "HOME": str(tmp_path),
    }
    desired = write_desired(tmp_path, KV)
    result = CliRun.invoke(["apply", str(desired), "--yes"], env=env)
    assert result.exit_code == 0, result.output
    mounts = httpx.get(
        f"{tls_server.address}/v1/sys/mounts",
        headers={"X-Vault-Token": TOKEN},
        verify=ssl.create_default_context(cafile=tls_server.ca),
    ).json()["data"]
    assert mounts["over-tls/"]["description"] == "sent over TLS"
    again = CliRun.invoke(["plan", str(desired), "--detailed-exitcode"], env=env)
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        ({"BAO_CACERT": "/nonexistent/ca.pem"}, ["BAO_CACERT=/nonexistent/ca.pem"]),
        ({"BAO_SKIP_VERIFY": "maybe"}, ["BAO_SKIP_VERIFY", "not a boolean"]),
    ],
    ids=["missing-ca-file", "bad-skip-verify"],
)
def test_unusable_tls_settings_are_explained(
    tls_server: TlsServer, tmp_path: Path, settings: dict[str, str], fragments: list[str]
) -> None:
    assert_clean_failure(plan(tls_server, tmp_path, **settings), *fragments)


def test_plain_http_to_the_tls_listener_is_explained(tls_server: TlsServer, tmp_path: Path) -> None:
    result = plan(tls_server, tmp_path, BAO_ADDR=tls_server.address.replace("https", "http"))
    assert_clean_failure(result, "is a TLS listener", "use https:// in BAO_ADDR")


def test_https_to_a_plain_listener_is_explained(bao_server: DevServer, tmp_path: Path) -> None:
    result = CliRun.invoke(
        ["plan", str(write_desired(tmp_path, KV))],
        env={
            "BAO_ADDR": bao_server.address.replace("http://", "https://"),
            "BAO_TOKEN": bao_server.token,
        },
    )
    assert_clean_failure(result, "TLS handshake", "https://")
    assert bao_server.token not in result.output
