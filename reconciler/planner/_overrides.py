"""Warnings that name every mount (or database connection) an override of a built-in
changes, managed or not, and every built-in mount a leftover override (registered, no
longer declared) shadows."""

from __future__ import annotations

from reconciler.plan import Problem
from reconciler.planner._connections import (
    ConnectionChanges,
    live_connections,
)
from reconciler.planner._context import (
    Context,
    MountKey,
    catalog_target_name,
    problem,
)
from reconciler.planner._mounts import MountChanges, Pruning
from reconciler.resolver import HARD_WIRED_BUILTINS, CatalogKey, api_path, newest_version
from reconciler.usage import connection_target_name, mount_target_name


def override_warnings(
    context: Context,
    changed: frozenset[CatalogKey],
    mounts: MountChanges,
    pruning: Pruning,
    connections: ConnectionChanges,
    *,
    only_affecting: bool = False,
) -> tuple[Problem, ...]:
    """One warning per present entry named like a built-in, listing the mounts it affects.

    A database plugin runs in connections, not mounts: its warning lists those.
    `only_affecting` leaves out the entries that affect no mount (for the namespaces
    below the file's own: the file's namespace already names every override once).
    """
    warnings = []
    for key in sorted(context.present):
        plugin_type, name, version = key
        if (plugin_type, name) not in context.builtins or (
            plugin_type,
            name,
        ) in HARD_WIRED_BUILTINS:
            continue
        if plugin_type == "database":
            affected = _connections_on(context, key, connections)
            things = "connection"
        else:
            affected = [
                f"{mount_target_name(*mount)} ({state})"
                for mount, state in sorted(
                    _declared_on(key, mounts)
                    | _unmanaged_on(context, key, changed, mounts, pruning)
                )
            ]
            things = "mount"
        if only_affecting and not affected:
            continue
        scope = (
            f"every unpinned {things} of that name" if version == "" else f"{things}s pinned to it"
        )
        listing = "affected: " + ", ".join(affected) if affected else f"no {things} affected yet"
        warnings.append(
            problem(
                catalog_target_name(key),
                f"overrides the built-in {plugin_type} plugin {name!r} for {scope}; " + listing,
            )
        )
    return tuple(warnings)


def _connections_on(context: Context, key: CatalogKey, connections: ConnectionChanges) -> list[str]:
    """Connections that run the database override `key` once the plan is applied."""
    affected = [
        f"{connection_target_name(*connection)} (declared)"
        for connection, target in sorted(connections.targets.items())
        if target.key == key
    ]
    for connection, live in sorted(live_connections(context).items()):
        if connection in connections.targets or (live.plugin, live.plugin_version) != key[1:]:
            continue
        affected.append(f"{connection_target_name(*connection)} (unmanaged, at its next reset)")
    return affected


def _declared_on(key: CatalogKey, mounts: MountChanges) -> set[tuple[MountKey, str]]:
    """Declared mounts that run the override `key` once the plan is applied."""
    reloading = mounts.reloads.paths
    found = set()
    for (kind, path), target in mounts.targets.items():
        if target.key != key:
            continue
        if (kind, path) in mounts.enabled:
            state = "enabled on it"
        elif api_path(kind, path) in reloading:
            state = "reloaded onto it now"
        else:
            state = "runs it"
        found.add(((kind, path), state))
    return found


def _unmanaged_on(
    context: Context,
    key: CatalogKey,
    changed: frozenset[CatalogKey],
    mounts: MountChanges,
    pruning: Pruning,
) -> set[tuple[MountKey, str]]:
    """Unmanaged mounts the override `key` takes over (they are never reloaded by a plan)."""
    plugin_type, name, version = key
    entry = context.present[key]
    found = set()
    for mount, live_mount in context.unmanaged_mounts(mounts.claimed, pruning.disabled):
        if (mount[0], live_mount.plugin) != (plugin_type, name):
            continue
        pinned = live_mount.plugin_version == version != ""
        shadowed = version == "" and not live_mount.plugin_version
        if not (pinned or shadowed):
            continue
        running = (live_mount.running_plugin_version, live_mount.running_sha256)
        if running == (version, entry.sha256) and key not in changed:
            state = "unmanaged, runs it"
        else:
            state = "unmanaged, switches at its next reload"
        found.add((mount, state))
    return found


def leftover_override_warnings(
    context: Context, mounts: MountChanges, pruning: Pruning
) -> tuple[Problem, ...]:
    """One warning per registered override the file no longer declares and the plan keeps.

    Left alone it is "unmanaged", yet a built-in mount of that name switches to it at its
    next reload, and a new mount enabled without a pin runs the newest registered entry.
    """
    warnings = []
    for key in sorted(context.external):
        plugin_type, name, version = key
        builtin = (plugin_type, name)
        if (
            builtin not in context.builtins
            or builtin in HARD_WIRED_BUILTINS
            or key in context.present
            or key not in context.entries_after
        ):
            continue
        shadowed = sorted(
            mount_target_name(*where)
            for where, live_mount in context.live_mounts.items()
            if where not in pruning.disabled
            and (live_mount.kind, live_mount.plugin) == builtin
            and (target := context.live_resolution(live_mount, context.entries_after)) is not None
            and target.key == key
            and mounts.targets.get(where, target).key == key
        )
        registered = [k[2] for k in context.entries_after if k[:2] == builtin]
        newest = newest_version(registered)
        runs = "it" if newest == version else f"{name} {newest or '(unversioned)'}"
        listing = (
            "built-in mounts it shadows (they run it from their next reload): "
            + ", ".join(shadowed)
            if shadowed
            else "it shadows no mount yet"
        )
        warnings.append(
            problem(
                catalog_target_name(key),
                f"not declared, yet registered: it overrides the built-in {plugin_type} plugin "
                f"{name!r}; {listing}; a new mount of {name!r} without a plugin_version would "
                f"run {runs}, not the built-in: declare it state: absent to remove it",
            )
        )
    return tuple(warnings)
