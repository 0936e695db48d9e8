"""One reconcile pass, as the CLI, the watcher and the demo run it: read → plan → apply."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from reconciler.executor import ApplyOptions, ApplyResult, Progress, apply_plan
from reconciler.plan import DesiredSource, Plan
from reconciler.planner import CatalogKey, HeldUpgrade, plan
from reconciler.state import read_live_state

if TYPE_CHECKING:
    from reconciler.client import Client
    from reconciler.loader import LoadedDesired


def plan_for(
    client: Client,
    loaded: LoadedDesired,
    *,
    replace: Collection[CatalogKey] = (),
    held: Collection[HeldUpgrade] = (),
) -> Plan:
    """Read the live state and plan the loaded desired state against it."""
    live = read_live_state(client)
    source = DesiredSource(path=str(loaded.path), sha256=loaded.sha256)
    return plan(loaded.state, live, source=source, replace=replace, held=held)


def apply(
    client: Client,
    the_plan: Plan,
    loaded: LoadedDesired,
    options: ApplyOptions | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    """Apply a plan made from `loaded` (its env values come from there) and verify."""
    return apply_plan(
        client,
        lambda: read_live_state(client),
        the_plan,
        loaded.state,
        options or ApplyOptions(),
        progress,
    )
