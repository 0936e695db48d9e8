"""The whole server's usage picture: which mount or database connection, in which
namespace, names which catalog entry.

The one catalog serves every namespace (SPEC §9), and a database connection
names its plugin inside its database mount, where `sys/mounts` never shows it
(SPEC §10). A check that asks "is this entry in use?" must therefore look at
every mount and every connection of every namespace the token can see, wherever
it lives and whether a file manages it or not. This module is that one place:
built from the `LiveState` that `state.py` reads, pure, and read by every
in-use check of the planner (deregistration, pruning, `state: absent`,
server-owned entries, pins to missing entries) and by `status`.

How plans name a mount, a connection and a namespace lives here too, below the
planner, so the planner and the picture's users say the same names.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

from reconciler.model import LiveConnection, LiveMount, LiveState, MountKind
from reconciler.resolver import (
    BuiltinKey,
    CatalogKey,
    Target,
    connection_runs,
    effective_entry,
    live_builtins,
)

UserKind = Literal["mount", "connection"]


def where_text(namespace: str) -> str:
    """How plans and views name a namespace (`namespace ns1/team-a/`, `the root namespace`)."""
    return f"namespace {namespace}" if namespace else "the root namespace"


def mount_target_name(kind: MountKind, path: str) -> str:
    """How a mount is named in plans: the file's section and the path."""
    return f"{'auth' if kind == 'auth' else 'secrets'}/{path}"


def mount_named_from(home: str, namespace: str, kind: MountKind, path: str) -> str:
    """How output made in `home` names a mount of `namespace` (both paths from the root):
    by its path in `home`, with its namespace elsewhere."""
    name = mount_target_name(kind, path)
    return name if namespace == home else f"{name} in {where_text(namespace)}"


def connection_target_name(mount: str, name: str) -> str:
    """How a connection is named in plans: its mount's name, then `connections/<name>`."""
    return f"{mount_target_name('secret', mount)}connections/{name}"


@dataclass(frozen=True)
class User:
    """One mount or database connection of the server and the plugin it names."""

    kind: UserKind
    namespace: str  # a path from the root; "" is the root
    # The mount's table ("secret" or "auth"); a connection lives in a secrets mount.
    table: Literal["secret", "auth"]
    path: str  # the mount's path (a connection's database mount)
    connection: str  # the connection's name; "" for a mount
    plugin_type: str  # the catalog type it resolves in: secret, auth or database
    plugin: str
    pin: str  # the stored `plugin_version` ("" when unpinned)

    @property
    def name(self) -> str:
        """How plans name it, without its namespace."""
        if self.kind == "connection":
            return connection_target_name(self.path, self.connection)
        return mount_target_name(self.table, self.path)

    def named(self) -> str:
        """How plans name it, with its namespace: `secrets/db/connections/x in namespace ns1/`."""
        return f"{self.name} in {where_text(self.namespace)}"

    def named_from(self, namespace: str) -> str:
        """How a plan made in `namespace` names it: with its namespace when it is another."""
        return self.name if self.namespace == namespace else self.named()

    def runs(
        self, entries: Collection[CatalogKey], builtins: Collection[BuiltinKey]
    ) -> Target | None:
        """What it runs at its next reload (a connection: its next reset) with `entries` in
        the catalog; None: nothing (it would be left without a backend)."""
        if self.kind == "connection":
            return connection_runs(self.plugin, self.pin, entries, builtins)
        return effective_entry(self.table, self.plugin, self.pin, entries, builtins)


def _mount_user(mount: LiveMount) -> User:
    return User(
        kind="mount",
        namespace=mount.namespace,
        table=mount.kind,
        path=mount.path,
        connection="",
        plugin_type=mount.kind,
        plugin=mount.plugin,
        pin=mount.plugin_version,
    )


def _connection_user(connection: LiveConnection) -> User:
    return User(
        kind="connection",
        namespace=connection.namespace,
        table="secret",
        path=connection.mount,
        connection=connection.name,
        plugin_type="database",
        plugin=connection.plugin,
        pin=connection.plugin_version,
    )


@dataclass(frozen=True)
class ServerUsage:
    """Every mount (reserved ones left out) and every connection the token can see."""

    namespaces: tuple[str, ...]
    users: tuple[User, ...]
    external: frozenset[CatalogKey]
    builtins: frozenset[BuiltinKey]

    @classmethod
    def of(cls, live: LiveState) -> ServerUsage:
        mounts = [m for m in (*live.mounts, *live.elsewhere) if not m.reserved]
        users = [*map(_mount_user, mounts), *map(_connection_user, live.connections)]
        return cls(
            namespaces=tuple(sorted({"", *live.namespaces, live.server.namespace})),
            users=tuple(sorted(users, key=_order)),
            external=frozenset(e.key for e in live.catalog if not e.builtin),
            builtins=frozenset(live_builtins(live.catalog)),
        )

    def connections(self) -> Iterator[User]:
        return (user for user in self.users if user.kind == "connection")

    def mounts(self) -> Iterator[User]:
        return (user for user in self.users if user.kind == "mount")

    def using(self, key: CatalogKey) -> list[User]:
        """Every mount and connection that runs `key` now (at its next reload or reset)."""
        return [
            user
            for user in self.users
            if (user.plugin_type, user.plugin) == key[:2]
            and (runs := user.runs(self.external, self.builtins)) is not None
            and runs.key == key
        ]

    def pinned_to_missing(self) -> list[tuple[User, CatalogKey]]:
        """Every mount and connection pinned to an external version the catalog lacks now."""
        found = []
        for user in self.users:
            if not user.pin or user.runs(self.external, self.builtins) is not None:
                continue
            found.append((user, (user.plugin_type, user.plugin, user.pin)))
        return found


def _order(user: User) -> tuple[str, str, str, str, str]:
    return (user.namespace, user.kind, user.table, user.path, user.connection)
