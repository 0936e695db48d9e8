"""plan(desired, live) -> Plan: pure, deterministic, no I/O.

The planner decides; the executor only carries out. Planning runs in phases,
each a function of what it needs that returns a frozen result, so the order
of the phases follows from their arguments:

- `_context`: the inputs indexed once (what the file declares, what the
  server has, which entries this plan retires) and how plans name things;
- `_catalog`: catalog writes (register, update, database plugin reloads);
- `_mounts`: each declared mount (move, enable, replace, tune, reload), then
  the unmanaged ones (disable when pruning);
- `_cleanup`: deregistrations, refused while a mount left would need them;
- `_server_owned`: references to entries the server's configuration owns,
  and mounts pinned to entries the catalog lacks;
- `_overrides`: warnings naming every mount an override of a built-in changes.

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
from reconciler.planner._catalog import plan_catalog_writes
from reconciler.planner._cleanup import plan_deregistrations
from reconciler.planner._context import (
    Context,
    HeldUpgrade,
    catalog_target_name,
    mount_target_name,
    parse_catalog_target,
)
from reconciler.planner._mounts import plan_declared_mounts, plan_unmanaged_mounts, reload_actions
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
    context = Context.of(desired, live, frozenset(replace), frozenset(held))
    catalog = plan_catalog_writes(context)
    mounts = plan_declared_mounts(context, catalog.changed)
    pruning = plan_unmanaged_mounts(context, mounts.claimed, catalog.changed)
    cleanup = plan_deregistrations(context, mounts, pruning)
    server_owned = plan_server_references(context, mounts, pruning)
    phases = (catalog, mounts, pruning, cleanup, server_owned)
    actions = [
        *(action for phase in phases for action in phase.actions),
        *reload_actions(context, mounts.reloads | pruning.reloads, mounts.targets),
    ]
    warnings = [
        *(warning for phase in phases for warning in phase.warnings),
        *override_warnings(context, catalog.changed, mounts, pruning),
        *leftover_override_warnings(context, mounts, pruning),
    ]
    return Plan(
        desired=source or DesiredSource(),
        server=live.server,
        fingerprint=fingerprint(live),
        max_destroy=desired.settings.max_destroy,
        replace=sorted({catalog_target_name(key) for key in replace}),
        actions=sorted(
            actions,
            key=lambda a: (
                a.stage != Stage.CONVERGE,
                KIND_ORDER[a.kind],
                not isinstance(a, ReloadAction) or not a.canary,
                a.target,
            ),
        ),
        errors=_in_order(error for phase in phases for error in phase.errors),
        warnings=_in_order(warnings),
    )


def _in_order(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.target, p.message))
