"""Phase 4, cleanup: deregister what the file retires, once nothing left needs it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.plan import (
    Action,
    DeregisterAction,
    DeregistrationParams,
    FieldChange,
    Problem,
    ReasonCode,
)
from reconciler.planner._connections import ConnectionChanges
from reconciler.planner._context import (
    OWNED_BY_SERVER,
    Context,
    Outcome,
    catalog_target_name,
    problem,
)
from reconciler.planner._mounts import MountChanges, Pruning
from reconciler.planner._namespaces import Scope
from reconciler.resolver import HARD_WIRED_BUILTINS, CatalogKey
from reconciler.usage import connection_target_name, mount_target_name

_REASONS: dict[ReasonCode, str] = {
    ReasonCode.DECLARED_ABSENT: "declared state: absent",
    ReasonCode.UNMANAGED_PLUGIN_PRUNED: "not declared and prune_plugins is on",
}


@dataclass(frozen=True)
class ScopedMounts:
    """One namespace's planned mount and connection changes."""

    scope: Scope
    mounts: MountChanges
    pruning: Pruning
    connections: ConnectionChanges


def plan_deregistrations(context: Context, planned: Sequence[ScopedMounts]) -> Outcome:
    """Deregister retired entries unless a mount left, in any namespace, or a database
    connection would lose its backend."""
    actions: list[Action] = []
    errors: list[Problem] = []
    warnings = [
        problem(catalog_target_name(key), "unmanaged catalog entry: left registered")
        for key in sorted(context.external)
        if key not in context.absent
        and key not in context.present
        and key not in context.declarative
        and not context.desired.settings.prune_plugins
    ]
    warnings += [
        problem(
            catalog_target_name(key),
            f"{OWNED_BY_SERVER}: left registered, never deregistered (the next SIGHUP "
            "would register it again); remove its stanza to retire it",
        )
        for key in sorted(context.declarative)
        if key not in context.present
    ]
    for key, code in context.deregistrations:
        target = catalog_target_name(key)
        held = [
            *(
                part.scope.named(where)
                for part in planned
                for where in part.mounts.held_on.get(key, ())
            ),
            *(
                part.scope.named(where)
                for part in planned
                for where in part.connections.held_on.get(key, ())
            ),
        ]
        if held:
            # Watch mode keeps these mounts on the entry until the file changes.
            warnings.append(
                problem(
                    target,
                    f"{_REASONS[code]}, but kept registered: {', '.join(sorted(held))} "
                    "stay on it while their upgrade is held",
                )
            )
            continue
        users = [
            part.scope.named(user)
            for part in planned
            for user in _users_after(part.scope.context, key, part.mounts, part.pruning)
        ]
        # The catalog serves every namespace: a mount of one the file leaves alone keeps
        # the entry in use too (the picture holds them all; managed ones are above).
        managed = {part.scope.namespace for part in planned}
        users.extend(
            user.named()
            for user in context.usage.using(key)
            if user.kind == "mount"
            and user.namespace not in managed
            and user.runs(context.entries_after, context.builtins) is None
        )
        # Connections of every namespace, declared ones in the client's.
        users += _connection_users_after(context, key, planned)
        if users:
            errors.append(
                problem(
                    target,
                    "cannot deregister: still used by "
                    + ", ".join(users)
                    + " (its next reload would leave it without a backend)",
                )
            )
            continue
        actions.append(
            DeregisterAction(
                target=target,
                reason=_REASONS[code],
                reason_code=code,
                changes=[FieldChange(field="sha256", before=context.external[key].sha256)],
                params=DeregistrationParams(type=key[0], name=key[1], version=key[2]),
            )
        )
        followers = [
            part.scope.named(follower)
            for part in planned
            for follower in _unmanaged_followers(part.scope.context, key, part.mounts, part.pruning)
        ]
        if followers:
            warnings.append(
                problem(
                    target,
                    "deregistering this shadow returns "
                    + ", ".join(followers)
                    + " to the built-in at its next reload (unmanaged: not reloaded now)",
                )
            )
    return Outcome(tuple(actions), tuple(errors), tuple(warnings))


def _users_after(
    context: Context, key: CatalogKey, mounts: MountChanges, pruning: Pruning
) -> list[str]:
    """Mounts left that would run `key`, or nothing at all, once it is gone."""
    users = [
        mount_target_name(kind, path)
        for (kind, path), target in sorted(mounts.targets.items())
        if target.key == key
    ]
    for (kind, path), live_mount in context.unmanaged_mounts(mounts.claimed, pruning.disabled):
        if context.loses_backend(live_mount, key):
            users.append(mount_target_name(kind, path))
    return users


def _connection_users_after(
    context: Context, key: CatalogKey, planned: Sequence[ScopedMounts]
) -> list[str]:
    """Database connections of every namespace, declared or not, that would run nothing
    once `key` is gone.

    Deregistering the version a connection runs leaves it serving until its next
    restart, which then fails: the connection is dead while its config names it.
    """
    if key[0] != "database":
        return []
    users = [
        part.scope.named(connection_target_name(*connection))
        for part in planned
        for connection, target in sorted(part.connections.targets.items())
        if target.key == key
    ]
    declared = {
        (part.scope.namespace, *connection)
        for part in planned
        for connection in part.connections.targets
    }
    held = {
        (part.scope.namespace, name)
        for part in planned
        for names in part.connections.held_on.values()
        for name in names
    }
    disabled = {
        (part.scope.namespace, path)
        for part in planned
        for kind, path in part.pruning.disabled
        if kind == "secret"
    }
    for user in context.usage.connections():
        if user.plugin != key[1] or (user.namespace, user.path) in disabled:
            continue
        if (user.namespace, user.path, user.connection) in declared:
            continue
        if (user.namespace, user.name) in held:
            continue
        now = user.runs(context.external, context.builtins)
        after = user.runs(context.entries_after, context.builtins)
        if now is not None and now.key == key and after is None:
            users.append(user.named_from(context.namespace))
    return users


def _unmanaged_followers(
    context: Context, key: CatalogKey, mounts: MountChanges, pruning: Pruning
) -> list[str]:
    """Unmanaged unpinned mounts that follow the unversioned shadow `key` of a built-in."""
    plugin_type, name, version = key
    if (
        version
        or (plugin_type, name) not in context.builtins
        or (plugin_type, name) in HARD_WIRED_BUILTINS
    ):
        return []
    return [
        mount_target_name(kind, path)
        for (kind, path), live_mount in context.unmanaged_mounts(mounts.claimed, pruning.disabled)
        if (kind, live_mount.plugin) == (plugin_type, name) and not live_mount.plugin_version
    ]
