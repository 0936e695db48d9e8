"""`transit` (v1.0.0): an external plugin registered under a built-in's name.

Registering it in the catalog overrides the built-in transit engine for
mounts pinned to its version. It is not a transit implementation: it only
shows which code answers.

Paths, relative to the mount:
- `info` (read): name, version, pid, start time, and
  `engine: "external transit"` (the built-in has no `info` path).
- `keys/<name>` (write, read, delete): a key record `name`, `type` (default
  `aes256-gcm96`), `created_at`; no key material.
- `keys/` (list): `keys`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.demo.examples.plugins.framework import (
    DELETE,
    LIST,
    READ,
    UPDATE,
    Backend,
    Request,
    Response,
    Route,
    get_json,
    put_json,
)

NAME = "transit"
VERSIONS = ("v1.0.0",)
ENGINE = "external transit"
_KEYS = "keys/"


def backend(version: str) -> Backend:
    """The external transit backend as it behaves in `version`."""
    if version not in VERSIONS:
        raise ValueError(f"{NAME} has no version {version!r}; known: {', '.join(VERSIONS)}")

    def info(request: Request) -> Response:
        return Response(data={**transit.process_info(), "engine": ENGINE})

    def read_key(request: Request) -> Response | None:
        record = get_json(request.storage, _KEYS + request.params["name"])
        return None if record is None else Response(data={**record, "engine": ENGINE})

    def write_key(request: Request) -> None:
        name = request.params["name"]
        current = get_json(request.storage, _KEYS + name) or {}
        record = {
            "name": name,
            "type": str(request.data.get("type") or current.get("type") or "aes256-gcm96"),
            "created_at": current.get("created_at")
            or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        put_json(request.storage, _KEYS + name, record)

    def delete_key(request: Request) -> None:
        request.storage.delete(_KEYS + request.params["name"])

    def list_keys(request: Request) -> Response:
        return Response(data={"keys": request.storage.list(_KEYS)})

    transit = Backend(
        name=NAME,
        version=version,
        kind="secret",
        description="example external plugin overriding the built-in transit",
        routes=[
            Route("info", {READ: info}),
            Route("keys/?", {LIST: list_keys}),
            Route(r"keys/(?P<name>[^/]+)", {READ: read_key, UPDATE: write_key, DELETE: delete_key}),
        ],
    )
    return transit
