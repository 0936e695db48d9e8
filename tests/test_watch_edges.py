"""Watch mode at its edges: the file deleted or missing at start, no address, a token
replaced after a terminal failure."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.demo.devserver import DevServer
from reconciler.watch import Watcher
from tests.helpers import SLACK, CliRun, api
from tests.test_watch import desired, factory, options, running, ttl_of, wait_for


@pytest.fixture
def watch_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="reconciler")
    return caplog


def test_deleting_the_desired_file_is_logged(
    server: DevServer, tmp_path: Path, watch_logs: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(path, factory(server), options())
    with running(watcher):
        wait_for(lambda: ttl_of(server) == 3600, "first pass applied")
        path.unlink()
        wait_for(lambda: "was deleted or moved away" in watch_logs.text, "the deletion logged")
        path.write_text(desired("2h"))
        wait_for(lambda: ttl_of(server) == 7200, "the file back and applied")
    assert "is back" in watch_logs.text


def test_a_file_missing_at_start_is_waited_for(server: DevServer, tmp_path: Path) -> None:
    path = tmp_path / "desired.yaml"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))},
        "BAO_ADDR": server.address,
        "BAO_TOKEN": server.token,
    }
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "watch", str(path), "--debounce", "100ms"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Give it the time a usage error or a failed first pass would take to end it.
        with pytest.raises(subprocess.TimeoutExpired):
            daemon.wait(timeout=2)
        path.write_text(desired("1h"))
        wait_for(lambda: ttl_of(server) == 3600, "the file created and applied")
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=SLACK)
    assert daemon.returncode == 0, stderr
    assert "does not exist yet: waiting for it to be created" in stderr, stderr


def test_no_address_exits_1_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    result = CliRun.invoke(["watch", str(path)], env={"BAO_TOKEN": "anything"})
    assert result.exit_code == 1, result.output
    assert "no server address: set BAO_ADDR" in result.stderr


def test_a_replaced_token_file_ends_a_terminal_failure(
    server: DevServer, tmp_path: Path, watch_logs: pytest.LogCaptureFixture
) -> None:
    http = api(server)
    weak = http.post("/v1/auth/token/create", json={"policies": ["default"]}).json()
    token_file = tmp_path / "token"
    token_file.write_text(weak["auth"]["client_token"])
    path = tmp_path / "desired.yaml"
    path.write_text(desired("1h"))
    watcher = Watcher(path, factory(server, token_file), options(token_file=token_file))
    with running(watcher):
        wait_for(lambda: "retrying cannot help" in watch_logs.text, "a terminal failure")
        strong = http.post("/v1/auth/token/create", json={"policies": ["root"]}).json()
        replacement = tmp_path / ".token.new"
        replacement.write_text(strong["auth"]["client_token"])
        os.replace(replacement, token_file)  # as an agent writes it
        wait_for(lambda: ttl_of(server) == 3600, "a pass with the new token")
    assert weak["auth"]["client_token"] not in watch_logs.text
