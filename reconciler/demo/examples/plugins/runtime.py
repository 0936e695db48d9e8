"""Run a `Backend` as an OpenBao/Vault plugin process (go-plugin, gRPC, protocol 5).

The server starts the plugin with a magic-cookie environment variable and
the certificate it will present; the plugin starts a TLS gRPC server on a
loopback port, prints one handshake line on stdout and then answers:

- `pb.Backend`: Setup, Type, SpecialPaths, Initialize, HandleRequest,
  HandleExistenceCheck, InvalidateKey, Cleanup;
- `logical.PluginVersion/Version`: the server records the version the
  binary reports (and refuses a registration that claims another one);
- go-plugin's `GRPCBroker` (the server announces its storage listener on
  this stream), `GRPCController/Shutdown`, `GRPCStdio` and the gRPC health
  check.

The mount's storage lives in the server, reached through the broker, so data
survives reloads and upgrades. The process exits when told to, when its
parent dies, or when no Setup arrives soon after start (a registration only
asks the version and then kills the process).
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
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from datetime import UTC, datetime
from typing import Any

import grpc

from reconciler.demo.examples.plugins import _tls, _tunnel
from reconciler.demo.examples.plugins.framework import (
    Auth,
    Backend,
    PermissionDenied,
    PluginError,
    Request,
    Response,
    UnsupportedOperation,
    UnsupportedPath,
)
from reconciler.demo.examples.plugins.proto import backend_pb2 as pb
from reconciler.demo.examples.plugins.proto import grpc_broker_pb2 as broker_pb
from reconciler.demo.examples.plugins.proto import grpc_controller_pb2 as controller_pb
from reconciler.demo.examples.plugins.proto import grpc_stdio_pb2 as stdio_pb
from reconciler.demo.examples.plugins.proto import version_pb2

log = logging.getLogger("plugin")

# The value is fixed by the server's plugin SDK; without it the file was run
# by hand, not by a server.
MAGIC_COOKIE_KEY = "VAULT_BACKEND_PLUGIN"
MAGIC_COOKIE_VALUE = "6669da05-b1c8-4f49-97d9-c8e5bed98e20"
PROTOCOL_VERSION = 5
CORE_PROTOCOL_VERSION = 1

SETUP_TIMEOUT = 5.0
_BROKER_WAIT = 5.0
_NS = 1_000_000_000

# pb.ProtoError.err_type values, as the server's SDK translates them back.
_ERR_INTERNAL = 2
_ERR_CODED = 3
_ERR_UNSUPPORTED_OPERATION = 5
_ERR_UNSUPPORTED_PATH = 6
_ERR_INVALID_REQUEST = 7
_ERR_PERMISSION_DENIED = 8

_BACKEND_TYPES = {"secret": 1, "auth": 2}

# Operations the server sends on its own (path resolution, periodic rollback,
# alias lookahead before a login, help). The server's SDK answers them
# "unsupported operation" when a backend has nothing to say, and the server
# treats that answer as "nothing to do", not as a failure.
_SERVER_OPERATIONS = frozenset({"resolve-path", "rollback", "alias-lookahead", "help"})


def environment_problem(env: Mapping[str, str]) -> str | None:
    """Why this environment is not a plugin host's, or None when it is."""
    if env.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        return (
            "This program is an OpenBao/Vault plugin: the server runs it, not a person. "
            "Register it in the plugin catalog (sys/plugins/catalog) and enable a mount "
            "that uses it."
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


def serve(backend: Backend, env: Mapping[str, str] | None = None) -> int:
    """Run `backend` as a plugin until the server stops it; returns the exit status."""
    env = os.environ if env is None else env
    problem = environment_problem(env)
    if problem is not None:
        sys.stderr.write(f"{backend.name} {backend.version}: {problem}\n")
        return 1
    _configure_logging()
    # go-plugin hosts own the plugin's lifetime; a Ctrl-C in the server's
    # terminal reaches the whole process group and must not kill plugins first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    process = _PluginProcess(
        backend, env["PLUGIN_CLIENT_CERT"].encode(), env.get("PLUGIN_UNIX_SOCKET_DIR", "")
    )
    return process.run()


class _BrokerStorage:
    """`Storage` backed by the server's `pb.Storage` service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._get = _unary_call(channel, "/pb.Storage/Get", pb.StorageGetReply)
        self._put = _unary_call(channel, "/pb.Storage/Put", pb.StoragePutReply)
        self._list = _unary_call(channel, "/pb.Storage/List", pb.StorageListReply)
        self._delete = _unary_call(channel, "/pb.Storage/Delete", pb.StorageDeleteReply)

    def get(self, key: str) -> bytes | None:
        reply = self._get(pb.StorageGetArgs(key=key))
        _raise_storage_error(reply.err, "get", key)
        return bytes(reply.entry.value) if reply.HasField("entry") else None

    def put(self, key: str, value: bytes) -> None:
        reply = self._put(pb.StoragePutArgs(entry=pb.StorageEntry(key=key, value=value)))
        _raise_storage_error(reply.err, "put", key)

    def list(self, prefix: str) -> list[str]:
        reply = self._list(pb.StorageListArgs(prefix=prefix))
        _raise_storage_error(reply.err, "list", prefix)
        return list(reply.keys)

    def delete(self, key: str) -> None:
        reply = self._delete(pb.StorageDeleteArgs(key=key))
        _raise_storage_error(reply.err, "delete", key)


def _unary_call(channel: grpc.Channel, method: str, reply_type: Any) -> Callable[[Any], Any]:
    call = channel.unary_unary(
        method,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=reply_type.FromString,
    )

    def invoke(message: Any) -> Any:
        try:
            return call(message, timeout=30)
        except grpc.RpcError as exc:
            raise PluginError(f"storage unavailable: {exc.details()}", 500) from exc

    return invoke


def _raise_storage_error(err: str, operation: str, key: str) -> None:
    if err:
        raise PluginError(f"storage {operation} {key!r}: {err}", 500)


class _PluginProcess:
    def __init__(self, backend: Backend, server_cert_pem: bytes, socket_dir: str = "") -> None:
        self.backend = backend
        self.server_cert_pem = server_cert_pem
        self.identity = _tls.generate_identity()
        self._done = threading.Event()
        self._exit_status = 0
        self._setup_called = threading.Event()
        self._conn_info: dict[int, broker_pb.ConnInfo] = {}
        self._conn_info_changed = threading.Condition()
        self._tunnels: list[_tunnel.Tunnel] = []
        self._channels: list[grpc.Channel] = []
        # mkdtemp makes it 0700: the sockets in it are reachable by this user only.
        self.workdir = tempfile.mkdtemp(prefix="bao-plugin-", dir=socket_dir or None)

    # -- process lifetime -------------------------------------------------

    def run(self) -> int:
        parent = os.getppid()
        started = time.monotonic()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        server.add_generic_rpc_handlers(self._handlers())
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
        log.debug("%s %s serving on %s", self.backend.name, self.backend.version, address)
        while not self._done.wait(0.2):
            if os.getppid() != parent:
                self.finish(0, "the server process is gone")
            elif not self._setup_called.is_set() and time.monotonic() - started > SETUP_TIMEOUT:
                self.finish(0, "no Setup call from the server")
        server.stop(grace=0.2)
        self._close_storage()
        shutil.rmtree(self.workdir, ignore_errors=True)
        logging.shutdown()
        # grpc's and asyncio's threads would keep a normal exit waiting.
        os._exit(self._exit_status)

    def finish(self, status: int, reason: str) -> None:
        if not self._done.is_set():
            log.info("exiting: %s", reason)
            self._exit_status = status
            self._done.set()

    def _close_storage(self) -> None:
        for channel in self._channels:
            channel.close()
        for tunnel in self._tunnels:
            tunnel.close()

    # -- gRPC services ----------------------------------------------------

    def _handlers(self) -> list[Any]:
        def unary(method: Callable[[Any, Any], Any], request_type: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request_type.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )

        return [
            grpc.method_handlers_generic_handler(
                "pb.Backend",
                {
                    "Setup": unary(self._setup, pb.SetupArgs),
                    "Type": unary(self._type, pb.Empty),
                    "SpecialPaths": unary(self._special_paths, pb.Empty),
                    "Initialize": unary(self._initialize, pb.InitializeArgs),
                    "HandleRequest": unary(self._handle_request, pb.HandleRequestArgs),
                    "HandleExistenceCheck": unary(
                        self._existence_check, pb.HandleExistenceCheckArgs
                    ),
                    "InvalidateKey": unary(self._invalidate_key, pb.InvalidateKeyArgs),
                    "Cleanup": unary(self._cleanup, pb.Empty),
                },
            ),
            grpc.method_handlers_generic_handler(
                "logical.PluginVersion", {"Version": unary(self._version, version_pb2.Empty)}
            ),
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

    def _version(self, request: Any, context: Any) -> version_pb2.VersionReply:
        return version_pb2.VersionReply(plugin_version=self.backend.version)

    def _type(self, request: Any, context: Any) -> pb.TypeReply:
        return pb.TypeReply(type=_BACKEND_TYPES[self.backend.kind])

    def _special_paths(self, request: Any, context: Any) -> pb.SpecialPathsReply:
        return pb.SpecialPathsReply(paths=pb.Paths(unauthenticated=self.backend.unauthenticated))

    def _initialize(self, request: Any, context: Any) -> pb.InitializeReply:
        return pb.InitializeReply()

    def _invalidate_key(self, request: Any, context: Any) -> pb.Empty:
        return pb.Empty()

    def _cleanup(self, request: Any, context: Any) -> pb.Empty:
        return pb.Empty()

    def _existence_check(self, request: Any, context: Any) -> pb.HandleExistenceCheckReply:
        # No existence checks: every write arrives as "update".
        return pb.HandleExistenceCheckReply(check_found=False)

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

    def _setup(self, request: pb.SetupArgs, context: Any) -> pb.SetupReply:
        self._setup_called.set()
        try:
            info = self._wait_for_listener(request.broker_id)
            context_tls = _tunnel.client_context(
                self.identity.cert_pem, self.identity.key_pem, self.server_cert_pem
            )
            local = os.path.join(self.workdir, f"storage-{request.broker_id}.sock")
            tunnel = _tunnel.Tunnel(info.network, info.address, context_tls, local)
            self._tunnels.append(tunnel)
            channel = grpc.insecure_channel(tunnel.start())
            self._channels.append(channel)
            grpc.channel_ready_future(channel).result(timeout=_BROKER_WAIT)
        except Exception as exc:
            log.error("setup failed: %s", exc)
            return pb.SetupReply(
                err=f"{self.backend.name}: cannot reach the server's storage: {exc}"
            )
        self.backend.attach(_BrokerStorage(channel))
        return pb.SetupReply()

    def _wait_for_listener(self, broker_id: int) -> broker_pb.ConnInfo:
        with self._conn_info_changed:
            found = self._conn_info_changed.wait_for(
                lambda: broker_id in self._conn_info, timeout=_BROKER_WAIT
            )
            if not found:
                raise TimeoutError(f"the server announced no listener for broker id {broker_id}")
            return self._conn_info.pop(broker_id)

    def _handle_request(self, args: pb.HandleRequestArgs, context: Any) -> pb.HandleRequestReply:
        message = args.request
        try:
            request = _request_from_pb(message)
            if request.operation in _SERVER_OPERATIONS:
                raise UnsupportedOperation(request.operation)
            response = self.backend.handle(request)
        except PluginError as exc:
            if exc.status == 400 and type(exc) is PluginError:
                # The Go SDK's ErrorResponse: the server shows the message
                # as is, where a coded error gets wrapped in "1 error occurred".
                return pb.HandleRequestReply(
                    response=pb.Response(data=json.dumps({"error": exc.message})),
                    err=pb.ProtoError(err_type=_ERR_INVALID_REQUEST, err_msg="invalid request"),
                )
            return pb.HandleRequestReply(err=_proto_error(exc))
        except Exception as exc:
            log.exception("%s %s failed", message.operation, message.path)
            return pb.HandleRequestReply(
                err=pb.ProtoError(err_type=_ERR_INTERNAL, err_msg=f"internal error: {exc}")
            )
        if response is None:
            return pb.HandleRequestReply()
        return pb.HandleRequestReply(response=_response_to_pb(response))


# -- translation between the framework and the wire -----------------------


def _proto_error(exc: PluginError) -> pb.ProtoError:
    # The server's SDK maps these two types to its sentinel errors, which the
    # server recognises by identity (e.g. to skip optional operations).
    if isinstance(exc, UnsupportedOperation):
        return pb.ProtoError(err_type=_ERR_UNSUPPORTED_OPERATION, err_msg="unsupported operation")
    if isinstance(exc, UnsupportedPath):
        return pb.ProtoError(err_type=_ERR_UNSUPPORTED_PATH, err_msg="unsupported path")
    if isinstance(exc, PermissionDenied) and exc.message == "permission denied":
        return pb.ProtoError(err_type=_ERR_PERMISSION_DENIED, err_msg="permission denied")
    return pb.ProtoError(err_type=_ERR_CODED, err_msg=exc.message, err_code=exc.status)


def _request_from_pb(message: pb.Request) -> Request:
    data: Any = json.loads(message.data) if message.data else {}
    return Request(
        operation=message.operation,
        path=message.path,
        data=data if isinstance(data, dict) else {},
        mount_point=message.mount_point,
        display_name=message.display_name,
        unauthenticated=message.unauthenticated,
        auth=_auth_from_pb(message.auth) if message.HasField("auth") else None,
    )


def _auth_from_pb(message: pb.Auth) -> Auth:
    lease = message.lease_options
    issued = lease.issue_time.ToNanoseconds() / _NS if lease.HasField("issue_time") else None
    internal: Any = json.loads(message.internal_data) if message.internal_data else {}
    return Auth(
        policies=list(message.policies),
        ttl=lease.TTL // _NS,
        max_ttl=lease.MaxTTL // _NS,
        renewable=lease.renewable,
        display_name=message.display_name,
        metadata=dict(message.metadata),
        internal_data=internal if isinstance(internal, dict) else {},
        period=message.period // _NS,
        num_uses=message.num_uses,
        issued_at=issued,
        original=message,
    )


def _auth_to_pb(auth: Auth) -> pb.Auth:
    message = pb.Auth()
    if isinstance(auth.original, pb.Auth):
        message.CopyFrom(auth.original)
    lease = message.lease_options
    lease.TTL = auth.ttl * _NS
    lease.MaxTTL = auth.max_ttl * _NS
    lease.renewable = auth.renewable
    # The server's SDK rejects lease options without an issue time.
    if auth.issued_at is None:
        lease.issue_time.GetCurrentTime()
    else:
        lease.issue_time.FromNanoseconds(int(auth.issued_at * _NS))
    message.internal_data = json.dumps(auth.internal_data)
    message.display_name = auth.display_name
    del message.policies[:]
    message.policies.extend(auth.policies)
    message.metadata.clear()
    message.metadata.update(auth.metadata)
    message.period = auth.period * _NS
    message.num_uses = auth.num_uses
    return message


def _response_to_pb(response: Response) -> pb.Response:
    message = pb.Response(
        data=json.dumps(response.data if response.data is not None else {}, default=str),
        warnings=response.warnings,
    )
    if response.auth is not None:
        message.auth.CopyFrom(_auth_to_pb(response.auth))
    return message


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
