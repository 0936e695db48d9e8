"""Connection settings from arguments and the environment, as the `bao`/`vault` CLI reads them.

`BAO_ADDR` or `VAULT_ADDR`, the token from `BAO_TOKEN`/`VAULT_TOKEN` or `~/.vault-token`,
`BAO_NAMESPACE`, `BAO_CACERT`, `BAO_CAPATH`, `BAO_CLIENT_CERT`/`BAO_CLIENT_KEY`,
`BAO_SKIP_VERIFY`, `BAO_CLIENT_TIMEOUT` and `BAO_MAX_RETRIES` (each also with the
`VAULT_` prefix; `BAO_` wins). Arguments win over the environment. TLS is verified
unless told otherwise. No message quotes the token.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from reconciler.client._transport import RetryPolicy, exception_reason
from reconciler.defaults import CLIENT_TIMEOUT
from reconciler.durations import parse_seconds
from reconciler.errors import ClientSettingsError

log = logging.getLogger("reconciler.client")

DEFAULT_ADDRESS = "https://127.0.0.1:8200"
DEFAULT_TIMEOUT = CLIENT_TIMEOUT


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to talk to one server, checked; `verify` is True or a TLS context."""

    address: str
    token: str
    namespace: str
    verify: ssl.SSLContext | bool
    timeout: float
    retry: RetryPolicy


def settings_from_environment(
    address: str | None,
    token: str | None,
    token_file: Path | None,
    namespace: str | None,
    *,
    environ: Mapping[str, str],
    timeout: float | None,
    retry: RetryPolicy | None,
) -> ConnectionSettings:
    """The settings the arguments give, the environment filling in what they leave out.

    The token comes from `token`, else `token_file`, else BAO_TOKEN/VAULT_TOKEN, else
    `~/.vault-token`.
    """
    address = address or _setting(environ, "ADDR") or DEFAULT_ADDRESS
    if namespace is None:
        namespace = _setting(environ, "NAMESPACE") or ""
    if token is None:
        token = _read_token(token_file, environ)
    if timeout is None:
        timeout = _timeout_setting(environ)
    if retry is None:
        retries = _setting(environ, "MAX_RETRIES")
        retry = RetryPolicy(attempts=_max_retries(retries) + 1) if retries else RetryPolicy()
    return ConnectionSettings(
        address=address,
        token=token,
        namespace=namespace,
        verify=_tls_settings(address, environ),
        timeout=timeout,
        retry=retry,
    )


def check_address(address: str) -> str:
    """The address without a trailing slash; ClientSettingsError unless http(s)://host."""
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


def check_token(token: str) -> str:
    """The token without surrounding blanks; ClientSettingsError if a header cannot carry it."""
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


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The TLS context that verifies against the default CA bundle, shared by every client."""
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
        seconds = parse_seconds(value)
    except ValueError as error:
        raise ClientSettingsError(f"BAO_CLIENT_TIMEOUT: {error}") from None
    if seconds <= 0:
        raise ClientSettingsError("BAO_CLIENT_TIMEOUT must be more than 0")
    return seconds


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
            f"cannot load the CA certificates of {source}: {exception_reason(error)}: point it "
            "at a PEM file (or directory) of CA certificates"
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
                f"{exception_reason(error)}"
            ) from None
    return context
