"""Send one request with retries, and turn every failure into an `ApiError` with a fix.

This is the one place where an HTTP status or a transport failure becomes an error:
whether it is worth retrying is `ReconcilerError.retryable` (from
`errors.retryable_status`), and the wait between attempts is `backoff.backoff_delay`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from reconciler.backoff import backoff_delay
from reconciler.client._redact import redact
from reconciler.errors import (
    ApiError,
    ClientSettingsError,
    ConnectionFailed,
    OutcomeUnknown,
    PermissionDenied,
    PluginFileMissing,
    Sealed,
)

log = logging.getLogger("reconciler.client")

# An address that does not answer must fail fast even when requests may take long.
_CONNECT_TIMEOUT = 10.0
# What a Go TLS listener answers to a plain-HTTP request.
_PLAIN_TO_TLS = "HTTP request to an HTTPS server"
# A catalog entry's file is missing from the answering node's plugin directory (500).
_COMMAND_PATH = "error while validating the command path"

EventHooks = Mapping[str, list[Callable[..., Any]]]
_E = TypeVar("_E", bound=BaseException)


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


# Asks a standby to answer itself instead of handing the request to the active node.
NO_FORWARDING_HEADER = "X-Vault-No-Request-Forwarding"


class Transport:
    """One pooled HTTP connection set to one server, in one namespace; thread-safe."""

    def __init__(
        self,
        address: str,
        token: str,
        *,
        namespace: str,
        verify: ssl.SSLContext | bool,
        timeout: float,
        retry: RetryPolicy,
        transport: httpx.BaseTransport | None,
        event_hooks: EventHooks | None,
        pinned: bool = False,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.retry = retry
        self.http = httpx.Client(
            base_url=address,
            headers={
                "X-Vault-Token": token,
                "X-Vault-Request": "true",
                # A pinned transport talks to one node only: the node answers itself or
                # redirects, and a redirect is not followed.
                **({NO_FORWARDING_HEADER: "true"} if pinned else {}),
            },
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, _CONNECT_TIMEOUT)),
            transport=transport,
            event_hooks=dict(event_hooks or {}),
            # Standby nodes redirect to the active node, as the CLI follows.
            follow_redirects=not pinned,
            max_redirects=5,
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self.http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        namespace: bool | str = True,
        params: Mapping[str, str] | None = None,
        done_if: Callable[[ApiError], bool] | None = None,
        read_timeout: float | None = None,
        send_once: bool = False,
    ) -> dict[str, Any]:
        """`METHOD /v1/<path>`; the JSON answer ({} for 204). Retryable failures retry.

        `namespace=False` sends the request to the root namespace, a string to that
        namespace (a path from the root; "" is the root). `done_if` recognises
        the error a retry meets when the attempt that timed out had in fact succeeded.
        `send_once` is for requests that must not run twice: once the request may have
        reached the server, a missing answer raises OutcomeUnknown instead of a retry
        (a refused connection, which proves nothing was sent, is still retried).
        """
        timeout = self.http.timeout
        if read_timeout is not None and (timeout.read is None or read_timeout > timeout.read):
            timeout = httpx.Timeout(
                connect=timeout.connect, read=read_timeout, write=timeout.write, pool=timeout.pool
            )
        path = path.lstrip("/")
        target = self._namespace_of(namespace)
        headers = {"X-Vault-Namespace": target} if target else {}
        attempts = max(1, self.retry.attempts)
        for attempt in range(1, attempts + 1):
            try:
                response = self.http.request(
                    method,
                    f"/v1/{path}",
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                error = self._transport_error(exc, method, path)
                if send_once and error.retryable and _may_have_been_sent(exc):
                    raise OutcomeUnknown(
                        f"{error}; {method} /v1/{path} may have been carried out, so it was "
                        "not sent again",
                        path=path,
                    ) from None
            except httpx.TooManyRedirects:
                raise ConnectionFailed(
                    f"{method} /v1/{path} on {self.address} was redirected too often: "
                    "check BAO_ADDR (it should name a node of the cluster)",
                    path=path,
                ) from None
            else:
                if response.is_redirect:
                    raise ApiError(
                        f"{method} /v1/{path}: {self.address} cannot answer it itself "
                        f"(it redirects to {response.headers.get('location', 'the active node')})",
                        status=response.status_code,
                        path=path,
                    )
                if response.status_code < 400:
                    return self._json(response, method, path)
                error = self._http_error(response, method, path, namespace=target)
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
        reason = redact(exception_reason(exc))
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
                f"{self.http.timeout.connect}s: check BAO_ADDR (or --address) and the network"
            )
        elif isinstance(exc, httpx.TimeoutException):
            message = (
                f"the server at {self.address} did not answer {where} within "
                f"{self.http.timeout.read}s: it may be overloaded; raise BAO_CLIENT_TIMEOUT"
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

    def _namespace_of(self, namespace: bool | str) -> str:
        """The X-Vault-Namespace value for `send`'s `namespace` argument ("" for the root)."""
        if isinstance(namespace, str):
            return namespace.strip("/")
        return self.namespace if namespace else ""

    def _held_capabilities(self, path: str, *, namespace: str) -> set[str] | None:
        """The token's capabilities on `path` (sys/capabilities-self), to name exactly the
        missing ones after a 403; None when the server does not say (an invalid token)."""
        headers = {"X-Vault-Namespace": namespace} if namespace else {}
        try:
            response = self.http.request(
                "POST", "/v1/sys/capabilities-self", json={"paths": [path]}, headers=headers
            )
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        capabilities = body.get(path, body.get("capabilities")) if isinstance(body, dict) else None
        if not isinstance(capabilities, list):
            return None
        return {str(c) for c in capabilities}

    def _http_error(
        self, response: httpx.Response, method: str, path: str, *, namespace: str
    ) -> ApiError:
        """The one place where an HTTP error status becomes an ApiError with a fix."""
        status = response.status_code
        messages = [redact(m) for m in _server_messages(response)]
        detail = "; ".join(messages)
        where = f"{method} /v1/{path}"
        if namespace:
            where += f" (namespace {namespace})"
        if status == 403:
            needed = _capabilities_needed(method, path)
            policy_path = f"{namespace}/{path}" if namespace else path
            extra = "" if detail.lower() in {"", "permission denied"} else f" ({detail})"
            held = self._held_capabilities(path, namespace=namespace)
            missing = [c for c in needed if held is not None and not ({c, "root"} & held)]
            if held is not None and "deny" not in held and missing:
                lacks = " and ".join(f"'{c}'" for c in missing)
                has = ", ".join(sorted(held)) or "none"
                why = f"the token lacks the {lacks} capability on {policy_path} (it holds: {has})"
            else:
                lacks = " and ".join(f"'{c}'" for c in needed)
                why = (
                    f"the token lacks the {lacks} capability on {policy_path}, or it is "
                    "invalid or expired"
                )
            return PermissionDenied(
                f"permission denied (403) on {where}{extra}: {why}: grant it in the "
                "token's policy (see the minimal ACL policy in the README) or use another token",
                status=status,
                path=path,
            )
        if status == 503 and "sealed" in detail.lower():
            return sealed_error(self.address, path, status=status)
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
        if status >= 500 and _COMMAND_PATH in detail:
            return PluginFileMissing(
                f"the plugin file is missing on {self.address} ({where} answered {status}: "
                f"{detail}): copy it into that node's plugin directory",
                status=status,
                path=path,
                retryable=False,
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


def sealed_error(address: str, path: str, *, status: int = 503) -> Sealed:
    """The error for a sealed server, whichever call found it sealed."""
    return Sealed(
        f"the server at {address} is sealed: unseal it (`bao operator unseal`) and retry",
        status=status,
        path=path,
    )


def exception_reason(exc: BaseException) -> str:
    """The most specific message in the exception's cause chain."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    text = str(exc).strip()
    return text or type(exc).__name__


def _may_have_been_sent(exc: httpx.TransportError) -> bool:
    """False only when no connection was made, so the server cannot have seen the request."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


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
    # A multi-mount reload repeats one cause per mount: quoted once.
    return list(dict.fromkeys(message for message in messages if message))


def _capabilities_needed(method: str, path: str) -> list[str]:
    capability = {"GET": "read", "LIST": "list", "DELETE": "delete"}.get(method.upper(), "update")
    # The sys/ paths the server marks as root-protected need sudo as well.
    if path.startswith(("sys/auth/", "sys/remount", "sys/plugins/catalog/")):
        return [capability, "sudo"]
    return [capability]
