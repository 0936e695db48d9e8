"""`ldap` stand-ins: external plugins that take the name of the built-in `ldap`
auth method and secrets engine, which OpenBao 2.7 no longer ships.

They do not speak LDAP. They exist so that a mount created on the built-in
(OpenBao ≤ 2.6) can be moved onto an external plugin of the same name and keep
answering after the server upgrade, and so that a test can read what the
built-in left in the mount's storage. Paths, relative to the mount:
- `info` (read): name, version, pid, start time of the process that answers.
- `stored/` and `stored/<folder>/` (list): the keys in the mount's storage.
- `stored/<key>` (read): the JSON stored at `key`, whoever wrote it — the
  built-in's own records included (e.g. `config`, or `user/<name>` for the
  auth method); (write): store a JSON object there.
"""

from __future__ import annotations

from reconciler.demo.examples.plugins.framework import (
    LIST,
    READ,
    UPDATE,
    Backend,
    BackendKind,
    PluginError,
    Request,
    Response,
    Route,
    get_json,
    put_json,
)

NAME = "ldap"
VERSIONS = ("v1.0.0",)


def standin(version: str, kind: BackendKind) -> Backend:
    """The stand-in of kind `kind` ("auth" or "secret") as it behaves in `version`."""
    if version not in VERSIONS:
        raise ValueError(f"{NAME} has no version {version!r}; known: {', '.join(VERSIONS)}")

    def info(request: Request) -> Response:
        return Response(data=plugin.process_info())

    def list_keys(request: Request) -> Response:
        return Response(data={"keys": request.storage.list(request.params.get("folder", ""))})

    def read(request: Request) -> Response | None:
        stored = get_json(request.storage, request.params["key"])
        if stored is None:
            return None
        return Response(data=stored if isinstance(stored, dict) else {"value": stored})

    def write(request: Request) -> None:
        if not request.data:
            raise PluginError("nothing to write: send a JSON object with at least one field")
        put_json(request.storage, request.params["key"], request.data)

    plugin = Backend(
        name=NAME,
        version=version,
        kind=kind,
        description=f"stand-in for the removed built-in {kind} plugin ldap",
        routes=[
            Route("info", {READ: info}),
            Route(r"stored/?(?P<folder>(?:.+/)?)", {LIST: list_keys}),
            Route(r"stored/(?P<key>.*[^/])", {READ: read, UPDATE: write}),
        ],
    )
    return plugin
