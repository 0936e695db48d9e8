"""Empty the session's dev server between tests (and between benchmark sections)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from reconciler.demo.devserver import DevServerError

# Mounts the server owns; everything else goes on reset.
_RESERVED_MOUNTS = {"sys/mounts": {"sys/", "identity/", "cubbyhole/"}, "sys/auth": {"token/"}}


def reset_server(
    address: str, token: str, *, timeout: float = 30.0, keep_catalog: bool = False
) -> None:
    """Return a dev server to an empty state: no namespaces, no mounts but the server's own
    (the dev `secret/` goes too), no external catalog entries (unless `keep_catalog`: each
    register starts the plugin's process once, to ask its version)."""
    # No TLS context for a plain-HTTP server: building one costs more than the reset.
    verify = not address.startswith("http://")
    with httpx.Client(
        base_url=address, headers={"X-Vault-Token": token}, timeout=timeout, verify=verify
    ) as http:

        def ok(answer: httpx.Response) -> httpx.Response:
            if answer.status_code >= 400:
                raise DevServerError(
                    f"reset: {answer.request.method} {answer.request.url.path} answered "
                    f"{answer.status_code}: {answer.text.strip()}"
                )
            return answer

        _remove_namespaces(http, ok, timeout)
        for table, reserved in _RESERVED_MOUNTS.items():
            for path in ok(http.get(f"/v1/{table}")).json()["data"]:
                if path not in reserved:
                    ok(http.delete(f"/v1/{table}/{path.rstrip('/')}"))
        if keep_catalog:
            return
        catalog = ok(http.get("/v1/sys/plugins/catalog")).json()["data"]
        for entry in catalog.get("detailed") or []:
            if not entry.get("builtin"):
                params = {"version": entry["version"]} if entry.get("version") else None
                ok(
                    http.delete(
                        f"/v1/sys/plugins/catalog/{entry['type']}/{entry['name']}",
                        params=params,
                    )
                )


def _remove_namespaces(
    http: httpx.Client, ok: Callable[[httpx.Response], httpx.Response], timeout: float
) -> None:
    """Delete every namespace, deepest first: the server refuses to delete one with children."""
    deadline = time.monotonic() + timeout
    while True:
        found = _namespaces_below(http, ok, "")
        if not found:
            return
        for path in sorted(found, key=lambda p: (-p.count("/"), p)):
            parent, _, name = path.rpartition("/")
            # Deletion is asynchronous; asking again while it runs is harmless, and a parent
            # whose children are still going is deleted on a later round.
            answer = http.delete(
                f"/v1/sys/namespaces/{name}", headers={"X-Vault-Namespace": parent}
            )
            if answer.status_code >= 400 and "child namespaces" not in answer.text:
                ok(answer)
        if time.monotonic() > deadline:
            raise DevServerError(f"reset: namespaces {found} still exist after {timeout:.0f}s")
        time.sleep(0.02)


def _namespaces_below(
    http: httpx.Client, ok: Callable[[httpx.Response], httpx.Response], parent: str
) -> list[str]:
    """Every namespace below `parent`, as paths from the root without slashes at the ends."""
    answer = http.request("LIST", "/v1/sys/namespaces", headers={"X-Vault-Namespace": parent})
    if answer.status_code == 404:  # no children
        return []
    keys = ok(answer).json()["data"].get("keys") or []
    found = []
    for key in keys:
        path = f"{parent}/{key.strip('/')}".strip("/")
        found += [path, *_namespaces_below(http, ok, path)]
    return found
