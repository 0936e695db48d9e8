"""Phase 5, entries the server's configuration owns: references checked, missing pins found.

A `managed_by: server` item only refers to a catalog entry that a `plugin`
stanza owns; the plan never writes it, so it can only check it. A mount pinned
to a version the catalog no longer holds (a stanza removed and SIGHUP sent)
keeps serving until its next reload, which stops it and leaves it without a
backend: every plan says so until the mount moves.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.plan import Problem
from reconciler.planner._cleanup import ScopedMounts
from reconciler.planner._connections import ConnectionChanges
from reconciler.planner._context import (
    OWNED_BY_SERVER,
    Context,
    MountKey,
    Outcome,
    catalog_target_name,
    problem,
)
from reconciler.planner._mounts import MountChanges, Pruning
from reconciler.resolver import CatalogKey, version_order
from reconciler.usage import connection_target_name, mount_target_name


def plan_server_references(
    context: Context, mounts: MountChanges, pruning: Pruning, connections: ConnectionChanges
) -> Outcome:
    """Errors and warnings for references to entries the server's configuration owns."""
    users = _users_after(context, mounts, pruning, connections)
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for key, entry in sorted(context.present.items()):
        if entry.managed_by != "server":
            continue
        target = catalog_target_name(key)
        live_entry = context.external.get(key)
        if live_entry is None:
            message = (
                "managed_by: server, but not in the catalog: add its `plugin` stanza to the "
                "server configuration and send SIGHUP"
            )
            if key in users:
                errors.append(problem(target, f"{message} ({', '.join(users[key])} use it)"))
            else:
                warnings.append(problem(target, message))
        elif not live_entry.declarative:
            errors.append(
                problem(
                    target,
                    "managed_by: server, but registered through the API, not by a stanza: "
                    "the server stops its whole declarative pass at it; deregister it, "
                    "then send SIGHUP",
                )
            )
        elif entry.sha256 is not None and entry.sha256 != live_entry.sha256:
            errors.append(
                problem(
                    target,
                    f"managed_by: server expects sha256 {entry.sha256}, the catalog has "
                    f"{live_entry.sha256}: change the file or the stanza",
                )
            )
    warnings += _stanzas_still_in_use(context, users)
    return Outcome((), tuple(errors), tuple(warnings))


def _users_after(
    context: Context,
    mounts: MountChanges,
    pruning: Pruning,
    connections: ConnectionChanges | None = None,
) -> dict[CatalogKey, list[str]]:
    """External entry → the mounts and connections, of every namespace, that run it once
    the plan is applied."""
    users: dict[CatalogKey, list[str]] = {}
    declared = connections.targets if connections is not None else {}
    for connection, target in sorted(declared.items()):
        if target.key is not None:
            users.setdefault(target.key, []).append(connection_target_name(*connection))
    for user in context.usage.users:
        home = user.namespace == context.namespace
        if home and (user.kind == "mount" or (user.path, user.connection) in declared):
            continue  # the client's mounts and declared connections: with the plan's changes
        after = user.runs(context.entries_after, context.builtins)
        if after is not None and after.key is not None:
            users.setdefault(after.key, []).append(user.named_from(context.namespace))
    for (kind, path), target in sorted(mounts.targets.items()):
        if target.key is not None:
            users.setdefault(target.key, []).append(mount_target_name(kind, path))
    for (kind, path), live_mount in context.unmanaged_mounts(mounts.claimed, pruning.disabled):
        after = context.live_resolution(live_mount, context.entries_after)
        if after is not None and after.key is not None:
            users.setdefault(after.key, []).append(mount_target_name(kind, path))
    return users


def plan_missing_pins(planned: Sequence[ScopedMounts]) -> Outcome:
    """An error for every mount and connection of the file's namespaces (a warning for
    those of other namespaces) that the plan leaves pinned to an external version the
    catalog lacks: its next reload or reset fails."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for part in planned:
        errors += map(
            part.scope.problem, _missing_pins(part.scope.context, part.mounts, part.pruning)
        )
    context = planned[0].scope.context
    managed = {part.scope.namespace for part in planned}
    declared = {part.scope.namespace: part.connections.targets for part in planned}
    for user, key in context.usage.pinned_to_missing():
        if key in context.external or key in context.entries_after:
            continue  # an entry this plan deregisters is refused by cleanup, naming its users
        if user.kind == "mount" and user.namespace in managed:
            continue  # its scope's own check above knows what the plan does to it
        if user.kind == "connection":
            target = declared.get(user.namespace, {}).get((user.path, user.connection))
            if target is not None and target.key != key:
                continue  # the plan re-pins it: the repair
        name = user.named_from(context.namespace)
        fix = (
            f"re-pin it to a version the catalog holds (`bao write "
            f"{user.namespace}{user.path}config/{user.connection} plugin_version=...`) "
            "or register this version again"
            if user.kind == "connection"
            else "pin it to a version the catalog holds or register this version again"
        )
        restart = "reset" if user.kind == "connection" else "reload"
        # Outside the file's namespaces it is someone else's to fix: said, not blocking.
        found = errors if user.namespace.startswith(context.namespace) else warnings
        found.append(
            problem(
                name,
                f"pinned to {catalog_target_name(key)}, which is not in the catalog: its next "
                f"{restart} will fail and leave it without a backend; {fix}",
            )
        )
    return Outcome(errors=tuple(errors), warnings=tuple(warnings))


def _missing_pins(context: Context, mounts: MountChanges, pruning: Pruning) -> list[Problem]:
    """Live mounts the plan leaves pinned to an external version the catalog lacks now."""
    found: list[Problem] = []
    for (kind, path), live_mount in sorted(context.live_mounts.items()):
        key: MountKey = (kind, path)
        if live_mount.reserved or key in pruning.disabled or key in mounts.enabled:
            continue
        pinned = (kind, live_mount.plugin, live_mount.plugin_version)
        if not live_mount.plugin_version or pinned in context.external:
            continue  # an entry this plan deregisters is refused by cleanup, naming its users
        declared = mounts.targets.get(key)
        if declared is None and key in mounts.claimed:
            continue  # declared but resolving to nothing, or moved away: its own error or repair
        if declared is not None and declared.key != pinned:
            continue  # the plan moves it: the repair
        if context.live_resolution(live_mount, context.entries_after) is not None:
            continue
        entry = catalog_target_name((kind, live_mount.plugin, live_mount.plugin_version))
        found.append(
            problem(
                mount_target_name(kind, path),
                f"pinned to {entry}, which is not in the catalog: its next reload will fail "
                "and leave it without a backend; pin it to a version the catalog holds",
            )
        )
    return found


def _stanzas_still_in_use(context: Context, users: dict[CatalogKey, list[str]]) -> list[Problem]:
    """Older declarative versions that mounts still run, while a newer one is declared."""
    found: list[Problem] = []
    for key in sorted(context.declarative):
        plugin_type, name, version = key
        newer = [
            other
            for other in context.declarative
            if other[:2] == (plugin_type, name) and version_order(other[2]) > version_order(version)
        ]
        if newer and key in users:
            found.append(
                problem(
                    catalog_target_name(key),
                    f"{OWNED_BY_SERVER}: remove its stanza only after "
                    f"{', '.join(users[key])} move to a newer version",
                )
            )
    return found
