"""One reconcile pass, as the CLI, the watcher and the demo run it: read → plan → apply."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from reconciler.errors import PlanFileError, StaleState
from reconciler.executor import ApplyOptions, ApplyResult, Progress, apply_plan
from reconciler.plan import DesiredSource, Plan
from reconciler.planner import HeldUpgrade, parse_catalog_target, plan
from reconciler.resolver import CatalogKey
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


def remake_saved_plan(client: Client, saved: Plan, loaded: LoadedDesired) -> Plan:
    """Make a saved plan again from its inputs; only a plan that comes out the same is used.

    The file is not trusted: an edited plan (a disable relabelled as safe, say) or one
    made against another state is refused before anything is written.
    """
    replace = [parse_catalog_target(text) for text in saved.replace]
    again = plan_for(client, loaded, replace=replace)
    if again.fingerprint != saved.fingerprint:
        raise StaleState()
    if again.model_dump(exclude={"reconciler_version"}) != saved.model_dump(
        exclude={"reconciler_version"}
    ):
        raise PlanFileError(
            "the saved plan is not what its desired file and the server's state give "
            f"(edited, or made by reconciler {saved.reconciler_version}): nothing was changed; "
            "make a new plan"
        )
    return again


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
