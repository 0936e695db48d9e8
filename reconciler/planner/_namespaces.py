"""Warnings about the mounts of other namespaces that a catalog write changes.

The one catalog serves every namespace, but a plan changes the mounts of its
own namespace only: a mount elsewhere that runs an updated entry keeps the old
binary until someone with access to that namespace reloads it.
"""

from __future__ import annotations

from reconciler.plan import Problem
from reconciler.planner._context import Context, catalog_target_name, elsewhere_name, problem
from reconciler.resolver import CatalogKey


def elsewhere_warnings(context: Context, changed: frozenset[CatalogKey]) -> tuple[Problem, ...]:
    """One warning per updated entry that mounts of other namespaces run now."""
    warnings = []
    for key in sorted(changed & set(context.external)):
        users = [
            elsewhere_name(live_mount)
            for live_mount in context.mounts_elsewhere()
            if (live_mount.kind, live_mount.plugin) == key[:2]
            and (running := context.running_now(live_mount)) is not None
            and running.key == key
        ]
        if users:
            warnings.append(
                problem(
                    catalog_target_name(key),
                    "updated, but these mounts of other namespaces run it and keep the old "
                    "binary until reloaded in their namespace: " + ", ".join(users),
                )
            )
    return tuple(warnings)
