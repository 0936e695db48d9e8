"""The `sys/` calls the reconciler makes, one method per endpoint.

Mount calls (the mount tables, enable, tune, disable, move, reload, probe)
carry the namespace; catalog calls go to the root namespace, where the catalog
lives. Sending, retrying and turning failures into errors is `_transport`'s job.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from reconciler.backoff import backoff_delay
from reconciler.client._flavour import Flavour, detect_flavour
from reconciler.client._redact import redact, remember_secret
from reconciler.client._settings import (
    DEFAULT_TIMEOUT,
    check_address,
    check_token,
    default_tls_context,
    settings_from_environment,
)
from reconciler.client._transport import EventHooks, RetryPolicy, Transport, sealed_error
from reconciler.errors import ApiError
from reconciler.model import MountKind, ServerIdentity
from reconciler.resolver import api_path

log = logging.getLogger("reconciler.client")

_REMOUNT_TIMEOUT = 300.0
_RELOAD_TIMEOUT = 600.0
# A move of a small mount finishes within milliseconds; a large one is polled less often.
_MOVE_POLL_INITIAL = 0.02
_MOVE_POLL_CAP = 1.0


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
        pinned: bool = False,
    ) -> None:
        address = check_address(address)
        token = check_token(token)
        self.remount_timeout = remount_timeout
        # What on_node() needs to open a client for another node with the same settings.
        self._token = token
        self._verify = verify
        self._timeout = timeout
        self._transport_override = transport
        self._event_hooks = event_hooks
        remember_secret(token)
        self._flavour: Flavour | None = None
        self._transport = Transport(
            address,
            token,
            namespace=namespace.strip("/"),
            verify=default_tls_context() if verify is True else verify,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            transport=transport,
            event_hooks=event_hooks,
            pinned=pinned,
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
        settings = settings_from_environment(
            address,
            token,
            token_file,
            namespace,
            environ=os.environ if environ is None else environ,
            timeout=timeout,
            retry=retry,
        )
        return cls(
            settings.address,
            settings.token,
            namespace=settings.namespace,
            verify=settings.verify,
            timeout=settings.timeout,
            retry=settings.retry,
            transport=transport,
            event_hooks=event_hooks,
        )

    @property
    def address(self) -> str:
        """The server's address, without a trailing slash."""
        return self._transport.address

    @property
    def namespace(self) -> str:
        """The namespace mount calls go to ("" for the root namespace)."""
        return self._transport.namespace

    @property
    def retry(self) -> RetryPolicy:
        """How retryable failures are retried."""
        return self._transport.retry

    def __repr__(self) -> str:
        namespace = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"Client({self.address!r}{namespace})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def on_node(self, address: str) -> Client:
        """A client for one node of a cluster whose requests stay on that node.

        A standby answers reads itself (its own catalog copy, mount tables and plugin
        processes) instead of forwarding them to the active node; a request only the
        active can answer fails instead of being redirected.
        """
        return Client(
            address,
            self._token,
            namespace=self.namespace,
            verify=self._verify,
            timeout=self._timeout,
            retry=self.retry,
            transport=self._transport_override,
            event_hooks=self._event_hooks,
            pinned=True,
        )

    def ha_status(self) -> list[dict[str, Any]]:
        """sys/ha-status: every node of an HA cluster (api_address, active_node, version…).

        Answered by the active node (standbys forward it). A server without HA storage
        answers with no nodes or an error; callers treat both as a single node.
        """
        answer = self._transport.send("GET", "sys/ha-status", namespace=False)
        nodes = answer.get("nodes") or _data(answer).get("nodes") or []
        return [dict(node) for node in nodes if isinstance(node, dict)]

    # --- the generic request ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        namespace: bool | str = True,
        *,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send `METHOD /v1/<path>`; the JSON answer ({} for 204). Retryable failures retry.

        `namespace=False` sends the request to the root namespace, a string to that
        namespace (a path from the root).
        """
        return self._transport.send(method, path, json=json, namespace=namespace, params=params)

    # --- the plugin catalog (root namespace) ----------------------------------------

    def list_catalog(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every catalog entry: {type, name, version, builtin, sha256, deprecation_status}.

        Read at the root, or through `namespace` for a token scoped to it: the list is the
        root's catalog either way (reading one entry is only possible at the root).
        """
        answer = self._transport.send(
            "GET", "sys/plugins/catalog", namespace=False if namespace is None else namespace
        )
        detailed = _data(answer).get("detailed") or []
        return [dict(entry) for entry in detailed if isinstance(entry, dict)]

    def read_plugin(self, type: str, name: str, version: str) -> dict[str, Any]:
        """One catalog entry with its sha256, command and args (never env)."""
        answer = self._transport.send(
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
            remember_secret(value)
        self._transport.send(
            "PUT",
            f"sys/plugins/catalog/{_segment(type)}/{_segment(name)}",
            json=body,
            namespace=False,
        )

    def deregister_plugin(self, type: str, name: str, version: str) -> None:
        """Remove one catalog entry (the server answers 204 even when a mount uses it)."""
        self._transport.send(
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
        answer = self._transport.send("GET", "sys/plugins/pins", namespace=False)
        pins = _data(answer).get("pinned_versions") or []
        return [dict(pin) for pin in pins if isinstance(pin, dict)]

    # --- mounts (in the namespace) ------------------------------------------------------

    def list_namespaces(self, namespace: str = "") -> list[str]:
        """The child namespaces of `namespace` (a path from the root), one level: `sub/` keys.

        The server lists one level only and answers 404 when there is no child.
        """
        try:
            answer = self._transport.send("LIST", "sys/namespaces", namespace=namespace)
        except ApiError as error:
            if error.status == 404:
                return []
            raise
        keys = _data(answer).get("keys") or []
        return sorted(str(key).strip("/") + "/" for key in keys if str(key).strip("/"))

    def create_namespace(self, parent: str, name: str) -> None:
        """Create the child `name` of `parent` (the server creates one level per call)."""
        self._transport.send(
            "POST", f"sys/namespaces/{_segment(name.strip('/'))}", json={}, namespace=parent
        )

    def list_mounts(
        self, kind: MountKind, namespace: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """The mount table of `kind` ("secret" or "auth"): path → entry, as the server has it.

        In the client's namespace, or in `namespace` (a path from the root) when given.
        """
        answer = self._transport.send("GET", _table(kind), namespace=_in(namespace))
        return {
            str(path): dict(entry)
            for path, entry in _data(answer).items()
            if isinstance(entry, dict)
        }

    def enable_mount(
        self, kind: MountKind, path: str, body: dict[str, Any], namespace: str | None = None
    ) -> None:
        """Enable a secrets engine or auth method at `path` (body as sys/mounts takes it)."""
        self._transport.send(
            "POST",
            f"{_table(kind)}/{_mount_segment(path)}",
            json=body,
            namespace=_in(namespace),
            done_if=lambda error: error.status == 400 and "already in use" in str(error),
        )

    def tune_mount(
        self, kind: MountKind, path: str, body: dict[str, Any], namespace: str | None = None
    ) -> None:
        """Tune a mount: description, TTLs, options, plugin_version, …"""
        self._transport.send(
            "POST",
            f"{_table(kind)}/{_mount_segment(path)}/tune",
            json=body,
            namespace=_in(namespace),
        )

    def disable_mount(self, kind: MountKind, path: str, namespace: str | None = None) -> None:
        """Disable a mount: this destroys its data."""
        self._transport.send(
            "DELETE", f"{_table(kind)}/{_mount_segment(path)}", namespace=_in(namespace)
        )

    def remount(
        self, kind: MountKind, from_path: str, to_path: str, namespace: str | None = None
    ) -> None:
        """Move a mount with its data (sys/remount), waiting until the move is done."""
        source, target = api_path(kind, from_path), api_path(kind, to_path)
        answer = self._transport.send(
            "POST",
            "sys/remount",
            json={"from": source, "to": target},
            namespace=_in(namespace),
            done_if=lambda error: (
                error.status == 400 and self._moved(kind, from_path, to_path, namespace)
            ),
        )
        migration = _data(answer).get("migration_id") or answer.get("migration_id")
        if migration:
            self._wait_for_move(str(migration), source, target, namespace)

    def _moved(
        self, kind: MountKind, from_path: str, to_path: str, namespace: str | None = None
    ) -> bool:
        """Whether a move whose answer was lost took place (a retry meets "no matching mount")."""
        try:
            mounts = self.list_mounts(kind, namespace)
        except ApiError:
            return False
        return to_path.strip("/") + "/" in mounts and from_path.strip("/") + "/" not in mounts

    def _wait_for_move(
        self, migration: str, source: str, target: str, namespace: str | None = None
    ) -> None:
        deadline = time.monotonic() + self.remount_timeout
        polls = 0
        while True:
            answer = self._transport.send(
                "GET", f"sys/remount/status/{_segment(migration)}", namespace=_in(namespace)
            )
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
            polls += 1
            time.sleep(backoff_delay(polls, initial=_MOVE_POLL_INITIAL, cap=_MOVE_POLL_CAP))

    def reload_backend(
        self,
        mounts: list[str] | None = None,
        plugin: str | None = None,
        scope: str = "",
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Reload mounts (auth ones as `auth/<path>`) or every mount of a plugin.

        Raises OutcomeUnknown when the request may have reached the server but no
        answer came back: the caller reads the mounts back instead of reloading again.

        Sent in the client's namespace, or in `namespace` (a path from the root) when
        given, with paths relative to it: the server resolves both `mounts` and `plugin`
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
        # external mounts that takes longer than an ordinary request may. Sent once: a
        # second reload would restart every plugin again while the first may still run.
        answer = self._transport.send(
            "POST",
            "sys/plugins/reload/backend",
            json=body,
            namespace=_in(namespace),
            read_timeout=_RELOAD_TIMEOUT,
            send_once=True,
        )
        for warning in answer.get("warnings") or []:
            log.warning("reload: %s", redact(str(warning)))
        return _data(answer)

    def probe_mount(self, kind: MountKind, path: str, namespace: str | None = None) -> None:
        """Raise ApiError unless a request through the mount reaches a working backend.

        A help request costs the backend nothing and needs no capability; any answer
        from the backend itself (even "unsupported operation") proves it runs, while
        the router answers 404 "backend is nil" for a mount whose plugin failed.
        """
        mount_path = api_path(kind, path)
        try:
            self._transport.send(
                "GET",
                mount_path.rstrip("/"),
                params={"help": "1"},
                namespace=_in(namespace),
            )
        except ApiError as error:
            # Not a retry decision (the transport has retried already): no answer, a
            # server error or a refused token says nothing about the backend.
            if error.status is None or error.status >= 500 or error.status == 403:
                raise
            if error.status != 404:
                return
            answer = _after_colon(str(error))
            if "route entry not found" in answer:
                raise ApiError(
                    f"nothing is mounted at {mount_path} ({answer})", status=404, path=mount_path
                ) from None
            raise ApiError(
                f"{mount_path} has no working backend ({answer}): fix or re-register its "
                "plugin, then reload the mount (sys/plugins/reload/backend); the server log "
                "says why the plugin did not start",
                status=error.status,
                path=mount_path,
            ) from None

    # --- database connections (in the namespace; SPEC §10) -------------------------------

    def list_connections(self, mount: str, namespace: str | None = None) -> list[str]:
        """The connection names of the database mount at `mount` (none when it has none).

        In the client's namespace, or in `namespace` (a path from the root) when given.
        """
        try:
            answer = self._transport.send(
                "LIST", f"{_mount_segment(mount)}/config", namespace=_in(namespace)
            )
        except ApiError as error:
            if error.status == 404:
                return []
            raise
        keys = _data(answer).get("keys") or []
        return [str(key) for key in keys]

    def read_connection(
        self, mount: str, name: str, namespace: str | None = None
    ) -> dict[str, str] | None:
        """{plugin_name, plugin_version} of one connection; None when it does not exist.

        The answer also holds the connection details (`connection_url`, `username`):
        they are remembered as secrets, so no message or log line can show them, and
        dropped here, so nothing above the client ever holds them.
        """
        try:
            answer = self._transport.send(
                "GET",
                f"{_mount_segment(mount)}/config/{_segment(name)}",
                namespace=_in(namespace),
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        data = _data(answer)
        details = data.get("connection_details")
        for value in (details or {}).values() if isinstance(details, dict) else ():
            if isinstance(value, str):
                remember_secret(value)
        return {
            "plugin_name": str(data.get("plugin_name") or ""),
            "plugin_version": str(data.get("plugin_version") or ""),
        }

    def repin_connection(
        self, mount: str, name: str, version: str, namespace: str | None = None
    ) -> None:
        """Pin a connection to `version`, keeping its stored details.

        The server starts the new plugin and initializes it with the stored details,
        verifying the connection (asked for explicitly): a version that cannot start or
        connect is refused with 400 and the old configuration keeps running.
        """
        self._transport.send(
            "POST",
            f"{_mount_segment(mount)}/config/{_segment(name)}",
            json={"plugin_version": version, "verify_connection": True},
            namespace=_in(namespace),
        )

    def reset_connection(self, mount: str, name: str, namespace: str | None = None) -> None:
        """Restart a connection on the binary the catalog names now (it connects at once)."""
        self._transport.send(
            "POST",
            f"{_mount_segment(mount)}/reset/{_segment(name)}",
            json={},
            namespace=_in(namespace),
        )

    def reload_database_plugin(self, mount: str, plugin: str) -> None:
        """Vault only: restart every connection of `mount` that runs `plugin`.

        Untested: written from Vault's API documentation (`<mount>/reload/<plugin>`);
        OpenBao has no such path (404), so on OpenBao this raises ValueError and the
        plan resets connections one by one instead.
        """
        if not self.flavour.has_database_reload:
            raise ValueError(f"{self.flavour.name} has no <mount>/reload/<plugin>")
        self._transport.send("POST", f"{_mount_segment(mount)}/reload/{_segment(plugin)}", json={})

    # --- the server and the token --------------------------------------------------------

    def server_identity(self) -> ServerIdentity:
        """Address, namespace and cluster id: what a plan is bound to."""
        status = self._transport.send("GET", "sys/seal-status", namespace=False)
        if status.get("sealed"):
            raise sealed_error(self.address, "sys/seal-status")
        self._flavour = detect_flavour(status)
        cluster_id = str(status.get("cluster_id") or "")
        if not cluster_id:
            health = self._transport.send("GET", "sys/health", namespace=False)
            cluster_id = str(health.get("cluster_id") or "")
        return ServerIdentity(address=self.address, namespace=self.namespace, cluster_id=cluster_id)

    @property
    def flavour(self) -> Flavour:
        """OpenBao or Vault, read from sys/seal-status once."""
        if self._flavour is None:
            self._flavour = detect_flavour(
                self._transport.send("GET", "sys/seal-status", namespace=False)
            )
        return self._flavour

    def capabilities_self(self, paths: list[str]) -> dict[str, set[str]]:
        """The token's capabilities on each of `paths` (relative to the client's namespace).

        Asks only; the server evaluates the token's policies as it would for a request.
        """
        answer = self._transport.send("POST", "sys/capabilities-self", json={"paths": paths})
        data = _data(answer) or answer
        return {
            path: {str(c) for c in data.get(path) or []}
            for path in paths
            if isinstance(data.get(path), list)
        }

    def lookup_self(self) -> dict[str, Any]:
        """The token's own properties (ttl, renewable, policies…), without the token itself."""
        data = _data(self._transport.send("GET", "auth/token/lookup-self"))
        return {key: value for key, value in data.items() if key != "id"}

    def renew_self(self) -> dict[str, Any]:
        """Renew the token; its new lease (ttl, renewable), without the token itself."""
        answer = self._transport.send("POST", "auth/token/renew-self", json={})
        auth = answer.get("auth") or {}
        return {key: value for key, value in auth.items() if key != "client_token"}


# --- helpers ---------------------------------------------------------------------------


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


def _in(namespace: str | None) -> bool | str:
    """`send`'s namespace argument: the client's namespace for None, else that one."""
    return True if namespace is None else namespace
