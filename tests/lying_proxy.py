"""An HTTP proxy in front of the real test server that lies on chosen requests.

It forwards every request and records it, except the ones it was told to lie
about: those get a success answer of the proxy's own and never reach the
server. A hook can also run right after a request was forwarded, to break the
server behind the command's back (kill a plugin, say) once it has answered.
And a request can lose its answer: the connection closes without one, after
the request was forwarded (it ran) or before (it never reached the server).
Verification is what must notice: a lie costs the command nothing but its
exit code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

import httpx

from tests.helpers import ASKING_ONLY, WRITE_METHODS

_FORWARDED_HEADERS = ("X-Vault-Token", "X-Vault-Namespace", "X-Vault-Request", "Content-Type")
# What the server answers to a write that worked: 204 for a tune, 200 with a body for a reload.
_SUCCESS = {204: b"", 200: json.dumps({"data": {}, "warnings": None}).encode()}

AfterHook = Callable[[], None]


class Hold:
    """A request held at the proxy: `arrived` is set when it comes, and it goes on to the
    server only once `release` is set (so a test can act while it is in flight)."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()


class LoopbackProxy:
    """A proxy on a free loopback port that hands every request to `handler` (whose
    `proxy` attribute is this proxy), with a client to `upstream` for forwarding."""

    def __init__(self, upstream: str, handler: type[ProxyHandler]) -> None:
        self._lock = threading.Lock()
        self._upstream = httpx.Client(base_url=upstream, timeout=120)
        bound = type("Handler", (handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._upstream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProxyHandler(BaseHTTPRequestHandler):
    """What every proxy's request handler shares: quiet, HTTP/1.1, one way to answer."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LyingProxy(LoopbackProxy):
    """Forwards to `upstream`; meets the requests it was told about with a made-up success."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[tuple[str, str]] = []
        self._lies: list[tuple[str, str, int]] = []
        self._after: list[tuple[str, str, AfterHook]] = []
        self._drops: list[tuple[str, str, bool]] = []
        self._forwarded: list[tuple[str, str]] = []
        self._holds: list[tuple[str, str, Hold]] = []
        super().__init__(upstream, _Handler)

    def lie(self, method: str, path: str, status: int) -> None:
        """Answer every `METHOD path` (no query) with `status` (200 or 204), never forwarding it."""
        with self._lock:
            self._lies.append((method, path, status))

    def after(self, method: str, path: str, hook: AfterHook) -> None:
        """Run `hook` once, after the first `METHOD path` was forwarded and answered 2xx."""
        with self._lock:
            self._after.append((method, path, hook))

    def drop_answer(self, method: str, path: str, *, forward: bool = True) -> None:
        """Close the connection of the next `METHOD path` without an answer.

        `forward`: the server carries the request out first (its answer is lost);
        otherwise the request never reaches it.
        """
        with self._lock:
            self._drops.append((method, path, forward))

    def hold(self, method: str, path: str) -> Hold:
        """Hold the next `METHOD path` until the returned hold is released."""
        hold = Hold()
        with self._lock:
            self._holds.append((method, path, hold))
        return hold

    def forwarded(self, method: str, path: str) -> int:
        """How many `METHOD path` requests reached the server."""
        with self._lock:
            return self._forwarded.count((method, path))

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.requests.count((method, path))

    def writes(self) -> list[tuple[str, str]]:
        with self._lock:
            return [r for r in self.requests if r[0] in WRITE_METHODS and r[1] not in ASKING_ONLY]

    def _record(self, method: str, path: str) -> int | None:
        with self._lock:
            self.requests.append((method, path))
            return next((s for m, p, s in self._lies if (m, p) == (method, path)), None)

    def _take_drop(self, method: str, path: str) -> bool | None:
        """None: answer it; else drop its answer, forwarding it first when True."""
        with self._lock:
            for index, (m, p, forward) in enumerate(self._drops):
                if (m, p) == (method, path):
                    del self._drops[index]
                    return forward
        return None

    def _take_hold(self, method: str, path: str) -> Hold | None:
        with self._lock:
            for index, (m, p, hold) in enumerate(self._holds):
                if (m, p) == (method, path):
                    del self._holds[index]
                    return hold
        return None

    def _note_forwarded(self, method: str, path: str) -> None:
        with self._lock:
            self._forwarded.append((method, path))

    def _take_hook(self, method: str, path: str) -> AfterHook | None:
        with self._lock:
            for index, (m, p, hook) in enumerate(self._after):
                if (m, p) == (method, path):
                    del self._after[index]
                    return hook
        return None


class _Handler(ProxyHandler):
    proxy: LyingProxy

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        lie = self.proxy._record(self.command, path)
        if lie is not None:
            self._answer(lie, _SUCCESS[lie], "application/json" if _SUCCESS[lie] else None)
            return
        hold = self.proxy._take_hold(self.command, path)
        if hold is not None:
            hold.arrived.set()
            hold.release.wait(timeout=120)
        drop = self.proxy._take_drop(self.command, path)
        if drop is False:
            self.close_connection = True
            return
        headers = {k: v for k in _FORWARDED_HEADERS if (v := self.headers.get(k)) is not None}
        answer = self.proxy._upstream.request(
            self.command, self.path, headers=headers, content=body
        )
        self.proxy._note_forwarded(self.command, path)
        if drop:
            self.close_connection = True
            return
        if answer.is_success and (hook := self.proxy._take_hook(self.command, path)):
            hook()
        self._answer(answer.status_code, answer.content, answer.headers.get("Content-Type"))

    do_GET = do_PUT = do_POST = do_DELETE = do_LIST = do_PATCH = _handle
