"""plan(desired, live) -> Plan: pure, deterministic, no I/O.

The planner decides; the executor only carries out. Planning runs in phases,
each a function of what it needs that returns a frozen result, so the order
of the phases follows from their arguments:

- `_context`: the inputs indexed once (what the file declares, what the
  server has, which entries this plan retires) and how plans name things;
- `_catalog`: catalog writes (register, update);
- `_mounts`: each declared mount (move, enable, replace, tune, reload), then
  the unmanaged ones (disable when pruning);
- `_connections`: each declared database connection (re-pin, reset), in
  each namespace the file manages;
- `_cleanup`: deregistrations, refused while a mount or a connection left,
  of any namespace, would need them;
- `_server_owned`: references to entries the server's configuration owns,
  and mounts and connections of every namespace pinned to entries the
  catalog lacks;
- `_nodes`: per-node drift on a cluster (a node running another binary);
- `_overrides`: warnings naming every mount an override of a built-in changes;
- `_namespaces`: warnings naming the mounts of other namespaces an update leaves
  on the old binary;
- `_dead`: every mount that does not answer, of every namespace, with its cause;
- `_preflight` (`server_version`): the mounts an upgrade to that OpenBao release
  would leave without their built-in.

How the server resolves plugins is not decided here: `reconciler.resolver`.
What every mount and connection of the server uses is `reconciler.usage`, the
one picture every in-use check reads (`Context.usage`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from reconciler.model import DesiredState, LiveState
from reconciler.plan import (
    KIND_ORDER,
    Action,
    ActionKind,
    CreateNamespaceAction,
    DesiredSource,
    Plan,
    PlanNode,
    Problem,
    ReloadAction,
    Stage,
    fingerprint,
)
from reconciler.planner._catalog import (
    CatalogWrites,
    missing_file_warnings,
    plan_catalog_writes,
)
from reconciler.planner._cleanup import ScopedMounts, plan_deregistrations
from reconciler.planner._connections import plan_connections
from reconciler.planner._context import (
    HeldUpgrade,
    Outcome,
    catalog_target_name,
    parse_catalog_target,
)
from reconciler.planner._dead import dead_elsewhere_warnings, not_answering
from reconciler.planner._mounts import (
    behind_the_canaries,
    choose_canaries,
    fresh_moves,
    plan_declared_mounts,
    plan_unmanaged_mounts,
    reload_actions,
    without_doomed,
)
from reconciler.planner._namespaces import (
    binding_errors,
    bound_to_live_catalog,
    elsewhere_warnings,
    namespace_scopes,
    plan_namespace_creation,
    unmanaged_namespace_warnings,
)
from reconciler.planner._nodes import plan_node_reloads, stale_moves
from reconciler.planner._overrides import leftover_override_warnings, override_warnings
from reconciler.planner._preflight import preflight
from reconciler.planner._server_owned import plan_missing_pins, plan_server_references
from reconciler.resolver import CatalogKey, namespace_path
from reconciler.usage import mount_target_name

__all__ = [
    "HeldUpgrade",
    "bound_to_live_catalog",
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
    server_version: str = "",
) -> Plan:
    """Compute the actions that make `live` equal to `desired`.

    `replace` forces a re-register of those catalog entries (and a reload of
    their mounts); `held` lists failed upgrades the watcher has set aside:
    mounts that would move to them stay where they are. `server_version` checks
    every mount against that OpenBao release's built-ins (`releases.UnknownRelease`
    for a release without a list).
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
        # Each namespace's connections are read and written in that namespace.
        connections = plan_connections(scope.context, catalog.changed)
        planned.append(ScopedMounts(scope, mounts, pruning, connections))
    cleanup = plan_deregistrations(context, planned)
    reloads = [
        without_doomed(
            part.scope.context, part.mounts.reloads | part.pruning.reloads, part.mounts.targets
        )
        for part in planned
    ]
    canaries = choose_canaries(
        (
            part.scope.namespace,
            part.scope.named,
            fresh_moves(part.scope.context, its_reloads.converge, part.mounts.targets),
        )
        for part, its_reloads in zip(planned, reloads, strict=True)
    )
    # References are checked once, with the client's namespace's planned changes.
    server_owned = plan_server_references(
        context, planned[0].mounts, planned[0].pruning, planned[0].connections
    )
    outcomes = [
        Outcome(errors=binding_errors(desired, live)),
        creation,
        unmanaged_namespace_warnings(desired, scopes),
        catalog,
        *(
            part.scope.outcome(phase)
            for part, its_reloads in zip(planned, reloads, strict=True)
            for phase in (
                part.mounts,
                part.pruning,
                Outcome(
                    reload_actions(part.scope.context, its_reloads, part.mounts.targets, canaries)
                ),
                Outcome(
                    warnings=override_warnings(
                        part.scope.context,
                        catalog.changed,
                        part.mounts,
                        part.pruning,
                        part.connections,
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
        *(part.scope.outcome(part.connections) for part in planned),
        cleanup,
        server_owned,
        plan_missing_pins(planned),
        Outcome(warnings=elsewhere_warnings(context, catalog.changed)),
        Outcome(warnings=missing_file_warnings(context)),
        Outcome(
            warnings=dead_elsewhere_warnings(
                context, frozenset(scope.namespace for scope in scopes)
            )
        ),
    ]
    checked = None
    if server_version:
        planned_targets = {
            (part.scope.namespace, kind, path): target
            for part in planned
            for (kind, path), target in part.mounts.targets.items()
        }
        checked = preflight(context, server_version, planned_targets)
        outcomes.append(checked)
    actions = [action for outcome in outcomes for action in outcome.actions]
    for part in planned:
        drift = part.scope.outcome(Outcome(actions=plan_node_reloads(part.scope.context, actions)))
        actions.extend(drift.actions)
        outcomes.append(part.scope.outcome(stale_moves(part.scope.context)))
    actions = [_placed(action, context.namespace) for action in actions]
    warnings = [warning for outcome in outcomes for warning in outcome.warnings]
    behind = behind_the_canaries(actions)
    return Plan(
        desired=source or DesiredSource(),
        server=live.server,
        namespaces=[scope.namespace for scope in scopes],
        nodes=[PlanNode(address=node.address, active=node.active) for node in live.nodes],
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
        not_answering=list(not_answering(context)),
        server_version=server_version,
        preflight=list(checked.mounts) if checked is not None else [],
    )


_AT_THE_ROOT = frozenset({ActionKind.REGISTER, ActionKind.UPDATE, ActionKind.DEREGISTER})


def _placed(action: Action, home: str) -> Action:
    """`action` with the namespace its object lives in: a path from the root."""
    if action.kind in _AT_THE_ROOT:
        namespace = ""  # the one catalog
    elif isinstance(action, CreateNamespaceAction):
        namespace = namespace_path(action.params.parent)
    else:
        sent_in = getattr(action.params, "namespace", None)
        namespace = home if sent_in is None else sent_in
    return action.model_copy(update={"namespace": namespace})


def _in_order(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.target, p.message))
