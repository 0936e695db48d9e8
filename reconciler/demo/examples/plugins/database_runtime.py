"""Run a `Database` as an OpenBao/Vault database plugin (go-plugin, gRPC, protocol 5).

Besides go-plugin's own services (`_goplugin`), the process answers:

- `dbplugin.v5.Database`: Initialize, NewUser, UpdateUser, DeleteUser, Type,
  Close — one connection per process: protocol 5 is the server's
  non-multiplexed database protocol, so every connection of a database
  mount starts its own process, and the server asks
  `pluginutil.multiplexing.PluginMultiplexing` nothing more than to learn
  that this plugin does not multiplex (an unimplemented service says so);
- `logical.PluginVersion/Version`: the version the catalog records at
  registration ("" for an unversioned plugin).

A registration starts the process only to ask its version and then stops
it; the process also exits when its parent dies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf import struct_pb2  # type: ignore[import-untyped]

from reconciler.demo.examples.plugins import _goplugin
from reconciler.demo.examples.plugins._goplugin import unary
from reconciler.demo.examples.plugins.proto import database_pb2 as db_pb
from reconciler.demo.examples.plugins.proto import version_pb2

log = logging.getLogger("plugin")

# Fixed by the server's dbplugin SDK (sdk/database/dbplugin/v5).
HANDSHAKE = _goplugin.Handshake("VAULT_DATABASE_PLUGIN", "926a0820-aea2-be28-51d6-83cdf00e8edb")


class DatabaseError(Exception):
    """The request failed; the server shows `message` in its error (never put credentials in it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class NewUser:
    """What the server asks of NewUser (a role's credentials being issued)."""

    role_name: str
    display_name: str
    password: str
    expiration: datetime | None
    statements: list[str]


class Database(Protocol):
    """A database plugin's logic, without any gRPC in it."""

    name: str
    version: str  # as the catalog records it; "" for an unversioned plugin

    def initialize(self, config: dict[str, Any], verify_connection: bool) -> dict[str, Any]:
        """Open the connection `config` describes; the result is what the server stores."""

    def new_user(self, request: NewUser) -> str:
        """Create a user; returns its username."""

    def update_user(
        self, username: str, new_password: str | None, new_expiration: datetime | None
    ) -> None:
        """Change a user's password and/or expiration."""

    def delete_user(self, username: str) -> None:
        """Drop a user (a revoked lease); dropping a missing user is not an error."""

    def type_name(self) -> str:
        """The database type the server logs and reports."""

    def close(self) -> None:
        """Close the connection; the process may be stopped right after."""


def serve(database: Database, env: Mapping[str, str] | None = None) -> int:
    """Run `database` as a plugin until the server stops it; returns the exit status."""
    label = f"{database.name} {database.version or '(unversioned)'}"
    host = _goplugin.start(label, os.environ if env is None else env, HANDSHAKE)
    if isinstance(host, int):
        return host
    _serve(database, host)


def _serve(database: Database, host: _goplugin.Host) -> NoReturn:
    service = _DatabaseService(database)
    host.run(
        [
            grpc.method_handlers_generic_handler(
                "dbplugin.v5.Database",
                {
                    "Initialize": unary(service.initialize, db_pb.InitializeRequest),
                    "NewUser": unary(service.new_user, db_pb.NewUserRequest),
                    "UpdateUser": unary(service.update_user, db_pb.UpdateUserRequest),
                    "DeleteUser": unary(service.delete_user, db_pb.DeleteUserRequest),
                    "Type": unary(service.type, db_pb.Empty),
                    "Close": unary(service.close, db_pb.Empty),
                },
            ),
            grpc.method_handlers_generic_handler(
                "logical.PluginVersion", {"Version": unary(service.version, version_pb2.Empty)}
            ),
        ]
    )


class _DatabaseService:
    """The gRPC face of a `Database`: wire messages in, wire messages or a status out."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def version(self, request: Any, context: Any) -> version_pb2.VersionReply:
        return version_pb2.VersionReply(plugin_version=self.database.version)

    def type(self, request: Any, context: Any) -> db_pb.TypeResponse:
        return db_pb.TypeResponse(Type=self.database.type_name())

    def initialize(self, request: db_pb.InitializeRequest, context: Any) -> Any:
        config = _plain(request.config_data)
        try:
            stored = self.database.initialize(config, request.verify_connection)
        except DatabaseError as exc:
            # The server's SDK answers with this status and wording.
            return _abort(context, f"failed to initialize: {exc.message}")
        reply = db_pb.InitializeResponse()
        reply.config_data.update(stored)
        return reply

    def new_user(self, request: db_pb.NewUserRequest, context: Any) -> Any:
        if not request.HasField("username_config"):
            return _abort(context, "missing username config", grpc.StatusCode.INVALID_ARGUMENT)
        wanted = NewUser(
            role_name=request.username_config.role_name,
            display_name=request.username_config.display_name,
            password=request.password,
            expiration=request.expiration.ToDatetime(tzinfo=UTC)
            if request.HasField("expiration")
            else None,
            statements=list(request.statements.Commands),
        )
        try:
            username = self.database.new_user(wanted)
        except DatabaseError as exc:
            return _abort(context, f"unable to create new user: {exc.message}")
        return db_pb.NewUserResponse(username=username)

    def update_user(self, request: db_pb.UpdateUserRequest, context: Any) -> Any:
        password = request.password.new_password if request.HasField("password") else None
        expiration = (
            request.expiration.new_expiration.ToDatetime(tzinfo=UTC)
            if request.HasField("expiration") and request.expiration.HasField("new_expiration")
            else None
        )
        try:
            self.database.update_user(request.username, password, expiration)
        except DatabaseError as exc:
            return _abort(context, f"unable to update user: {exc.message}")
        return db_pb.UpdateUserResponse()

    def delete_user(self, request: db_pb.DeleteUserRequest, context: Any) -> Any:
        try:
            self.database.delete_user(request.username)
        except DatabaseError as exc:
            return _abort(context, f"unable to delete user: {exc.message}")
        return db_pb.DeleteUserResponse()

    def close(self, request: Any, context: Any) -> Any:
        try:
            self.database.close()
        except DatabaseError as exc:
            return _abort(context, f"unable to close database plugin: {exc.message}")
        return db_pb.Empty()


def _plain(value: Any) -> Any:
    """A `google.protobuf.Struct` (or a value in one) as plain dicts and lists."""
    if isinstance(value, struct_pb2.Struct):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, struct_pb2.ListValue):
        return [_plain(item) for item in value]
    return value


def _abort(
    context: Any, message: str, code: grpc.StatusCode = grpc.StatusCode.INTERNAL
) -> NoReturn:
    log.warning("%s", message)
    context.abort(code, message)
    raise AssertionError("grpc's abort raises")  # pragma: no cover
