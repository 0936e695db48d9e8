"""Mounts that do not answer: every namespace's, whatever the cause (SPEC §12, §14).

The reasons come from `resolver.mount_failure`; this phase only lists them for the
plan's `not_answering`, and warns about those of namespaces the plan does not manage
(the mounts of the file's scopes carry their own reload, error or warning).
"""

from __future__ import annotations

from reconciler.plan import NotAnswering, Problem
from reconciler.planner._context import Context, elsewhere_name, problem
from reconciler.resolver import mount_failure


def not_answering(context: Context) -> tuple[NotAnswering, ...]:
    """Every live mount, of every namespace read, whose backend does not answer."""
    found = []
    for name, mount in context.every_mount_named():
        failure = mount_failure(mount, context.external, context.builtins)
        if failure is not None:
            found.append(
                NotAnswering(
                    target=name,
                    kind=mount.kind,
                    path=mount.path,
                    namespace=mount.namespace,
                    plugin=mount.plugin,
                    cause=failure.cause,
                    fix=failure.fix,
                )
            )
    return tuple(found)


def dead_elsewhere_warnings(
    context: Context, managed_namespaces: frozenset[str]
) -> tuple[Problem, ...]:
    """A warning per dead mount of a namespace the plan does not manage."""
    return tuple(
        problem(elsewhere_name(mount), f"({mount.plugin}) {failure}")
        for mount in context.mounts_elsewhere()
        if mount.namespace not in managed_namespaces
        and (failure := mount_failure(mount, context.external, context.builtins)) is not None
    )
