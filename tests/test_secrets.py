"""The token and `env` values never show: not in output, logs, plan files or error messages.

Both secrets hold characters that every encoding changes (quotes, `/`, `+`, `=`,
`&`, `<`, non-ASCII), and each check looks for the plain form and for the
JSON-escaped, URL-encoded and base64 forms.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from reconciler.client import Client, RetryPolicy
from reconciler.demo.devserver import DevServer
from reconciler.errors import ApiError
from reconciler.executor import ApplyOptions
from reconciler.loader import load_desired
from reconciler.reconcile import apply, plan_for
from tests.helpers import SLACK, CliResult, CliRun, api, check_json_output, write_desired

_SUFFIX = secrets.token_hex(4)
TOKEN = f'tok"en/Se+cret=&<x>-{_SUFFIX}'
ENV_VALUE = f'env "val"+/ue&=\u00fc<{_SUFFIX}>'
NO_WAIT = RetryPolicy(attempts=2, base_delay=0.0, sleep=lambda _seconds: None)

DESIRED = """\
version: 1
plugin_directory: {plugins}
plugins:
  - type: secret
    name: demo-kv
    version: v1.0.0
    command: demo-kv-1.0.0
    env: {{DEMO_SECRET: {value}}}
secrets:
  - {{path: hush/, plugin: demo-kv}}
"""


def encodings(secret: str) -> dict[str, str]:
    """Every form in which a secret could leak into text."""
    raw = secret.encode()
    forms = {
        "plain": secret,
        "json": json.dumps(secret)[1:-1],
        "json-unicode": json.dumps(secret, ensure_ascii=False)[1:-1],
        # Go's encoding/json also escapes <, > and &.
        "json-go": json.dumps(secret)[1:-1]
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026"),
        "url": quote(secret, safe=""),
        "url-plus": quote_plus(secret),
        "url-path": quote(secret),
        "repr": repr(secret)[1:-1],
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "base64-url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return forms


FORBIDDEN = {
    f"{name}/{form}": text
    for name, secret in (("token", TOKEN), ("env", ENV_VALUE))
    for form, text in encodings(secret).items()
}


def assert_secret_free(text: str, where: str) -> None:
    leaked = [name for name, form in FORBIDDEN.items() if form in text]
    assert not leaked, f"{where} shows {leaked}:\n{text}"


@pytest.fixture
def token(server: DevServer) -> Iterator[str]:
    """A root token whose id holds characters every encoding changes."""
    http = api(server)
    http.post("/v1/auth/token/create", json={"id": TOKEN, "policies": ["root"]}).raise_for_status()
    try:
        yield TOKEN
    finally:
        http.post("/v1/auth/token/revoke", json={"token": TOKEN}).raise_for_status()


@pytest.fixture
def desired(plugins: Path, tmp_path: Path) -> Path:
    # A JSON string is a YAML double-quoted scalar.
    return write_desired(
        tmp_path, DESIRED.format(plugins=plugins, value=json.dumps(ENV_VALUE)), "desired.yaml"
    )


def _environment(server: DevServer, token: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=server.address, BAO_TOKEN=token, HOME=str(home))
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "reconciler", "-vv", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    check_json_output(args, completed.returncode, completed.stdout)
    return completed


@dataclass
class _Watch:
    log: Path
    process: subprocess.Popen[str] | None = None

    def start(self, env: dict[str, str], desired: Path) -> None:
        with self.log.open("w") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reconciler",
                    "-vv",
                    "watch",
                    str(desired),
                    "--interval",
                    "60s",
                    "--log-format",
                    "json",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )

    def wait_for(self, fragment: str, timeout: float = SLACK) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while fragment not in self.log.read_text():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[_Watch]:
    the_watch = _Watch(tmp_path / "watch.log")
    try:
        yield the_watch
    finally:
        if the_watch.process is not None and the_watch.process.poll() is None:
            the_watch.process.kill()
            the_watch.process.wait(timeout=SLACK)


def test_the_command_line_never_shows_a_secret(
    server: DevServer, token: str, desired: Path, watch: _Watch, tmp_path: Path
) -> None:
    env = _environment(server, token, tmp_path)
    saved = tmp_path / "plan.json"
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}

    outputs["validate"] = _run(env, "validate", str(desired))
    outputs["plan"] = _run(env, "plan", str(desired), "--out", str(saved))
    assert outputs["plan"].returncode == 0, outputs["plan"].stderr
    assert "env: (sensitive)" in outputs["plan"].stdout, outputs["plan"].stdout
    outputs["plan --json"] = _run(env, "plan", str(desired), "--json")

    # The watcher registers the entry with its env and enables the mount.
    watch.start(env, desired)
    watch.wait_for("pass 1 converged")
    assert watch.stop() == 0
    assert "hush/" in api(server).get("/v1/sys/mounts").json()["data"]

    # The saved plan is stale now: a refusal is one more message to check.
    outputs["apply stale plan"] = _run(env, "apply", str(saved), "--yes")
    assert outputs["apply stale plan"].returncode == 1
    # --replace re-registers, env included, and reloads the mount.
    outputs["apply --replace"] = _run(
        env, "apply", str(desired), "--yes", "--replace", "secret/demo-kv/v1.0.0"
    )
    assert outputs["apply --replace"].returncode == 0, outputs["apply --replace"].stderr
    outputs["export"] = _run(env, "export")
    assert outputs["export"].returncode == 0, outputs["export"].stderr
    assert "env" in outputs["export"].stdout

    assert "DEBUG" in outputs["apply --replace"].stderr  # -vv did log at DEBUG
    for command, result in outputs.items():
        assert_secret_free(result.stdout, f"{command} stdout")
        assert_secret_free(result.stderr, f"{command} stderr")
    assert_secret_free(saved.read_text(), "the saved plan")
    assert_secret_free(watch.log.read_text(), "the watch log")
    assert '"msg": "pass 1 converged' in watch.log.read_text()


def test_debug_logs_in_process_never_show_a_secret(
    server: DevServer,
    token: str,
    desired: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"BAO_ADDR": server.address, "BAO_TOKEN": token}
    results: dict[str, CliResult] = {
        "plan": CliRun.invoke(["-vv", "plan", str(desired)], env=env),
        "apply": CliRun.invoke(["-vv", "apply", str(desired), "--yes"], env=env),
        "apply --replace": CliRun.invoke(
            ["-vv", "apply", str(desired), "--yes", "--replace", "secret/demo-kv/v1.0.0"],
            env=env,
        ),
        "export": CliRun.invoke(["-vv", "export"], env=env),
    }
    for command, result in results.items():
        assert result.exit_code == 0, result.output
        assert_secret_free(result.output, command)
    loggers = {record.name.split(".")[0] for record in caplog.records}
    assert {"httpx", "httpcore"} <= loggers, loggers
    for record in caplog.records:
        assert_secret_free(record.getMessage(), f"log record of {record.name}")
    assert_secret_free(caplog.text, "the captured log")


def _echoing(real: httpx.HTTPTransport, status: int) -> httpx.MockTransport:
    """The real server, except that catalog writes meet an error echoing the whole request."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/sys/plugins/catalog/" in request.url.path:
            echo = json.dumps({"headers": dict(request.headers), "body": request.content.decode()})
            return httpx.Response(
                status, json={"errors": [f"cannot use request {echo}"]}, request=request
            )
        return real.handle_request(request)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("status", [400, 500])
def test_an_error_that_echoes_the_request_never_shows_a_secret(
    server: DevServer,
    token: str,
    desired: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    loaded = load_desired(desired)
    with Client(
        server.address, token, retry=NO_WAIT, transport=_echoing(httpx.HTTPTransport(), status)
    ) as client:
        the_plan = plan_for(client, loaded)
        result = apply(client, the_plan, loaded, ApplyOptions())
        assert not result.converged
        assert result.failures
        with pytest.raises(ApiError) as caught:
            client.register_plugin(
                "secret", "demo-kv", "v1.0.0", "demo-kv-1.0.0", "0" * 64, [], {"K": ENV_VALUE}
            )
    assert "cannot use request" in str(caught.value)
    shown = {
        "the failures": "\n".join(result.failures),
        "the exception": str(caught.value),
        "the exception's repr": repr(caught.value),
        "the traceback": "".join(traceback.format_exception(caught.value)),
        "the plan": the_plan.to_json(),
        "the result": json.dumps(result.to_dict()),
        "the captured log": caplog.text,
    }
    for where, text in shown.items():
        assert_secret_free(text, where)
    for record in caplog.records:
        assert_secret_free(record.getMessage(), f"log record of {record.name}")
