"""`demo-kv`: an external key/value secrets engine (versions v1.0.0 and v2.0.0).

Paths, relative to the mount:
- `info` (read): name, version, pid, start time of the process that answers;
  v2 adds `engine: "demo-kv v2"`.
- `data/<key>` (write, read, delete): a JSON object per key, kept in the
  mount's storage (so it survives reloads and upgrades); v2 adds
  `engine: "demo-kv v2"` to what a read returns. Keys may contain "/".
- `data/` and `data/<folder>/` (list): `keys`, folders ending with "/".
"""

from __future__ import annotations

from reconciler.demo.examples.plugins.framework import (
    DELETE,
    LIST,
    READ,
    UPDATE,
    Backend,
    PluginError,
    Request,
    Response,
    Route,
    get_json,
    put_json,
)

NAME = "demo-kv"
VERSIONS = ("v1.0.0", "v2.0.0")
_DATA = "data/"


def backend(version: str) -> Backend:
    """The demo-kv backend as it behaves in `version`."""
    if version not in VERSIONS:
        raise ValueError(f"{NAME} has no version {version!r}; known: {', '.join(VERSIONS)}")
    major = version.lstrip("v").split(".", 1)[0]
    marker = {"engine": f"{NAME} v{major}"} if major != "1" else {}

    def info(request: Request) -> Response:
        return Response(data={**kv.process_info(), **marker})

    def read(request: Request) -> Response | None:
        stored = get_json(request.storage, _DATA + request.params["key"])
        if stored is None:
            return None
        return Response(data={**stored, **marker})

    def write(request: Request) -> None:
        if not request.data:
            raise PluginError("nothing to write: send a JSON object with at least one field")
        put_json(request.storage, _DATA + request.params["key"], request.data)

    def delete(request: Request) -> None:
        request.storage.delete(_DATA + request.params["key"])

    def list_keys(request: Request) -> Response:
        prefix = request.params.get("folder", "")
        return Response(data={"keys": request.storage.list(_DATA + prefix)})

    kv = Backend(
        name=NAME,
        version=version,
        kind="secret",
        description="example key/value secrets engine",
        routes=[
            Route("info", {READ: info}),
            Route(r"data/?(?P<folder>(?:.+/)?)", {LIST: list_keys}),
            Route(r"data/(?P<key>.*[^/])", {READ: read, UPDATE: write, DELETE: delete}),
        ],
    )
    return kv
