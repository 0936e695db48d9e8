"""A small client for the `sys/` endpoints of OpenBao (and HashiCorp Vault).

Connection settings follow the OpenBao/Vault command line: `BAO_ADDR` or
`VAULT_ADDR`, the token from `BAO_TOKEN`/`VAULT_TOKEN` or `~/.vault-token`,
`BAO_NAMESPACE`, `BAO_CACERT`, `BAO_CAPATH`, `BAO_CLIENT_CERT`/`BAO_CLIENT_KEY`,
`BAO_SKIP_VERIFY`, `BAO_CLIENT_TIMEOUT` and `BAO_MAX_RETRIES` (each also with
the `VAULT_` prefix; `BAO_` wins). TLS is verified unless told otherwise.

Mount calls (the mount tables, enable, tune, disable, move, reload, probe)
carry the namespace; catalog calls go to the root namespace, where the catalog
lives. Every HTTP failure becomes an `ApiError` whose message names the cause
and the fix; transient ones (no answer, 5xx, 429) are retried first.

The token never appears in a message or a log record: it is sent in a header
that is never logged here, and a filter on the `httpx`/`httpcore` loggers
removes it from their records, DEBUG included.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import httpx

from reconciler.backoff import backoff_delay
from reconciler.errors import (
    ApiError,
    ClientSettingsError,
    ConnectionFailed,
    PermissionDenied,
    Sealed,
)
from reconciler.model import MountKind, ServerIdentity, parse_duration

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "https://127.0.0.1:8200"
DEFAULT_TIMEOUT = 30.0
# An address that does not answer must fail fast even when requests may take long.
_CONNECT_TIMEOUT = 10.0
_REMOUNT_TIMEOUT = 300.0
_RELOAD_TIMEOUT = 600.0
_REDACTED = "<redacted>"
# What a Go TLS listener answers to a plain-HTTP request.
_PLAIN_TO_TLS = "HTTP request to an HTTPS server"
# Shorter values would blank out ordinary words in log lines; a secret that short is
# guessable anyway.
_MIN_SECRET_LENGTH = 6

EventHooks = Mapping[str, list[Callable[..., Any]]]
_E = TypeVar("_E", bound=BaseException)


# --- settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How retryable failures are retried (see errors.retryable_status)."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        return backoff_delay(retry, initial=self.base_delay, cap=self.max_delay)


@dataclass(frozen=True)
class Flavour:
    """What differs between OpenBao and HashiCorp Vault for the calls made here.

    OpenBao 2.7 is tested. The Vault values come from Vault's API documentation and
    are untested: Vault is not available where this project is tested.
    """

    name: str
    # Vault 1.16+: sys/plugins/pins sets the version that unpinned mounts of a plugin run.
    has_pins: bool
    # The field of sys/seal-status by which the flavour is recognised.
    marker: str


OPENBAO = Flavour(name="openbao", has_pins=False, marker="commit_date")
VAULT = Flavour(name="vault", has_pins=True, marker="build_date")


def detect_flavour(seal_status: Mapping[str, Any]) -> Flavour:
    """The server's flavour from its sys/seal-status answer (OpenBao when unsure)."""
    if VAULT.marker in seal_status and OPENBAO.marker not in seal_status:
        return VAULT
    return OPENBAO


# --- keeping the token out of logs and messages ----------------------------------------

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def redact(text: str) -> str:
    """`text` with every token known to this process replaced by `<redacted>`."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


class _RedactSecrets(logging.Filter):
    """Rewrites a record whose formatted message holds a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_log_filter = _RedactSecrets()


def _install_log_filter() -> None:
    # A logger's filters see only the records logged on that very logger, not its
    # children's, so every httpx/httpcore logger gets the filter.
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in {"httpx", "httpcore"}
    ]
    for name in {"httpx", "httpcore", *names}:
        logger = logging.getLogger(name)
        if _log_filter not in logger.filters:
            logger.addFilter(_log_filter)


def _remember_secret(value: str) -> None:
    if len(value) >= _MIN_SECRET_LENGTH:
        with _secrets_lock:
            _secrets.update(_encoded_forms(value))
    _install_log_filter()


def _encoded_forms(value: str) -> set[str]:
    """The secret as it reads inside JSON (Python's or Go's escaping) or a URL.

    A server or proxy that echoes a request in its error message quotes the body or
    the headers in one of these forms.
    """
    escaped = json.dumps(value)[1:-1]
    go_escaped = escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return {
        value,
        escaped,
        json.dumps(value, ensure_ascii=False)[1:-1],
        go_escaped,
        quote(value, safe=""),
        quote_plus(value),
    }


# --- the client -------------------------------------------------------------------------


class Client:
    """The `sys/` calls the reconciler makes, over one pooled HTTP connection set.

    Thread-safe: the state reader sends requests from several threads at once.
    """

    def __init__(
        self,
        address: str,
        token: str,
        *,
        namespace: str = "",
        verify: ssl.SSLContext | bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        event_hooks: EventHooks | None = None,
        remount_timeout: float = _REMOUNT_TIMEOUT,
    ) -> None:
        self.address = _check_address(address)
        self.namespace = namespace.strip("/")
        self.retry = retry or RetryPolicy()
        self.remount_timeout = remount_timeout
        token = _check_token(token)
        _remember_secret(token)
        self._flavour: Flavour | None = None
        self._http = httpx.Client(
            base_url=self.address,
            headers={"X-Vault-Token": token, "X-Vault-Request": "true"},
            verify=_default_tls_context() if verify is True else verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, _CONNECT_TIMEOUT)),
            transport=transport,
            event_hooks=dict(event_hooks or {}),
            # Standby nodes redirect to the active node, as the CLI follows.
            follow_redirects=True,
            max_redirects=5,
        )

    @classmethod
    def from_environment(
        cls,
        address: str | None = None,
        token: str | None = None,
        token_file: Path | None = None,
        namespace: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        event_hooks: EventHooks | None = None,
    ) -> Client:
        """A client configured like the `bao`/`vault` CLI; arguments win over the environment.

        The token comes from `token`, else `token_file`, else BAO_TOKEN/VAULT_TOKEN, else
        `~/.vault-token`.
        """
        env = os.environ if environ is None else environ
        address = address or _setting(env, "ADDR") or DEFAULT_ADDRESS
        if namespace is None:
            namespace = _setting(env, "NAMESPACE") or ""
        if token is None:
            token = _read_token(token_file, env)
        if timeout is None:
            timeout = _timeout_setting(env)
        if retry is None:
            retries = _setting(env, "MAX_RETRIES")
            retry = RetryPolicy(attempts=_max_retries(retries) + 1) if retries else RetryPolicy()
        verify = _tls_settings(address, env)
        return cls(
            address,
            token,
            namespace=namespace,
            verify=verify,
            timeout=timeout,
            retry=retry,
            transport=transport,
            event_hooks=event_hooks,
        )

    def __repr__(self) -> str:
        namespace = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"Client({self.address!r}{namespace})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the generic request ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        namespace: bool = True,
        *,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send `METHOD /v1/<path>`; the JSON answer ({} for 204). Transient failures retry.

        `namespace=False` sends the request to the root namespace.
        """
        return self._send(method, path, json=json, namespace=namespace, params=params)

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        namespace: bool = True,
        params: Mapping[str, str] | None = None,
        done_if: Callable[[ApiError], bool] | None = None,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """`request`, where `done_if` recognises the error a retry meets when the
        attempt that timed out had in fact succeeded."""
        timeout = self._http.timeout
        if read_timeout is not None and (timeout.read is None or read_timeout > timeout.read):
            timeout = httpx.Timeout(
                connect=timeout.connect, read=read_timeout, write=timeout.write, pool=timeout.pool
            )
        path = path.lstrip("/")
        headers = {"X-Vault-Namespace": self.namespace} if namespace and self.namespace else {}
        attempts = max(1, self.retry.attempts)
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(
                    method,
                    f"/v1/{path}",
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                error = self._transport_error(exc, method, path)
            except httpx.TooManyRedirects:
                raise ConnectionFailed(
                    f"{method} /v1/{path} on {self.address} was redirected too often: "
                    "check BAO_ADDR (it should name a node of the cluster)",
                    path=path,
                ) from None
            else:
                if response.status_code < 400:
                    return self._json(response, method, path)
                error = self._http_error(response, method, path, in_namespace=bool(headers))
                if attempt > 1 and done_if is not None and done_if(error):
                    return {}
            if not error.retryable or attempt == attempts:
                if attempt > 1:
                    error.args = (f"{error} (after {attempt} attempts)",)
                raise error
            delay = self.retry.delay(attempt)
            log.debug(
                "%s /v1/%s: %s; retry %d of %d in %.2fs",
                method,
                path,
                error,
                attempt,
                attempts - 1,
                delay,
            )
            self.retry.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, response: httpx.Response, method: str, path: str) -> dict[str, Any]:
        if response.status_code == 204 or not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise ApiError(
                f"{self.address} answered {method} /v1/{path} with something other than JSON: "
                "is BAO_ADDR the address of an OpenBao/Vault server?",
                status=response.status_code,
                path=path,
            ) from None
        return body if isinstance(body, dict) else {"data": body}

    def _transport_error(self, exc: httpx.TransportError, method: str, path: str) -> ApiError:
        """The error for a request that got no HTTP answer (retryable unless TLS or settings)."""
        where = f"{method} /v1/{path}"
        reason = redact(_reason(exc))
        verification = _find_cause(exc, ssl.SSLCertVerificationError)
        if verification is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            detail = redact(getattr(verification, "verify_message", "") or reason)
            return ConnectionFailed(
                f"TLS verification of {self.address} failed ({detail}): set BAO_CACERT to "
                "the CA certificate that signed the server's certificate "
                "(BAO_SKIP_VERIFY=true only for a throw-away test server)",
                path=path,
                retryable=False,
            )
        if _find_cause(exc, ssl.SSLError) is not None:
            return ConnectionFailed(
                f"the TLS handshake with {self.address} failed ({reason}): check that the "
                "address starts with https:// for a TLS listener and http:// otherwise",
                path=path,
                retryable=False,
            )
        if isinstance(exc, httpx.ConnectTimeout):
            message = (
                f"cannot reach the server at {self.address}: no connection within "
                f"{self._http.timeout.connect}s: check BAO_ADDR (or --address) and the network"
            )
        elif isinstance(exc, httpx.TimeoutException):
            message = (
                f"the server at {self.address} did not answer {where} within "
                f"{self._http.timeout.read}s: it may be overloaded; raise BAO_CLIENT_TIMEOUT"
            )
        elif isinstance(exc, httpx.ConnectError):
            message = (
                f"cannot reach the server at {self.address} ({reason}): check that it runs "
                "there, or set BAO_ADDR (or --address) to its address"
            )
        elif isinstance(exc, httpx.UnsupportedProtocol):
            return ClientSettingsError(
                f"unsupported address {self.address}: use https:// or http://",
                path=path,
            )
        else:
            message = f"the connection to {self.address} broke during {where} ({reason})"
        return ConnectionFailed(message, path=path)

    def _http_error(
        self, response: httpx.Response, method: str, path: str, *, in_namespace: bool
    ) -> ApiError:
        """The one place where an HTTP error status becomes an ApiError with a fix."""
        status = response.status_code
        messages = [redact(m) for m in _server_messages(response)]
        detail = "; ".join(messages)
        where = f"{method} /v1/{path}"
        if in_namespace:
            where += f" (namespace {self.namespace})"
        if status == 403:
            capability = _capability(method, path)
            policy_path = f"{self.namespace}/{path}" if in_namespace else path
            extra = "" if detail.lower() in {"", "permission denied"} else f" ({detail})"
            return PermissionDenied(
                f"permission denied (403) on {where}{extra}: the token lacks the {capability} "
                f"capability on {policy_path}, or it is invalid or expired: grant it in the "
                "token's policy (see the minimal ACL policy in the README) or use another token",
                status=status,
                path=path,
            )
        if status == 503 and "sealed" in detail.lower():
            return Sealed(
                f"the server at {self.address} is sealed: unseal it (`bao operator unseal`) "
                "and retry",
                status=status,
                path=path,
            )
        if status == 400 and _PLAIN_TO_TLS in detail:
            return ClientSettingsError(
                f"{self.address} is a TLS listener ({where} answered 400: {detail}): "
                "use https:// in BAO_ADDR (or --address)",
                status=status,
                path=path,
            )
        if status == 400:
            return ApiError(
                f"the server refused {where} (400): {detail or 'no reason given'}",
                status=status,
                path=path,
            )
        if status == 404:
            return ApiError(
                f"not found (404): {where}" + (f": {detail}" if detail else ""),
                status=status,
                path=path,
            )
        if status == 429:
            return ApiError(
                f"the server rate-limited {where} (429): retry later, or raise the "
                "rate limit quota that applies to this token",
                status=status,
                path=path,
            )
        if status >= 500:
            return ApiError(
                f"server error {status} on {where}: {detail or response.reason_phrase}",
                status=status,
                path=path,
            )
        return ApiError(
            f"{where} failed with {status}: {detail or response.reason_phrase}",
            status=status,
            path=path,
        )

    # --- the plugin catalog (root namespace) ----------------------------------------

    def list_catalog(self) -> list[dict[str, Any]]:
        """Every catalog entry: {type, name, version, builtin, deprecation_status}."""
        answer = self._send("GET", "sys/plugins/catalog", namespace=False)
        detailed = _data(answer).get("detailed") or []
        return [dict(entry) for entry in detailed if isinstance(entry, dict)]

    def read_plugin(self, type: str, name: str, version: str) -> dict[str, Any]:
        """One catalog entry with its sha256, command and args (never env)."""
        answer = self._send(
            "GET",
            f"sys/plugins/catalog/{_segment(type)}/{_segment(name)}",
            namespace=False,
            params={"version": version} if version else None,
        )
        return _data(answer)

    def register_plugin(
        self,
        type: str,
        name: str,
        version: str,
        command: str,
        sha256: str,
        args: list[str],
        env: dict[str, str],
    ) -> None:
        """Register (or re-register) one catalog entry."""
        body: dict[str, Any] = {
            "sha256": sha256,
            "command": command,
            "version": version,
            "args": list(args),
            "env": [f"{key}={value}" for key, value in env.items()],
        }
        for value in env.values():
            _remember_secret(value)
        self._send(
            "PUT",
            f"sys/plugins/catalog/{_segment(type)}/{_segment(name)}",
            json=body,
            namespace=False,
        )

    def deregister_plugin(self, type: str, name: str, version: str) -> None:
        """Remove one catalog entry (the server answers 204 even when a mount uses it)."""
        self._send(
            "DELETE",
            f"sys/plugins/catalog/{_segment(type)}/{_segment(name)}",
            namespace=False,
            params={"version": version} if version else None,
        )

    def list_pins(self) -> list[dict[str, Any]]:
        """Vault's pinned plugin versions; always empty on OpenBao, which has no pins.

        Untested: written from Vault's API documentation.
        """
        if not self.flavour.has_pins:
            return []
        answer = self._send("GET", "sys/plugins/pins", namespace=False)
        pins = _data(answer).get("pinned_versions") or []
        return [dict(pin) for pin in pins if isinstance(pin, dict)]

    # --- mounts (in the namespace) ------------------------------------------------------

    def list_mounts(self, kind: MountKind) -> dict[str, dict[str, Any]]:
        """The mount table of `kind` ("secret" or "auth"): path → entry, as the server has it."""
        answer = self._send("GET", _table(kind))
        return {
            str(path): dict(entry)
            for path, entry in _data(answer).items()
            if isinstance(entry, dict)
        }

    def enable_mount(self, kind: MountKind, path: str, body: dict[str, Any]) -> None:
        """Enable a secrets engine or auth method at `path` (body as sys/mounts takes it)."""
        self._send(
            "POST",
            f"{_table(kind)}/{_mount_segment(path)}",
            json=body,
            done_if=lambda error: error.status == 400 and "already in use" in str(error),
        )

    def tune_mount(self, kind: MountKind, path: str, body: dict[str, Any]) -> None:
        """Tune a mount: description, TTLs, options, plugin_version, …"""
        self._send("POST", f"{_table(kind)}/{_mount_segment(path)}/tune", json=body)

    def disable_mount(self, kind: MountKind, path: str) -> None:
        """Disable a mount: this destroys its data."""
        self._send("DELETE", f"{_table(kind)}/{_mount_segment(path)}")

    def remount(self, kind: MountKind, from_path: str, to_path: str) -> None:
        """Move a mount with its data (sys/remount), waiting until the move is done."""
        source, target = _api_mount_path(kind, from_path), _api_mount_path(kind, to_path)
        answer = self._send(
            "POST",
            "sys/remount",
            json={"from": source, "to": target},
            done_if=lambda error: error.status == 400 and self._moved(kind, from_path, to_path),
        )
        migration = _data(answer).get("migration_id") or answer.get("migration_id")
        if migration:
            self._wait_for_move(str(migration), source, target)

    def _moved(self, kind: MountKind, from_path: str, to_path: str) -> bool:
        """Whether a move whose answer was lost took place (a retry meets "no matching mount")."""
        try:
            mounts = self.list_mounts(kind)
        except ApiError:
            return False
        return to_path.strip("/") + "/" in mounts and from_path.strip("/") + "/" not in mounts

    def _wait_for_move(self, migration: str, source: str, target: str) -> None:
        deadline = time.monotonic() + self.remount_timeout
        pause = 0.02
        while True:
            answer = self._send("GET", f"sys/remount/status/{_segment(migration)}")
            info = _data(answer).get("migration_info") or {}
            status = str(info.get("status", "")) if isinstance(info, dict) else ""
            if status == "success":
                return
            if status == "failure":
                raise ApiError(
                    f"the server could not move {source} to {target} (migration {migration}): "
                    "see the server log for the reason",
                    path="sys/remount",
                )
            if time.monotonic() >= deadline:
                raise ApiError(
                    f"moving {source} to {target} is still in progress after "
                    f"{self.remount_timeout:.0f}s: check sys/remount/status/{migration}",
                    path="sys/remount",
                )
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def reload_backend(
        self, mounts: list[str] | None = None, plugin: str | None = None, scope: str = ""
    ) -> dict[str, Any]:
        """Reload mounts (auth ones as `auth/<path>`) or every mount of a plugin.

        Sent in the client's namespace: the server resolves both `mounts` and `plugin`
        there, and a root-namespace reload naming `ns/path/` answers 200 but reloads
        nothing.
        """
        if (mounts is None) == (plugin is None):
            raise ValueError("reload_backend needs either mounts or plugin")
        body: dict[str, Any] = {"mounts": list(mounts)} if mounts is not None else {}
        if plugin is not None:
            body["plugin"] = plugin
        if scope:
            body["scope"] = scope
        # The server restarts every named mount's plugin before it answers: with many
        # external mounts that takes longer than an ordinary request may.
        answer = self._send(
            "POST", "sys/plugins/reload/backend", json=body, read_timeout=_RELOAD_TIMEOUT
        )
        for warning in answer.get("warnings") or []:
            log.warning("reload: %s", redact(str(warning)))
        return _data(answer)

    def probe_mount(self, kind: MountKind, path: str) -> None:
        """Raise ApiError unless a request through the mount reaches a working backend.

        A help request costs the backend nothing and needs no capability; any answer
        from the backend itself (even "unsupported operation") proves it runs, while
        the router answers 404 "backend is nil" for a mount whose plugin failed.
        """
        api_path = _api_mount_path(kind, path)
        try:
            self._send("GET", api_path.rstrip("/"), params={"help": "1"})
        except ApiError as error:
            if error.status is None or error.status >= 500 or error.status == 403:
                raise
            if error.status != 404:
                return
            answer = _after_colon(str(error))
            if "route entry not found" in answer:
                raise ApiError(
                    f"nothing is mounted at {api_path} ({answer})", status=404, path=api_path
                ) from None
            raise ApiError(
                f"{api_path} has no working backend ({answer}): fix or re-register its "
                "plugin, then reload the mount (sys/plugins/reload/backend); the server log "
                "says why the plugin did not start",
                status=error.status,
                path=api_path,
            ) from None

    # --- the server and the token --------------------------------------------------------

    def server_identity(self) -> ServerIdentity:
        """Address, namespace and cluster id: what a plan is bound to."""
        status = self._send("GET", "sys/seal-status", namespace=False)
        if status.get("sealed"):
            raise Sealed(
                f"the server at {self.address} is sealed: unseal it (`bao operator unseal`) "
                "and retry",
                status=503,
                path="sys/seal-status",
            )
        self._flavour = detect_flavour(status)
        cluster_id = str(status.get("cluster_id") or "")
        if not cluster_id:
            health = self._send("GET", "sys/health", namespace=False)
            cluster_id = str(health.get("cluster_id") or "")
        return ServerIdentity(address=self.address, namespace=self.namespace, cluster_id=cluster_id)

    @property
    def flavour(self) -> Flavour:
        """OpenBao or Vault, read from sys/seal-status once."""
        if self._flavour is None:
            self._flavour = detect_flavour(self._send("GET", "sys/seal-status", namespace=False))
        return self._flavour

    def lookup_self(self) -> dict[str, Any]:
        """The token's own properties (ttl, renewable, policies…), without the token itself."""
        data = _data(self._send("GET", "auth/token/lookup-self"))
        return {key: value for key, value in data.items() if key != "id"}

    def renew_self(self) -> dict[str, Any]:
        """Renew the token; its new lease (ttl, renewable), without the token itself."""
        answer = self._send("POST", "auth/token/renew-self", json={})
        auth = answer.get("auth") or {}
        return {key: value for key, value in auth.items() if key != "client_token"}


# --- helpers ----------------------------------------------------------------------------


@functools.cache
def _default_tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds; one context serves every client.
    return httpx.create_ssl_context()


def _setting(env: Mapping[str, str], name: str) -> str | None:
    """BAO_<name>, else VAULT_<name>; an empty value counts as unset."""
    for prefix in ("BAO_", "VAULT_"):
        value = env.get(prefix + name, "").strip()
        if value:
            return value
    return None


def _parse_bool(name: str, value: str) -> bool:
    # The same spellings as Go's strconv.ParseBool, which the bao/vault CLI uses.
    if value in {"1", "t", "T", "true", "TRUE", "True"}:
        return True
    if value in {"0", "f", "F", "false", "FALSE", "False"}:
        return False
    raise ClientSettingsError(f"BAO_{name}={value!r} is not a boolean: use true or false")


def _timeout_setting(env: Mapping[str, str]) -> float:
    value = _setting(env, "CLIENT_TIMEOUT")
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise ClientSettingsError(f"BAO_CLIENT_TIMEOUT: {error}") from None
    if seconds <= 0:
        raise ClientSettingsError("BAO_CLIENT_TIMEOUT must be more than 0")
    return float(seconds)


def _max_retries(value: str) -> int:
    if not value.isdigit():
        raise ClientSettingsError(f"BAO_MAX_RETRIES={value!r} must be a number (e.g. 3)")
    return int(value)


def _read_token(token_file: Path | None, env: Mapping[str, str]) -> str:
    if token_file is not None:
        return _token_from_file(token_file, "--token-file")
    token = _setting(env, "TOKEN")
    if token:
        return token
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    default = home / ".vault-token"
    if default.is_file():
        return _token_from_file(default, "~/.vault-token")
    raise ClientSettingsError(
        "no token: set BAO_TOKEN (or VAULT_TOKEN), pass --token-file, or log in with "
        "`bao login` (which writes ~/.vault-token)"
    )


def _token_from_file(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ClientSettingsError(
            f"cannot read the token file {path} ({what}): {error.strerror or error}"
        ) from None
    except UnicodeDecodeError:
        raise ClientSettingsError(
            f"the token file {path} ({what}) is not text: it should hold only the token"
        ) from None
    token = text.strip()
    if not token:
        raise ClientSettingsError(f"the token file {path} ({what}) is empty")
    return token


def _check_token(token: str) -> str:
    token = token.strip()
    if not token:
        raise ClientSettingsError("the token is empty: set BAO_TOKEN or pass --token-file")
    # A header value must be visible ASCII; the message must not quote the token.
    if not all(33 <= ord(char) < 127 for char in token):
        raise ClientSettingsError(
            "the token holds spaces or characters an HTTP header cannot carry: check "
            "BAO_TOKEN or the token file for stray bytes"
        )
    return token


def _check_address(address: str) -> str:
    address = address.strip().rstrip("/")
    if address.startswith("unix://"):
        raise ClientSettingsError(
            f"unix socket addresses ({address}) are not supported: use http:// or https://"
        )
    if not address.startswith(("http://", "https://")):
        raise ClientSettingsError(
            f"invalid server address {address!r}: BAO_ADDR (or --address) must start with "
            "https:// or http://, e.g. https://127.0.0.1:8200"
        )
    try:
        host = httpx.URL(address).host
    except httpx.InvalidURL as error:
        raise ClientSettingsError(f"invalid server address {address!r}: {error}") from None
    if not host:
        raise ClientSettingsError(f"invalid server address {address!r}: no host")
    return address


def _tls_settings(address: str, env: Mapping[str, str]) -> ssl.SSLContext | bool:
    """True (verify against the default CA bundle) or a context built from BAO_* settings."""
    cacert, capath = _setting(env, "CACERT"), _setting(env, "CAPATH")
    client_cert, client_key = _setting(env, "CLIENT_CERT"), _setting(env, "CLIENT_KEY")
    skip = _setting(env, "SKIP_VERIFY")
    skip_verify = _parse_bool("SKIP_VERIFY", skip) if skip else False
    if not (cacert or capath or client_cert or skip_verify) or address.startswith("http://"):
        return True
    try:
        context = ssl.create_default_context(cafile=cacert, capath=capath)
    except (OSError, ssl.SSLError) as error:
        source = f"BAO_CACERT={cacert}" if cacert else f"BAO_CAPATH={capath}"
        raise ClientSettingsError(
            f"cannot load the CA certificates of {source}: {_reason(error)}: point it at a "
            "PEM file (or directory) of CA certificates"
        ) from None
    if skip_verify:
        log.warning("TLS verification is off (BAO_SKIP_VERIFY): use it only for test servers")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as error:
            raise ClientSettingsError(
                f"cannot load the client certificate BAO_CLIENT_CERT={client_cert}: "
                f"{_reason(error)}"
            ) from None
    return context


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    for cause in _causes(exc):
        if isinstance(cause, kind):
            return cause
    return None


def _reason(exc: BaseException) -> str:
    """The most specific message in the exception's cause chain."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    text = str(exc).strip()
    return text or type(exc).__name__


def _server_messages(response: httpx.Response) -> list[str]:
    """The server's `errors` list, with Go's multierror wrapping taken off."""
    try:
        body = response.json()
    except ValueError:
        # Go's TLS listener answers a plain-HTTP request in plain text.
        first_line = response.text.strip().split("\n", 1)[0]
        return [first_line[:200]] if _PLAIN_TO_TLS in first_line else []
    errors = body.get("errors") if isinstance(body, dict) else None
    messages: list[str] = []
    for item in errors or []:
        text = str(item).strip()
        lines = [line.strip().removeprefix("* ") for line in text.splitlines()]
        lines = [line for line in lines if line and not line.endswith("occurred:")]
        messages.extend(lines or [text])
    return [message for message in messages if message]


def _capability(method: str, path: str) -> str:
    capability = {"GET": "'read'", "LIST": "'list'", "DELETE": "'delete'"}.get(
        method.upper(), "'update'"
    )
    # The sys/ paths the server marks as root-protected need sudo as well.
    if path.startswith(("sys/auth/", "sys/remount", "sys/plugins/catalog/")):
        capability += " and 'sudo'"
    return capability


def _data(answer: dict[str, Any]) -> dict[str, Any]:
    data = answer.get("data")
    return data if isinstance(data, dict) else {}


def _after_colon(message: str) -> str:
    return message.split(": ", 1)[-1]


def _segment(value: str) -> str:
    return quote(value, safe="")


def _mount_segment(path: str) -> str:
    return quote(path.strip("/"), safe="/")


def _table(kind: MountKind) -> str:
    return "sys/auth" if kind == "auth" else "sys/mounts"


def _api_mount_path(kind: MountKind, path: str) -> str:
    """`path/` for a secrets engine, `auth/path/` for an auth method."""
    path = path.strip("/") + "/"
    return f"auth/{path}" if kind == "auth" else path
