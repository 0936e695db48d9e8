"""The go-plugin side of a plugin process, shared by backend and database plugins.

The server starts the plugin with a magic-cookie environment variable and
the certificate it will present; the plugin starts a TLS gRPC server on a
unix socket, prints one handshake line on stdout and then serves the
plugin's own services beside go-plugin's: `GRPCBroker` (the server
announces its listeners on this stream), `GRPCController/Shutdown`,
`GRPCStdio` and the gRPC health check. The process exits when told to, when
its parent dies, or when the plugin says it has waited long enough.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc

from reconciler.demo.examples.plugins import _tls
from reconciler.demo.examples.plugins.proto import grpc_broker_pb2 as broker_pb
from reconciler.demo.examples.plugins.proto import grpc_controller_pb2 as controller_pb
from reconciler.demo.examples.plugins.proto import grpc_stdio_pb2 as stdio_pb

log = logging.getLogger("plugin")

PROTOCOL_VERSION = 5
CORE_PROTOCOL_VERSION = 1
_BROKER_WAIT = 5.0


@dataclass(frozen=True)
class Handshake:
    """The magic cookie the server's SDK sets for one kind of plugin."""

    key: str
    value: str


def environment_problem(env: Mapping[str, str], cookie: Handshake) -> str | None:
    """Why this environment is not a plugin host's, or None when it is."""
    if env.get(cookie.key) != cookie.value:
        return (
            "This program is an OpenBao/Vault plugin: the server runs it, not a person. "
            "Register it in the plugin catalog (sys/plugins/catalog) and use it from a "
            "mount or a database connection."
        )
    offered = {v.strip() for v in env.get("PLUGIN_PROTOCOL_VERSIONS", "").split(",")}
    if str(PROTOCOL_VERSION) not in offered:
        return (
            f"the server offers plugin protocol versions {sorted(offered)}, "
            f"this plugin speaks only {PROTOCOL_VERSION}"
        )
    if not env.get("PLUGIN_CLIENT_CERT"):
        return (
            "the server did not send PLUGIN_CLIENT_CERT: this plugin needs go-plugin's "
            "automatic mutual TLS"
        )
    return None


def unary(method: Callable[[Any, Any], Any], request_type: Any) -> Any:
    """A unary gRPC method handler that (de)serialises protobuf messages."""
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=request_type.FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )


class Host:
    """One plugin process speaking go-plugin; `run` serves until the server is done with it."""

    def __init__(self, label: str, server_cert_pem: bytes, socket_dir: str = "") -> None:
        self.label = label
        self.server_cert_pem = server_cert_pem
        self.identity = _tls.generate_identity()
        self._done = threading.Event()
        self._exit_status = 0
        self._conn_info: dict[int, broker_pb.ConnInfo] = {}
        self._conn_info_changed = threading.Condition()
        self._on_exit: list[Callable[[], None]] = []
        # mkdtemp makes it 0700: the sockets in it are reachable by this user only.
        self.workdir = tempfile.mkdtemp(prefix="bao-plugin-", dir=socket_dir or None)

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Call `callback` after the gRPC server stopped, before the process exits."""
        self._on_exit.append(callback)

    def run(
        self,
        services: Sequence[grpc.GenericRpcHandler],
        give_up: Callable[[float], str | None] = lambda _elapsed: None,
    ) -> NoReturn:
        """Serve `services` until done; `give_up(seconds_since_start)` names a reason to exit."""
        parent = os.getppid()
        started = time.monotonic()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        server.add_generic_rpc_handlers([*services, *self._go_plugin_services()])
        # The server authenticates the plugin by the certificate sent in the
        # handshake. The other direction cannot be mutual TLS here: the
        # server's client certificate is P-521, which grpcio's TLS does not
        # negotiate (the server then sends no certificate at all). A unix
        # socket in a 0700 directory, go-plugin's own default transport,
        # keeps other users out instead.
        address = os.path.join(self.workdir, "plugin.sock")
        credentials = grpc.ssl_server_credentials([(self.identity.key_pem, self.identity.cert_pem)])
        server.add_secure_port(f"unix:{address}", credentials)
        server.start()
        handshake = "|".join(
            [
                str(CORE_PROTOCOL_VERSION),
                str(PROTOCOL_VERSION),
                "unix",
                address,
                "grpc",
                self.identity.handshake_cert(),
            ]
        )
        sys.stdout.write(handshake + "\n")
        sys.stdout.flush()
        log.debug("%s serving on %s", self.label, address)
        while not self._done.wait(0.2):
            if os.getppid() != parent:
                self.finish(0, "the server process is gone")
            elif (reason := give_up(time.monotonic() - started)) is not None:
                self.finish(0, reason)
        server.stop(grace=0.2)
        for callback in self._on_exit:
            callback()
        shutil.rmtree(self.workdir, ignore_errors=True)
        logging.shutdown()
        # grpc's and asyncio's threads would keep a normal exit waiting.
        os._exit(self._exit_status)

    def finish(self, status: int, reason: str) -> None:
        """Stop serving and exit with `status`."""
        if not self._done.is_set():
            log.info("exiting: %s", reason)
            self._exit_status = status
            self._done.set()

    def wait_for_listener(self, broker_id: int) -> broker_pb.ConnInfo:
        """The listener the server announced on the broker for `broker_id`."""
        with self._conn_info_changed:
            found = self._conn_info_changed.wait_for(
                lambda: broker_id in self._conn_info, timeout=_BROKER_WAIT
            )
            if not found:
                raise TimeoutError(f"the server announced no listener for broker id {broker_id}")
            return self._conn_info.pop(broker_id)

    # -- go-plugin's own services -------------------------------------------

    def _go_plugin_services(self) -> list[grpc.GenericRpcHandler]:
        return [
            grpc.method_handlers_generic_handler(
                "plugin.GRPCBroker",
                {
                    "StartStream": grpc.stream_stream_rpc_method_handler(
                        self._broker_stream,
                        request_deserializer=broker_pb.ConnInfo.FromString,
                        response_serializer=lambda message: message.SerializeToString(),
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "plugin.GRPCController", {"Shutdown": unary(self._shutdown, controller_pb.Empty)}
            ),
            grpc.method_handlers_generic_handler(
                "plugin.GRPCStdio",
                {
                    "StreamStdio": grpc.unary_stream_rpc_method_handler(
                        self._stdio,
                        request_deserializer=lambda raw: raw,
                        response_serializer=lambda message: message.SerializeToString(),
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {
                    "Check": grpc.unary_unary_rpc_method_handler(
                        lambda request, context: b"",
                        request_deserializer=lambda raw: raw,
                        # HealthCheckResponse{status: SERVING}, encoded by hand
                        # to spare a generated module.
                        response_serializer=lambda _: b"\x08\x01",
                    )
                },
            ),
        ]

    def _shutdown(self, request: Any, context: Any) -> controller_pb.Empty:
        # Exit after the reply is on its way; the host waits for the process.
        threading.Timer(0.05, self.finish, args=(0, "shutdown requested")).start()
        return controller_pb.Empty()

    def _stdio(self, request: Any, context: Any) -> Iterator[stdio_pb.StdioData]:
        # Logs go to stderr, which the host reads anyway; the stream only has
        # to stay open so the host does not report it as broken.
        while not self._done.wait(1.0) and context.is_active():
            pass
        yield from ()

    def _broker_stream(
        self, requests: Iterator[broker_pb.ConnInfo], context: Any
    ) -> Iterator[broker_pb.ConnInfo]:
        # The host announces its listeners here; the stream must be read
        # continuously or the host blocks (reloads hang), and kept open.
        ended = threading.Event()

        def drain() -> None:
            try:
                for info in requests:
                    with self._conn_info_changed:
                        self._conn_info[info.service_id] = info
                        self._conn_info_changed.notify_all()
            except grpc.RpcError:
                pass
            finally:
                ended.set()

        threading.Thread(target=drain, name="broker-drain", daemon=True).start()
        while not ended.wait(1.0) and not self._done.is_set():
            pass
        yield from ()


def start(label: str, env: Mapping[str, str], cookie: Handshake) -> Host | int:
    """A `Host` ready to run, or the exit status when this is no plugin host's environment."""
    problem = environment_problem(env, cookie)
    if problem is not None:
        sys.stderr.write(f"{label}: {problem}\n")
        return 1
    _configure_logging()
    # go-plugin hosts own the plugin's lifetime; a Ctrl-C in the server's
    # terminal reaches the whole process group and must not kill plugins first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return Host(label, env["PLUGIN_CLIENT_CERT"].encode(), env.get("PLUGIN_UNIX_SOCKET_DIR", ""))


class _HclogFormatter(logging.Formatter):
    """JSON lines in hclog's shape, so the server logs them at their own level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "@level": {"WARNING": "warn", "CRITICAL": "error"}.get(
                record.levelname, record.levelname.lower()
            ),
            "@message": record.getMessage(),
            # go-plugin drops lines whose timestamp is not in exactly this layout.
            "@timestamp": datetime.fromtimestamp(record.created, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_HclogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The server filters by its own log level.
    root.setLevel(logging.DEBUG)
