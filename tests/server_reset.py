"""Empty the session's dev server between tests (and between benchmark sections)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from reconciler.demo.devserver import DevServerError

# Mounts the server owns; everything else goes on reset.
_RESERVED_MOUNTS = {"sys/mounts": {"sys/", "identity/", "cubbyhole/"}, "sys/auth": {"token/"}}


def reset_server(address: str, token: str, *, timeout: float = 30.0) -> None:
    """Return a dev server to an empty state: no namespaces, no mounts but the server's own
    (the dev `secret/` goes too), no external catalog entries."""
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
    deadline = time.monotonic() + timeout
    while True:
        answer = http.request("LIST", "/v1/sys/namespaces")
        if answer.status_code == 404:  # none left
            return
        keys = ok(answer).json()["data"].get("keys") or []
        if not keys:
            return
        for key in keys:
            # Deletion is asynchronous; asking again while it runs is harmless.
            ok(http.delete(f"/v1/sys/namespaces/{key.rstrip('/')}"))
        if time.monotonic() > deadline:
            raise DevServerError(f"reset: namespaces {keys} still exist after {timeout:.0f}s")
        time.sleep(0.02)
