"""The watcher's HTTP endpoint: /metrics (Prometheus) and /healthz (JSON), on its own thread."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from reconciler.watch._metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("reconciler.watch")


class MetricsServer:
    """`/metrics` and `/healthz` on a background thread; `close()` stops it."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_for(metrics))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="reconciler-metrics", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        host, port = self.address
        log.info("serving /metrics and /healthz on http://%s:%d", host, port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler_for(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "reconciler"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, CONTENT_TYPE, metrics.render())
            elif path == "/healthz":
                health = metrics.health()
                self._answer(
                    200 if health.healthy else 503,
                    "application/json",
                    json.dumps(health.to_dict()) + "\n",
                )
            else:
                self._answer(
                    404, "text/plain; charset=utf-8", "not found: try /metrics or /healthz\n"
                )

        def _answer(self, status: int, content_type: str, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would drown the reconcile log.
            log.debug("metrics: " + format, *args)

    return Handler
