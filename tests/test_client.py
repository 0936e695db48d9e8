"""The sys/ client: settings, error mapping, retries, namespaces and secrecy of the token.

Everything runs against the real OpenBao server; httpx's MockTransport only
wraps the real transport to inject faults (connection errors, 5xx, 429).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.client import (
    DEFAULT_ADDRESS,
    OPENBAO,
    VAULT,
    Client,
    RetryPolicy,
    detect_flavour,
    redact,
)
from reconciler.demo.devserver import DevServer, find_bao, free_port
from reconciler.demo.examples.plugins.build import build_plugins
from reconciler.errors import (
    ApiError,
    ClientSettingsError,
    ConnectionFailed,
    OutcomeUnknown,
    PermissionDenied,
    Sealed,
)
from tests.helpers import SLACK, api

NO_WAIT = RetryPolicy(attempts=4, base_delay=0.0, sleep=lambda _seconds: None)


def unused_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Counter:
    """Counts the requests that reach the transport (httpx event hooks)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(
            (request.method, request.url.path, request.headers.get("X-Vault-Namespace"))
        )

    @property
    def hooks(self) -> dict[str, list[Callable[..., Any]]]:
        return {"request": [self]}

    def __len__(self) -> int:
        return len(self.requests)


def faulty(
    faults: list[Callable[[httpx.Request], httpx.Response]],
) -> httpx.MockTransport:
    """The real transport, except that the first len(faults) requests meet a fault."""
    real = httpx.HTTPTransport()
    pending = list(faults)

    def handle(request: httpx.Request) -> httpx.Response:
        if pending:
            return pending.pop(0)(request)
        return real.handle_request(request)

    return httpx.MockTransport(handle)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def status(code: int, *errors: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, json={"errors": list(errors)}, request=request)


def client_for(server: DevServer, **kwargs: Any) -> Client:
    kwargs.setdefault("retry", NO_WAIT)
    return Client(server.address, server.token, **kwargs)


# --- settings -------------------------------------------------------------------------


def test_settings_follow_the_cli_conventions(tmp_path: Path) -> None:
    env = {
        "BAO_ADDR": "http://bao.example:8200/",
        "VAULT_ADDR": "http://vault.example:8200",
        "VAULT_TOKEN": "vault-token-value",
        "VAULT_NAMESPACE": "team-a/",
        "HOME": str(tmp_path),
    }
    client = Client.from_environment(environ=env)
    assert client.address == "http://bao.example:8200"
    assert client.namespace == "team-a"
    assert repr(client) == "Client('http://bao.example:8200', namespace='team-a')"
    explicit = Client.from_environment(address="http://other:1", namespace="", environ=env)
    assert (explicit.address, explicit.namespace) == ("http://other:1", "")
    default = Client.from_environment(environ={"BAO_TOKEN": "abcdefgh", "HOME": str(tmp_path)})
    assert default.address == DEFAULT_ADDRESS


def test_token_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def capture(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["X-Vault-Token"])
        return httpx.Response(200, json={"data": {}}, request=request)

    transport = httpx.MockTransport(capture)
    (tmp_path / ".vault-token").write_text("from-home-file\n")
    token_file = tmp_path / "token"
    token_file.write_text("  from-token-file\n")
    env = {"BAO_ADDR": "http://x:1", "HOME": str(tmp_path)}
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"token": "from-argument", "token_file": token_file}, {"BAO_TOKEN": "from-env"}),
        ({"token_file": token_file}, {"BAO_TOKEN": "from-env"}),
        ({}, {"BAO_TOKEN": "from-env", "VAULT_TOKEN": "from-vault-env"}),
        ({}, {"VAULT_TOKEN": "from-vault-env"}),
        ({}, {}),
    ]
    for arguments, extra in cases:
        Client.from_environment(environ={**env, **extra}, transport=transport, **arguments).request(
            "GET", "sys/mounts"
        )
    assert seen == [
        "from-argument",
        "from-token-file",
        "from-env",
        "from-vault-env",
        "from-home-file",
    ]


def test_missing_or_unusable_settings_say_what_to_set(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    with pytest.raises(ClientSettingsError, match="BAO_TOKEN"):
        Client.from_environment(environ=home)
    with pytest.raises(ClientSettingsError, match="cannot read the token file"):
        Client.from_environment(token_file=tmp_path / "absent", environ=home)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ClientSettingsError, match="is empty"):
        Client.from_environment(token_file=tmp_path / "empty", environ=home)
    with pytest.raises(ClientSettingsError, match="must start with"):
        Client.from_environment(environ={**home, "BAO_ADDR": "127.0.0.1:8200", "BAO_TOKEN": "x"})
    with pytest.raises(ClientSettingsError, match="not a boolean"):
        Client.from_environment(
            environ={**home, "BAO_TOKEN": "x", "BAO_ADDR": "https://h:1", "BAO_SKIP_VERIFY": "yes"}
        )
    with pytest.raises(ClientSettingsError, match="BAO_CACERT"):
        Client.from_environment(
            environ={
                **home,
                "BAO_TOKEN": "x",
                "BAO_ADDR": "https://h:1",
                "BAO_CACERT": str(tmp_path / "no-ca.pem"),
            }
        )
    with pytest.raises(ClientSettingsError, match="BAO_CLIENT_TIMEOUT"):
        Client.from_environment(environ={**home, "BAO_TOKEN": "x", "BAO_CLIENT_TIMEOUT": "soon"})


def test_a_token_with_stray_bytes_is_refused_without_showing_it() -> None:
    with pytest.raises(ClientSettingsError) as caught:
        Client("http://127.0.0.1:1", "secret-part\nsecond-line")
    assert "secret-part" not in str(caught.value)


def test_retry_settings_come_from_the_environment(tmp_path: Path) -> None:
    client = Client.from_environment(
        environ={"BAO_TOKEN": "abcdefgh", "BAO_MAX_RETRIES": "0", "BAO_CLIENT_TIMEOUT": "5s"}
    )
    assert client.retry.attempts == 1
    assert client._transport.http.timeout.read == 5.0


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=0.3)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.3), (8, 0.3)]:
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not fixed


def test_flavour_is_recognised_from_seal_status() -> None:
    assert detect_flavour({"version": "2.7.2", "commit_date": "2026"}) is OPENBAO
    assert detect_flavour({"version": "1.17.0", "build_date": "2024"}) is VAULT
    assert detect_flavour({}) is OPENBAO


def test_database_reload_by_plugin_is_vault_only(server: DevServer) -> None:
    """OpenBao has no `<mount>/reload/<plugin>`: the client refuses it without a request."""
    assert VAULT.has_database_reload and not OPENBAO.has_database_reload
    api(server).post("/v1/sys/mounts/db", json={"type": "database"}).raise_for_status()
    assert api(server).post("/v1/db/reload/demo-db").status_code == 404  # the server's fact
    counter = Counter()
    client = client_for(server, event_hooks=counter.hooks)
    assert client.flavour is OPENBAO
    sent = len(counter)
    with pytest.raises(ValueError, match="has no <mount>/reload/<plugin>"):
        client.reload_database_plugin("db/", "demo-db")
    assert len(counter) == sent


# --- error mapping against the real server ---------------------------------------------


def test_unreachable_address_is_named_with_the_fix() -> None:
    address = unused_address()
    counter = Counter()
    client = Client(address, "some-token-value", retry=NO_WAIT, event_hooks=counter.hooks)
    with pytest.raises(ConnectionFailed) as caught:
        client.list_mounts("secret")
    message = str(caught.value)
    assert address in message
    assert "BAO_ADDR" in message
    assert "some-token-value" not in message
    assert caught.value.retryable
    assert len(counter) == NO_WAIT.attempts  # a refused connection is retried


def test_bad_token_is_permission_denied_naming_method_and_path(server: DevServer) -> None:
    client = Client(server.address, "not-a-valid-token", retry=NO_WAIT)
    with pytest.raises(PermissionDenied) as caught:
        client.list_mounts("secret")
    message = str(caught.value)
    assert "GET /v1/sys/mounts" in message
    assert "lacks the 'read' capability on sys/mounts" in message
    assert "403" in message
    assert "not-a-valid-token" not in message
    assert caught.value.status == 403
    assert not caught.value.retryable


def test_missing_capability_names_sudo_for_root_protected_paths(server: DevServer) -> None:
    http = api(server)
    http.post(
        "/v1/sys/policy/catalog-reader",
        json={"policy": 'path "sys/plugins/catalog/*" { capabilities = ["read"] }'},
    ).raise_for_status()
    token = http.post("/v1/auth/token/create", json={"policies": ["catalog-reader"]}).json()[
        "auth"
    ]["client_token"]
    with Client(server.address, token, retry=NO_WAIT) as client:
        with pytest.raises(PermissionDenied) as caught:
            client.read_plugin("secret", "kv", "")
        assert (
            "lacks the 'sudo' capability on sys/plugins/catalog/secret/kv (it holds: read)"
            in str(caught.value)
        )
        assert token not in str(caught.value)


def test_bad_request_surfaces_the_servers_errors(server: DevServer) -> None:
    counter = Counter()
    client = client_for(server, event_hooks=counter.hooks)
    with pytest.raises(ApiError) as caught:
        client.enable_mount("secret", "nope/", {"type": "no-such-plugin"})
    assert caught.value.status == 400
    assert "plugin not found in the catalog: no-such-plugin" in str(caught.value)
    assert "POST /v1/sys/mounts/nope" in str(caught.value)
    assert len(counter) == 1  # 4xx is terminal
    client.enable_mount("secret", "t/", {"type": "transit"})
    with pytest.raises(ApiError, match='invalid duration "bogus"'):
        client.tune_mount("secret", "t/", {"default_lease_ttl": "bogus"})


def test_multierror_wrapping_is_taken_off(client: Client) -> None:
    with pytest.raises(ApiError) as caught:
        client.reload_backend(mounts=["not-mounted/"])
    message = str(caught.value)
    assert 'cannot fetch mount entry on "not-mounted/"' in message
    assert "error occurred" not in message and "\t" not in message


# --- retries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [refused, status(500, "internal error"), status(503, "standby"), status(429, "slow down")],
    ids=["connection-refused", "500", "503", "429"],
)
def test_transient_failures_are_retried_until_the_server_answers(
    server: DevServer, fault: Callable[[httpx.Request], httpx.Response]
) -> None:
    counter = Counter()
    client = client_for(server, transport=faulty([fault, fault]), event_hooks=counter.hooks)
    assert "sys/" in client.list_mounts("secret")
    assert len(counter) == 3


def test_retries_stop_after_the_configured_attempts(server: DevServer) -> None:
    counter = Counter()
    delays: list[float] = []
    policy = RetryPolicy(attempts=3, base_delay=0.01, sleep=delays.append)
    client = Client(
        server.address,
        server.token,
        retry=policy,
        transport=faulty([status(502, "bad gateway")] * 5),
        event_hooks=counter.hooks,
    )
    with pytest.raises(ApiError) as caught:
        client.list_mounts("secret")
    assert caught.value.status == 502
    assert "after 3 attempts" in str(caught.value)
    assert len(counter) == 3
    assert len(delays) == 2 and all(0 <= d <= 0.02 for d in delays)


def test_sealed_server_is_reported_at_once_with_the_fix(server: DevServer) -> None:
    counter = Counter()
    client = client_for(
        server,
        transport=faulty([status(503, "Vault is sealed")]),
        event_hooks=counter.hooks,
    )
    with pytest.raises(Sealed, match="is sealed: unseal it"):
        client.list_mounts("secret")
    assert len(counter) == 1


def test_an_enable_that_timed_out_after_reaching_the_server_is_not_an_error(
    server: DevServer,
) -> None:
    real = httpx.HTTPTransport()
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        response = real.handle_request(request)
        if calls == 1:  # the server did it, the answer was lost
            response.read()
            raise httpx.ReadTimeout("timed out", request=request)
        return response

    client = client_for(server, transport=httpx.MockTransport(handle))
    client.enable_mount("secret", "late/", {"type": "kv"})
    assert calls == 2
    assert "late/" in client.list_mounts("secret")


def test_an_enable_on_a_path_already_in_use_is_an_error(client: Client) -> None:
    # "already in use" means done only for a retry after a lost answer, never for the
    # first attempt: someone else's mount there is not ours.
    client.enable_mount("secret", "taken/", {"type": "kv", "description": "theirs"})
    with pytest.raises(ApiError) as refused:
        client.enable_mount("secret", "taken/", {"type": "kv", "description": "ours"})
    assert refused.value.status == 400


def _lost_answer(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


def _read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize("fault", [_lost_answer, _read_timeout])
def test_a_reload_that_may_have_reached_the_server_is_not_sent_again(
    server: DevServer, client: Client, fault: Callable[[httpx.Request], httpx.Response]
) -> None:
    client.enable_mount("secret", "once/", {"type": "kv"})
    real = httpx.HTTPTransport()
    reloads = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal reloads
        response = real.handle_request(request)
        if request.url.path.endswith("/reload/backend"):
            reloads += 1
            response.read()  # the server reloaded; its answer is lost on the way back
            return fault(request)
        return response

    counter = Counter()
    lossy = client_for(server, transport=httpx.MockTransport(handle), event_hooks=counter.hooks)
    with pytest.raises(OutcomeUnknown, match="may have been carried out, so it was not sent again"):
        lossy.reload_backend(mounts=["once/"])
    assert reloads == 1
    assert len(counter) == 1


def test_a_reload_refused_before_it_was_sent_is_retried(server: DevServer, client: Client) -> None:
    client.enable_mount("secret", "refused/", {"type": "kv"})
    counter = Counter()
    flaky = client_for(server, transport=faulty([refused]), event_hooks=counter.hooks)
    flaky.reload_backend(mounts=["refused/"])
    assert len(counter) == 2


# --- the calls ------------------------------------------------------------------------


def test_catalog_register_read_deregister(server: DevServer, client: Client) -> None:
    built = {p.name: p for p in build_plugins(server.plugin_directory) if p.version == "v1.0.0"}
    plugin = built["demo-kv"]
    client.register_plugin(
        "secret",
        plugin.name,
        plugin.version,
        plugin.command,
        plugin.sha256,
        ["-log-level=info"],
        {"DEMO_SECRET": "env-value-never-returned"},
    )
    listed = [e for e in client.list_catalog() if e["name"] == plugin.name]
    assert [(e["type"], e["version"], e["builtin"]) for e in listed] == [
        ("secret", "v1.0.0", False)
    ]
    entry = client.read_plugin("secret", plugin.name, plugin.version)
    assert (entry["sha256"], entry["command"], entry["args"]) == (
        plugin.sha256,
        plugin.command,
        ["-log-level=info"],
    )
    assert "env-value-never-returned" not in str(entry)
    client.deregister_plugin("secret", plugin.name, plugin.version)
    assert not [e for e in client.list_catalog() if e["name"] == plugin.name]
    with pytest.raises(ApiError) as caught:
        client.read_plugin("secret", plugin.name, plugin.version)
    assert caught.value.status == 404


def test_mount_lifecycle_and_move_keep_the_data(server: DevServer, client: Client) -> None:
    client.enable_mount("secret", "old/", {"type": "kv", "description": "before"})
    client.tune_mount("secret", "old/", {"description": "after", "max_lease_ttl": "2h"})
    http = api(server)
    http.put("/v1/old/item", json={"value": "kept"}).raise_for_status()
    client.remount("secret", "old/", "new/")
    mounts = client.list_mounts("secret")
    assert "old/" not in mounts
    assert mounts["new/"]["description"] == "after"
    assert mounts["new/"]["config"]["max_lease_ttl"] == 7200
    assert http.get("/v1/new/item").json()["data"] == {"value": "kept"}
    client.disable_mount("secret", "new/")
    assert "new/" not in client.list_mounts("secret")


def test_auth_mounts_move_under_auth(client: Client) -> None:
    client.enable_mount("auth", "robots/", {"type": "approle"})
    client.remount("auth", "robots/", "machines/")
    auth = client.list_mounts("auth")
    assert "machines/" in auth and "robots/" not in auth
    with pytest.raises(ApiError, match='no matching mount at "auth/robots/"'):
        client.remount("auth", "robots/", "elsewhere/")


def test_reload_by_mount_and_by_plugin(client: Client) -> None:
    client.enable_mount("secret", "crypto/", {"type": "transit"})
    client.enable_mount("auth", "robots/", {"type": "approle"})
    assert client.reload_backend(mounts=["crypto/", "auth/robots/"])["reload_id"]
    assert client.reload_backend(plugin="transit", scope="global")["reload_id"]
    with pytest.raises(ValueError):
        client.reload_backend()


def test_probe_tells_a_working_mount_from_a_broken_one(server: DevServer, client: Client) -> None:
    client.enable_mount("secret", "crypto/", {"type": "transit"})
    client.enable_mount("auth", "robots/", {"type": "approle"})
    client.probe_mount("secret", "crypto/")
    client.probe_mount("auth", "robots/")
    with pytest.raises(ApiError, match="nothing is mounted at absent/"):
        client.probe_mount("secret", "absent/")

    plugin = next(p for p in build_plugins(server.plugin_directory) if p.name == "demo-kv")
    client.register_plugin(
        "secret", plugin.name, plugin.version, plugin.command, plugin.sha256, [], {}
    )
    client.enable_mount(
        "secret", "ext/", {"type": plugin.name, "config": {"plugin_version": plugin.version}}
    )
    # The example plugin answers help with "unsupported operation": still a live backend.
    client.probe_mount("secret", "ext/")
    client.deregister_plugin("secret", plugin.name, plugin.version)
    with pytest.raises(ApiError):
        client.reload_backend(mounts=["ext/"])
    with pytest.raises(ApiError) as caught:
        client.probe_mount("secret", "ext/")
    assert "ext/ has no working backend" in str(caught.value)
    assert "backend is nil" in str(caught.value)


def test_server_identity_and_token(server: DevServer, client: Client) -> None:
    identity = client.server_identity()
    assert identity.address == server.address
    assert identity.namespace == ""
    assert len(identity.cluster_id) == 36
    assert client.flavour is OPENBAO
    assert client.list_pins() == []
    info = client.lookup_self()
    assert "root" in info["policies"]
    assert server.token not in str(info)
    http = api(server)
    renewable = http.post(
        "/v1/auth/token/create", json={"ttl": "1h", "renewable": True, "policies": ["default"]}
    ).json()["auth"]["client_token"]
    with Client(server.address, renewable) as other:
        assert other.lookup_self()["renewable"] is True
        renewed = other.renew_self()
        assert renewed["lease_duration"] > 0
        assert renewable not in str(renewed)


def test_namespace_applies_to_mounts_not_to_the_catalog(server: DevServer) -> None:
    http = api(server)
    http.post("/v1/sys/namespaces/team-a").raise_for_status()
    counter = Counter()
    with client_for(server, namespace="team-a", event_hooks=counter.hooks) as client:
        client.enable_mount("secret", "apps/", {"type": "kv"})
        assert "apps/" in client.list_mounts("secret")
        assert "apps/" not in api(server).get("/v1/sys/mounts").json()["data"]
        client.reload_backend(mounts=["apps/"])
        wait_until(lambda: "reloaded plugin: plugin=kv" in server.log_tail(5), "reload logged")
        assert "path=apps/" in server.log_tail(5)
        client.probe_mount("secret", "apps/")
        assert any(e["name"] == "kv" for e in client.list_catalog())
        identity = client.server_identity()
        assert identity.namespace == "team-a"
    namespaces = {path: ns for _method, path, ns in counter.requests}
    assert namespaces["/v1/sys/mounts/apps"] == "team-a"
    assert namespaces["/v1/sys/mounts"] == "team-a"
    assert namespaces["/v1/sys/plugins/reload/backend"] == "team-a"
    assert namespaces["/v1/apps"] == "team-a"
    assert namespaces["/v1/sys/plugins/catalog"] is None
    assert namespaces["/v1/sys/seal-status"] is None


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = SLACK) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)


# --- the token stays secret -------------------------------------------------------------


def test_token_never_appears_in_debug_logs(
    server: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(server, transport=faulty([refused, status(500, "boom")]))
    client.list_mounts("secret")
    client.lookup_self()
    with pytest.raises(ApiError):
        client.enable_mount("secret", "x/", {"type": "no-such-plugin"})
    # Whatever an httpx/httpcore logger is handed, headers included, comes out redacted.
    logging.getLogger("httpcore.http11").debug(
        "send_request_headers.started headers=%r", [(b"X-Vault-Token", server.token.encode())]
    )
    logging.getLogger("httpx").debug("token %s", server.token)
    assert caplog.records, "DEBUG logging was not captured"
    assert any("<redacted>" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        assert server.token not in record.getMessage()
    assert server.token not in caplog.text


def test_token_never_appears_in_exception_messages(server: DevServer) -> None:
    client = client_for(
        server, transport=faulty([status(400, f"echo {server.token}")]), retry=NO_WAIT
    )
    with pytest.raises(ApiError) as caught:
        client.list_mounts("secret")
    assert server.token not in str(caught.value)
    assert redact(f"x{server.token}y") == "x<redacted>y"


# --- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A second dev server with a TLS listener and its own CA: (address, CA file)."""
    certs = tmp_path_factory.mktemp("tls")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    log = (certs / "server.log").open("wb")
    process = subprocess.Popen(
        [
            find_bao(),
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={certs}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-root-token-id=tls-root-token",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        ca = certs / "vault-ca.pem"
        deadline = time.monotonic() + 30
        while not ca.exists() or not _listening(port):
            assert process.poll() is None, (certs / "server.log").read_text()
            assert time.monotonic() < deadline, "TLS dev server did not start"
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}", ca
    finally:
        process.terminate()
        process.wait(timeout=SLACK)
        log.close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_tls_is_verified_and_a_failure_suggests_bao_cacert(
    tls_server: tuple[str, Path], tmp_path: Path
) -> None:
    address, ca = tls_server
    env = {"BAO_ADDR": address, "BAO_TOKEN": "tls-root-token", "HOME": str(tmp_path)}
    counter = Counter()
    unverified = Client.from_environment(environ=env, retry=NO_WAIT, event_hooks=counter.hooks)
    with pytest.raises(ConnectionFailed) as caught:
        unverified.server_identity()
    assert "TLS verification" in str(caught.value)
    assert "BAO_CACERT" in str(caught.value)
    assert len(counter) == 1  # retrying cannot fix a certificate
    verified = Client.from_environment(environ={**env, "BAO_CACERT": str(ca)})
    assert verified.server_identity().cluster_id
    skipping = Client.from_environment(environ={**env, "VAULT_SKIP_VERIFY": "true"})
    assert skipping.list_mounts("secret")
    plain = Client.from_environment(
        environ={**env, "BAO_ADDR": address.replace("https", "http")}, retry=NO_WAIT
    )
    with pytest.raises(ApiError):
        plain.list_mounts("secret")


def test_wrong_scheme_to_a_plain_listener_is_explained(server: DevServer) -> None:
    address = server.address.replace("http://", "https://")
    client = Client(address, server.token, retry=NO_WAIT)
    with pytest.raises(ConnectionFailed, match="https:// for a TLS listener"):
        client.list_mounts("secret")


def test_default_context_verifies_certificates() -> None:
    client = Client("https://127.0.0.1:1", "abcdefgh")
    transport = client._transport.http._transport
    context = transport._pool._ssl_context  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_reload_waits_longer_than_an_ordinary_request() -> None:
    # The server answers a reload only once every named plugin has restarted.
    seen: dict[str, float] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.extensions["timeout"]["read"]
        return httpx.Response(200, json={"data": {"reload_id": "r"}})

    with Client(
        "http://127.0.0.1:1", "t", timeout=5.0, transport=httpx.MockTransport(answer)
    ) as client:
        client.reload_backend(mounts=["a/"])
        client.request("GET", "sys/mounts")
    assert seen["/v1/sys/plugins/reload/backend"] >= 600
    assert seen["/v1/sys/mounts"] == 5.0
