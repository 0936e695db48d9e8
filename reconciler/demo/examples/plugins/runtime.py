"""Run a `Backend` as an OpenBao/Vault plugin process (go-plugin, gRPC, protocol 5).

Besides go-plugin's own services (`_goplugin`), the process answers:

- `pb.Backend`: Setup, Type, SpecialPaths, Initialize, HandleRequest,
  HandleExistenceCheck, InvalidateKey, Cleanup;
- `logical.PluginVersion/Version`: the server records the version the
  binary reports (and refuses a registration that claims another one).

The mount's storage lives in the server, reached through the broker, so data
survives reloads and upgrades. The process exits when told to, when its
parent dies, or when no Setup arrives soon after start (a registration only
asks the version and then kills the process).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import grpc

from reconciler.demo.examples.plugins import _goplugin, _tunnel
from reconciler.demo.examples.plugins._goplugin import unary
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
from reconciler.demo.examples.plugins.proto import version_pb2

log = logging.getLogger("plugin")

# The value is fixed by the server's plugin SDK; without it the file was run
# by hand, not by a server.
HANDSHAKE = _goplugin.Handshake("VAULT_BACKEND_PLUGIN", "6669da05-b1c8-4f49-97d9-c8e5bed98e20")

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


def serve(backend: Backend, env: Mapping[str, str] | None = None) -> int:
    """Run `backend` as a plugin until the server stops it; returns the exit status."""
    host = _goplugin.start(
        f"{backend.name} {backend.version}", os.environ if env is None else env, HANDSHAKE
    )
    if isinstance(host, int):
        return host
    _PluginProcess(backend, host).run()


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
    def __init__(self, backend: Backend, host: _goplugin.Host) -> None:
        self.backend = backend
        self.host = host
        self._setup_called = threading.Event()
        self._tunnels: list[_tunnel.Tunnel] = []
        self._channels: list[grpc.Channel] = []
        host.on_exit(self._close_storage)

    def run(self) -> NoReturn:
        def no_setup(elapsed: float) -> str | None:
            if not self._setup_called.is_set() and elapsed > SETUP_TIMEOUT:
                return "no Setup call from the server"
            return None

        self.host.run(self._handlers(), no_setup)

    def _close_storage(self) -> None:
        for channel in self._channels:
            channel.close()
        for tunnel in self._tunnels:
            tunnel.close()

    # -- gRPC services ----------------------------------------------------

    def _handlers(self) -> list[Any]:
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

    def _setup(self, request: pb.SetupArgs, context: Any) -> pb.SetupReply:
        self._setup_called.set()
        try:
            info = self.host.wait_for_listener(request.broker_id)
            context_tls = _tunnel.client_context(
                self.host.identity.cert_pem, self.host.identity.key_pem, self.host.server_cert_pem
            )
            local = os.path.join(self.host.workdir, f"storage-{request.broker_id}.sock")
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
