"""A small framework for OpenBao/Vault backend plugins written in Python.

A plugin is a `Backend`: a name, a version, a kind (secrets engine or auth
method) and routes that map a path pattern and an operation to a handler.
`serve()` (in `reconciler.demo.examples.plugins.runtime`) speaks the go-plugin
gRPC protocol to the server; this module has no gRPC in it, so a backend can
be exercised in-process with `MemoryStorage`.

Handlers get a `Request` and return a `Response` or `None` (the server answers
204 to a write and 404 to a read that returned nothing). They raise
`PluginError` (HTTP status of the caller's choosing), `PermissionDenied`,
`UnsupportedPath` or `UnsupportedOperation`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

BackendKind = Literal["secret", "auth"]

READ = "read"
CREATE = "create"
UPDATE = "update"
DELETE = "delete"
LIST = "list"
RENEW = "renew"
REVOKE = "revoke"

# Taken when the plugin module is imported, that is when the plugin process
# starts: a reload shows up as a new pid and a later start time.
PROCESS_STARTED = time.time()


class PluginError(Exception):
    """A request failed; the server answers `status` with `message` as the error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class PermissionDenied(PluginError):
    """The server answers 403 "permission denied"."""

    def __init__(self, message: str = "permission denied") -> None:
        super().__init__(message, 403)


class UnsupportedPath(PluginError):
    """No route matches: the server answers 404 "unsupported path"."""

    def __init__(self, path: str = "") -> None:
        super().__init__(f"unsupported path: {path}", 404)


class UnsupportedOperation(PluginError):
    """The route exists but not for this operation: the server answers 405."""

    def __init__(self, operation: str = "") -> None:
        super().__init__(f"unsupported operation: {operation}", 405)


class Storage(Protocol):
    """The mount's storage: keys are paths, values bytes; lists are one level deep."""

    def get(self, key: str) -> bytes | None:
        """The value of `key`, None when absent."""

    def put(self, key: str, value: bytes) -> None:
        """Create or replace `key`."""

    def list(self, prefix: str) -> list[str]:
        """Direct children of `prefix`; sub-folders end with "/"."""

    def delete(self, key: str) -> None:
        """Remove `key`; removing an absent key is not an error."""


class MemoryStorage:
    """A `Storage` in a dict, for running a backend without a server."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.entries.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.entries[key] = bytes(value)

    def list(self, prefix: str) -> list[str]:
        children: set[str] = set()
        for key in self.entries:
            if key.startswith(prefix):
                rest = key[len(prefix) :]
                head, slash, _ = rest.partition("/")
                children.add(head + slash)
        return sorted(children)

    def delete(self, key: str) -> None:
        self.entries.pop(key, None)


def get_json(storage: Storage, key: str) -> Any:
    """The JSON value stored at `key`, None when absent."""
    raw = storage.get(key)
    return None if raw is None else json.loads(raw)


def put_json(storage: Storage, key: str, value: Any) -> None:
    """Store `value` as JSON at `key`."""
    storage.put(key, json.dumps(value, sort_keys=True).encode())


@dataclass
class Auth:
    """What a login hands to the server, which turns it into a token.

    Durations are seconds. On a renew request, `Request.auth` is the auth the
    token was created with; return it (changed with `dataclasses.replace`)
    to extend the token.
    """

    policies: list[str]
    ttl: int = 0
    max_ttl: int = 0
    renewable: bool = True
    display_name: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    internal_data: dict[str, Any] = field(default_factory=dict)
    period: int = 0
    num_uses: int = 0
    issued_at: float | None = None
    # The server's own copy of a renewed auth (token, accessor, entity...),
    # sent back untouched apart from the fields above.
    original: object | None = field(default=None, repr=False, compare=False)


@dataclass
class Response:
    """The answer to a request: data for the caller, an auth for a login."""

    data: dict[str, Any] | None = None
    auth: Auth | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Request:
    """One request routed to the mount; `path` is relative to the mount."""

    operation: str
    path: str
    data: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    mount_point: str = ""
    display_name: str = ""
    unauthenticated: bool = False
    auth: Auth | None = None
    storage_or_none: Storage | None = field(default=None, repr=False)

    @property
    def storage(self) -> Storage:
        """The mount's storage; only missing before the server's Setup call."""
        if self.storage_or_none is None:
            raise PluginError("the plugin has no storage yet (no Setup call)", 500)
        return self.storage_or_none

    def require(self, name: str) -> Any:
        """A request field that must be present and non-empty."""
        value = self.data.get(name)
        if value in (None, "", [], {}):
            raise PluginError(f"missing required field {name!r}")
        return value


Handler = Callable[[Request], Response | None]


@dataclass(frozen=True)
class Route:
    """`pattern` is a regular expression that must match the whole path."""

    pattern: str
    operations: Mapping[str, Handler]
    description: str = ""

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


class Backend:
    """A plugin's behaviour: routes plus what the server asks about the plugin."""

    def __init__(
        self,
        *,
        name: str,
        version: str,
        kind: BackendKind,
        routes: Iterable[Route],
        unauthenticated: Iterable[str] = (),
        description: str = "",
    ) -> None:
        self.name = name
        self.version = version
        self.kind: BackendKind = kind
        self.description = description
        self.routes = list(routes)
        # Exact paths, or prefixes when they end with "*" (the server's syntax).
        self.unauthenticated = list(unauthenticated)
        self.storage: Storage | None = None
        self._compiled = [(route.compiled(), route) for route in self.routes]

    def attach(self, storage: Storage) -> None:
        """Give the backend its mount's storage (done at the server's Setup call)."""
        self.storage = storage

    def handle(self, request: Request) -> Response | None:
        """Route one request; raises `PluginError` and its subclasses."""
        if request.storage_or_none is None:
            request.storage_or_none = self.storage
        for pattern, route in self._compiled:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            handler = _pick(route.operations, request.operation)
            if handler is None:
                raise UnsupportedOperation(request.operation)
            request.params = {k: v for k, v in match.groupdict().items() if v is not None}
            return handler(request)
        raise UnsupportedPath(request.path)

    def process_info(self) -> dict[str, Any]:
        """Which code answers: name, version, process id and start time."""
        started = datetime.fromtimestamp(PROCESS_STARTED, tz=UTC)
        return {
            "name": self.name,
            "version": self.version,
            "pid": os.getpid(),
            "started_at": started.isoformat().replace("+00:00", "Z"),
            "started_unix": PROCESS_STARTED,
        }


def _pick(operations: Mapping[str, Handler], operation: str) -> Handler | None:
    handler = operations.get(operation)
    # The server says "create" or "update" for a write depending on an
    # existence check; a route that only knows one of them takes both.
    if handler is None and operation == CREATE:
        handler = operations.get(UPDATE)
    if handler is None and operation == UPDATE:
        handler = operations.get(CREATE)
    return handler


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_seconds(value: Any, field_name: str) -> int:
    """A duration given as seconds (int or digits) or as `90s`, `15m`, `1h`, `2d`."""
    if isinstance(value, bool):
        raise PluginError(f"{field_name}: not a duration: {value!r}")
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise PluginError(f"{field_name}: not a duration: {value!r}")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise PluginError(f"{field_name}: must not be negative")
    return seconds


def string_list(value: Any, field_name: str) -> list[str]:
    """A list of strings given as a JSON list or a comma-separated string."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise PluginError(f"{field_name}: expected a list of strings or a comma-separated string")
    return [item.strip() for item in items if item.strip()]
