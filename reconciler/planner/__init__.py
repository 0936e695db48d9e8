"""plan(desired, live) -> Plan: pure, deterministic, no I/O.

The planner decides; the executor only carries out. Planning runs in phases,
each a function of what it needs that returns a frozen result, so the order
of the phases follows from their arguments:

- `_context`: the inputs indexed once (what the file declares, what the
  server has, which entries this plan retires) and how plans name things;
- `_catalog`: catalog writes (register, update);
- `_mounts`: each declared mount (move, enable, replace, tune, reload), then
  the unmanaged ones (disable when pruning);
- `_connections`: each declared database connection (re-pin, reset);
- `_cleanup`: deregistrations, refused while a mount (of any namespace) or a
  connection left would need them;
- `_server_owned`: references to entries the server's configuration owns,
  and mounts pinned to entries the catalog lacks;
- `_nodes`: per-node drift on a cluster (a node running another binary);
- `_overrides`: warnings naming every mount an override of a built-in changes;
- `_namespaces`: warnings naming the mounts of other namespaces an update leaves
  on the old binary.

How the server resolves plugins is not decided here: `reconciler.resolver`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from reconciler.model import DesiredState, LiveState
from reconciler.plan import (
    KIND_ORDER,
    DesiredSource,
    Plan,
    Problem,
    ReloadAction,
    Stage,
    fingerprint,
)
from reconciler.planner._catalog import CatalogWrites, plan_catalog_writes
from reconciler.planner._cleanup import ScopedMounts, plan_deregistrations
from reconciler.planner._connections import ConnectionChanges, plan_connections
from reconciler.planner._context import (
    HeldUpgrade,
    Outcome,
    catalog_target_name,
    mount_target_name,
    parse_catalog_target,
)
from reconciler.planner._mounts import (
    behind_the_canaries,
    plan_declared_mounts,
    plan_unmanaged_mounts,
    reload_actions,
)
from reconciler.planner._namespaces import (
    binding_errors,
    bound_to_live_catalog,
    elsewhere_warnings,
    namespace_scopes,
    plan_namespace_creation,
)
from reconciler.planner._nodes import plan_node_reloads
from reconciler.planner._overrides import leftover_override_warnings, override_warnings
from reconciler.planner._server_owned import plan_server_references
from reconciler.resolver import CatalogKey

__all__ = [
    "HeldUpgrade",
    "catalog_target_name",
    "mount_target_name",
    "parse_catalog_target",
    "plan",
]


def plan(
    desired: DesiredState,
    live: LiveState,
    *,
    source: DesiredSource | None = None,
    replace: Collection[CatalogKey] = (),
    held: Collection[HeldUpgrade] = (),
) -> Plan:
    """Compute the actions that make `live` equal to `desired`.

    `replace` forces a re-register of those catalog entries (and a reload of
    their mounts); `held` lists failed upgrades the watcher has set aside:
    mounts that would move to them stay where they are.
    """
    bound = desired.namespace is not None
    if bound:
        desired = bound_to_live_catalog(desired, live)
    scopes = namespace_scopes(desired, live, frozenset(replace), frozenset(held))
    context = scopes[0].context
    creation = plan_namespace_creation(scopes)
    # A file bound to a namespace never writes the catalog.
    catalog = CatalogWrites() if bound else plan_catalog_writes(context)
    planned = []
    for scope in scopes:
        mounts = plan_declared_mounts(scope.context, catalog.changed)
        pruning = plan_unmanaged_mounts(scope.context, mounts.claimed, catalog.changed)
        planned.append(ScopedMounts(scope, mounts, pruning))
    # Connections are read and written in the client's namespace, the first scope.
    connections = plan_connections(context, catalog.changed)
    cleanup = plan_deregistrations(context, planned, connections)
    # References and pins are checked once, against the client's namespace's mounts.
    server_owned = plan_server_references(context, planned[0].mounts, planned[0].pruning)
    outcomes = [
        Outcome(errors=binding_errors(desired, live)),
        creation,
        catalog,
        *(
            part.scope.outcome(phase)
            for part in planned
            for phase in (
                part.mounts,
                part.pruning,
                Outcome(
                    reload_actions(
                        part.scope.context,
                        part.mounts.reloads | part.pruning.reloads,
                        part.mounts.targets,
                    )
                ),
                Outcome(
                    warnings=override_warnings(
                        part.scope.context,
                        catalog.changed,
                        part.mounts,
                        part.pruning,
                        connections if part is planned[0] else ConnectionChanges(),
                        only_affecting=part.scope.elsewhere,
                    )
                ),
                Outcome(
                    warnings=leftover_override_warnings(
                        part.scope.context, part.mounts, part.pruning
                    )
                ),
            )
        ),
        connections,
        cleanup,
        server_owned,
        Outcome(warnings=elsewhere_warnings(context, catalog.changed)),
    ]
    actions = [action for outcome in outcomes for action in outcome.actions]
    actions.extend(plan_node_reloads(context, actions))
    warnings = [warning for outcome in outcomes for warning in outcome.warnings]
    behind = behind_the_canaries(actions)
    return Plan(
        desired=source or DesiredSource(),
        server=live.server,
        namespaces=[scope.namespace for scope in scopes],
        fingerprint=fingerprint(live),
        max_destroy=desired.settings.max_destroy,
        replace=sorted({catalog_target_name(key) for key in replace}),
        actions=sorted(
            actions,
            key=lambda a: (
                a.stage != Stage.CONVERGE,
                behind(a),
                KIND_ORDER[a.kind],
                not isinstance(a, ReloadAction) or not a.canary,
                a.target,
            ),
        ),
        errors=_in_order(error for outcome in outcomes for error in outcome.errors),
        warnings=_in_order(warnings),
    )


def _in_order(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.target, p.message))
