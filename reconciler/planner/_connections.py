"""Phase 3, database connections: re-pin or reset what the file's connections run (SPEC §10).

A connection's plugin runs inside its database mount, never in the mount table:
the server neither reloads it by name nor by mount in a way that shows failures.
Each declared connection is moved to its version by writing `plugin_version`
alone to `<mount>/config/<name>` (the stored connection details stay; the new
plugin must start and connect, or the write is refused and the old one keeps
running), and restarted with `<mount>/reset/<name>` when the binary behind its
version changes in place. Each namespace's context plans the connections of
its own database mounts, the requests sent in that namespace. Connections the
file does not list are left alone, but they still count, in every namespace,
when an entry is about to be deregistered (`_cleanup`, through the usage
picture).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.model import DATABASE_ENGINE, Connection, LiveConnection
from reconciler.plan import (
    Action,
    ConnectionParams,
    ConnectionPinParams,
    FieldChange,
    Problem,
    ReasonCode,
    RepinAction,
    ResetAction,
)
from reconciler.planner._context import (
    Context,
    Outcome,
    catalog_target_name,
    problem,
)
from reconciler.resolver import (
    CatalogKey,
    Target,
    Unresolved,
    connection_pin,
    connection_runs,
    resolve_connection,
)
from reconciler.usage import connection_target_name

# (database mount path, connection name)
ConnectionKey = tuple[str, str]


@dataclass(frozen=True)
class ConnectionChanges(Outcome):
    # What each declared connection runs once the plan is applied.
    targets: Mapping[ConnectionKey, Target] = field(default_factory=dict)
    # Entries that connections stay on while their upgrade is held (kept registered).
    held_on: Mapping[CatalogKey, tuple[str, ...]] = field(default_factory=dict)


def live_connections(context: Context) -> dict[ConnectionKey, LiveConnection]:
    return {(c.mount, c.name): c for c in context.live.connections}


def plan_connections(context: Context, changed: frozenset[CatalogKey]) -> ConnectionChanges:
    """Re-pin each declared connection whose pin differs; reset those whose binary changed.

    `changed` holds the catalog entries this plan registers or updates.
    """
    live = live_connections(context)
    actions: list[Action] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    targets: dict[ConnectionKey, Target] = {}
    held_on: dict[CatalogKey, list[str]] = {}
    for kind, mount in context.desired.mounts():
        if kind != "secret" or mount.plugin != DATABASE_ENGINE or not mount.connections:
            continue
        for connection in mount.connections:
            key = (mount.path, connection.name)
            target_name = connection_target_name(mount.path, connection.name)
            target = _resolve(context, connection)
            if target is None:
                errors.append(
                    problem(
                        target_name,
                        f"plugin {connection.plugin!r} with version "
                        f"{connection.version or '(unpinned)'} is neither a declared "
                        "`type: database` entry nor a built-in database plugin of this server",
                    )
                )
                continue
            current = live.get(key)
            if current is None:
                errors.append(_missing(mount.path, connection))
                continue
            if current.plugin != connection.plugin:
                errors.append(
                    problem(
                        target_name,
                        f"runs plugin {current.plugin!r}, the file says {connection.plugin!r}: "
                        "a connection's plugin changes only together with its connection "
                        f"details, so write {mount.path}config/{connection.name} with them",
                    )
                )
                continue
            if _held(context, target) and connection_pin(target) != current.plugin_version:
                # Watch mode set this upgrade aside after it failed: stay where it is.
                warnings.append(
                    problem(
                        target_name,
                        f"upgrade to {connection.plugin} {target.version} failed before and "
                        "is held until the file changes",
                    )
                )
                staying = connection_runs(
                    current.plugin,
                    current.plugin_version,
                    frozenset(context.external),
                    context.builtins,
                )
                if staying is not None and staying.key is not None:
                    held_on.setdefault(staying.key, []).append(target_name)
                continue
            targets[key] = target
            action = _change(context, changed, current, target, target_name)
            if action is not None:
                actions.append(action)
    warnings += _unmanaged_left_behind(context, changed, live, targets)
    return ConnectionChanges(
        tuple(actions),
        tuple(errors),
        tuple(warnings),
        targets,
        {key: tuple(where) for key, where in held_on.items()},
    )


def _held(context: Context, target: Target) -> bool:
    return (
        not target.builtin
        and (
            target.type,
            target.name,
            target.version,
            target.sha256,
        )
        in context.held
    )


def _resolve(context: Context, connection: Connection) -> Target | None:
    declared = context.declared_by_name.get(("database", connection.plugin), ())
    outcome = resolve_connection(connection.plugin, connection.version, declared, context.builtins)
    if isinstance(outcome, Unresolved):
        return None
    if outcome.key is not None and outcome.key not in context.present:
        return None
    return outcome


def _missing(mount: str, connection: Connection) -> Problem:
    return problem(
        connection_target_name(mount, connection.name),
        f"connection {connection.name!r} does not exist on {mount}: the file never holds "
        "credentials, so create it with its connection details first (`bao write "
        f"{mount}config/{connection.name} plugin_name={connection.plugin} "
        "connection_url=... username=... password=...`), then plan again",
    )


def _change(
    context: Context,
    changed: frozenset[CatalogKey],
    current: LiveConnection,
    target: Target,
    target_name: str,
) -> Action | None:
    pin = connection_pin(target)
    if current.plugin_version != pin:
        return RepinAction(
            target=target_name,
            reason=f"pinned to {_shown(current.plugin_version)}, the file says {_shown(pin)}",
            reason_code=ReasonCode.CONNECTION_PIN_DIFFERS,
            changes=[FieldChange(field="plugin_version", before=current.plugin_version, after=pin)],
            params=ConnectionPinParams(
                mount=current.mount,
                name=current.name,
                plugin=current.plugin,
                version=pin,
                previous_version=current.plugin_version,
            ),
        )
    if target.key is None:
        return None
    if target.key in changed and target.key in context.external:
        reason, code = (
            f"{catalog_target_name(target.key)} is re-registered in place: the connection "
            "keeps the old binary until reset",
            ReasonCode.DATABASE_PLUGIN_UPDATED,
        )
    elif target.key[2] == "" and target.key not in context.external:
        reason, code = (
            f"the new unversioned {catalog_target_name(target.key)} shadows the built-in: "
            "the connection runs the built-in until reset",
            ReasonCode.CONNECTION_NEWLY_SHADOWED,
        )
    else:
        return None
    return ResetAction(
        target=target_name,
        reason=reason,
        reason_code=code,
        params=ConnectionParams(mount=current.mount, name=current.name, plugin=current.plugin),
    )


def _unmanaged_left_behind(
    context: Context,
    changed: frozenset[CatalogKey],
    live: Mapping[ConnectionKey, LiveConnection],
    declared: Mapping[ConnectionKey, Target],
) -> list[Problem]:
    """Connections the file does not list whose binary this plan changes: not reset."""
    warnings = []
    for key, connection in sorted(live.items()):
        if key in declared:
            continue
        runs = connection_runs(
            connection.plugin,
            connection.plugin_version,
            frozenset(context.external),
            context.builtins,
        )
        if runs is not None and runs.key in changed and runs.key in context.external:
            warnings.append(
                problem(
                    connection_target_name(*key),
                    f"unmanaged connection: keeps the old binary of "
                    f"{catalog_target_name(runs.key)} until it is reset "
                    f"({key[0]}reset/{key[1]}) or declared",
                )
            )
    return warnings


def _shown(version: str) -> str:
    return version or '"" (unpinned)'
