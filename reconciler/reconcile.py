"""One reconcile pass, as `apply`, `watch` and the demo run it.

load → read live → plan → policy → apply → verify. The policy (plan errors, refused
destructive actions, the confirmation) is decided here and nowhere else; the front
ends take part through `PassHooks` (show the plan, confirm, render progress) and
present the `PassResult` they get back.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import defaults
from reconciler.documents import ActionRef, ApplyDocument, RollbackMount
from reconciler.errors import PlanFileError, PlanRefused, StaleState
from reconciler.executor import (
    ApplyOptions,
    ApplyResult,
    Progress,
    apply_plan,
)
from reconciler.loader import LoadedDesired, load_desired
from reconciler.lock import server_lock
from reconciler.nodes import Node, discover_nodes
from reconciler.plan import Action, DesiredSource, Plan
from reconciler.planner import HeldUpgrade, parse_catalog_target, plan
from reconciler.resolver import CatalogKey
from reconciler.state import read_live_state

if TYPE_CHECKING:
    from reconciler.client import Client
    from reconciler.model import ServerIdentity

# Enough of a file's head to tell a saved plan from a desired-state file.
_PLAN_HEAD_BYTES = 64


# --- load ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PassInput:
    """What a pass reconciles toward: a loaded file and, for `apply PLAN.json`, its saved plan."""

    loaded: LoadedDesired
    saved: Plan | None = None


def load_target(path: Path, max_file_size: int = defaults.MAX_FILE_SIZE) -> PassInput:
    """`apply`'s argument: a desired-state file, or a saved plan and the file it names."""
    saved = _read_saved_plan(path)
    if saved is None:
        return PassInput(load_desired(path, max_file_size=max_file_size))
    if not saved.desired.path:
        raise PlanFileError("the plan names no desired-state file")
    desired = saved_desired_path(path, saved.desired.path)
    if not desired.is_file():
        raise PlanFileError(
            f"{path}: the desired-state file it was made from, {desired}, does not exist "
            f"(the plan names it as {saved.desired.path!r}, relative to the plan's folder): "
            "keep the plan next to the files it was made with, or make a new plan"
        )
    loaded = load_desired(desired, max_file_size=max_file_size)
    if loaded.sha256 != saved.desired.sha256:
        raise PlanFileError(
            f"{desired} changed since the plan was made (its content's sha256 was "
            f"{saved.desired.sha256[:12]}…, is {loaded.sha256[:12]}…): nothing was changed; "
            f"make a new plan with `reconciler plan {desired} --out {path}` and review it"
        )
    return PassInput(loaded, saved)


def saved_desired_path(plan_file: Path, recorded: str) -> Path:
    """The desired-state file a saved plan names: relative paths are relative to the
    plan file's folder, so that a plan and its file can move together (another
    checkout, another working directory, another CI job)."""
    named = Path(recorded)
    return named if named.is_absolute() else plan_file.parent / named


def path_for_saved_plan(desired: Path, plan_file: Path) -> str:
    """How `plan --out` records the desired-state file: relative to the plan's folder."""
    return os.path.relpath(desired.resolve(), plan_file.resolve().parent)


def _read_saved_plan(path: Path) -> Plan | None:
    """A saved plan (JSON) or None for a desired-state file (YAML)."""
    # Only the head is read: the desired-state file is size-checked by the loader, and
    # a device or a huge file must not be read whole here. A YAML flow mapping or a
    # desired-state file written as JSON also starts with "{"; a plan starts with its
    # format_version (Plan.to_json), which a desired-state file never has.
    try:
        with path.open("rb") as stream:
            head = stream.read(_PLAN_HEAD_BYTES).lstrip()
    except OSError:
        return None  # the loader reports it, positioned
    if not (head.startswith(b"{") and head[1:].lstrip().startswith(b'"format_version"')):
        return None
    try:
        return Plan.from_json(path.read_text())
    except ValueError as error:
        raise PlanFileError(f"{path}: not a usable plan: {error}") from None


# --- read and plan -----------------------------------------------------------------------


def plan_for(
    client: Client,
    loaded: LoadedDesired,
    *,
    replace: Collection[CatalogKey] = (),
    held: Collection[HeldUpgrade] = (),
    nodes: Sequence[str] = (),
) -> Plan:
    """Read the live state (every node's, on a cluster) and plan the loaded desired state."""
    live = read_live_state(client, nodes_for(client, loaded, nodes))
    source = DesiredSource(path=str(loaded.path), sha256=loaded.sha256)
    return plan(loaded.state, live, source=source, replace=replace, held=held)


def nodes_for(client: Client, loaded: LoadedDesired, given: Sequence[str] = ()) -> list[Node]:
    """The nodes to read and verify: `--node`, else the file's `settings.nodes`, else
    sys/ha-status."""
    return discover_nodes(client, given or loaded.state.settings.nodes)


def remake_saved_plan(client: Client, saved: Plan, loaded: LoadedDesired) -> Plan:
    """Make a saved plan again from its inputs; only a plan that comes out the same is used.

    The file is not trusted: an edited plan (a disable relabelled as safe, say) or one
    made against another state is refused before anything is written.
    """
    replace = [parse_catalog_target(text) for text in saved.replace]
    again = plan_for(client, loaded, replace=replace)
    if again.server != saved.server:
        raise StaleState(
            f"the plan was made against another server ({saved.server.address or '?'}, "
            f"cluster {saved.server.cluster_id or '?'}), not this one "
            f"({again.server.address}, cluster {again.server.cluster_id or '?'})"
        )
    if again.fingerprint != saved.fingerprint:
        raise StaleState(
            "the server's state changed since the plan was made (its catalog or mounts: "
            f"{saved.fingerprint[:19]}… is now {again.fingerprint[:19]}…)"
        )
    differences = plan_differences(saved, again)
    if differences:
        raise PlanFileError(
            "the saved plan is not what its desired file and the server's state give now:\n"
            + "\n".join(f"  {line}" for line in differences)
            + "\nnothing was changed; make a new plan and review it (if none of the above "
            f"was meant to change, the plan file was edited, or made by reconciler "
            f"{saved.reconciler_version})"
        )
    return again


_SKIPPED_IN_COMPARISON = {"reconciler_version", "desired"}


def plan_differences(saved: Plan, again: Plan, limit: int = 8) -> list[str]:
    """What differs between a saved plan and the same plan made again, one line each;
    a changed sha256 is called out as a changed plugin binary."""
    before = saved.model_dump(mode="json", exclude=_SKIPPED_IN_COMPARISON)
    after = again.model_dump(mode="json", exclude=_SKIPPED_IN_COMPARISON)
    lines: list[str] = []
    for where, old, new in _leaf_differences(before, after, ""):
        line = f"{where}: {old!r} → {new!r}"
        if where.endswith("sha256"):
            line += " (a plugin binary changed: check it, then make a new plan)"
        lines.append(line)
    if len(lines) > limit:
        lines = [*lines[:limit], f"… and {len(lines) - limit} more"]
    return lines


def _leaf_differences(old: Any, new: Any, where: str) -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in [*old, *(k for k in new if k not in old)]:
            found += _leaf_differences(old.get(key), new.get(key), f"{where}.{key}".lstrip("."))
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            label = f"{where}[{index}]"
            if isinstance(a, dict) and "kind" in a and "target" in a:
                label += f" ({a['kind']} {a['target']})"
            found += _leaf_differences(a, b, label)
        return found
    if old != new:
        return [(where, _shown(old), _shown(new))]
    return []


def _shown(value: Any) -> Any:
    return f"{len(value)} items" if isinstance(value, list) else value


# --- policy ------------------------------------------------------------------------------


class Verdict(StrEnum):
    """How a pass ended."""

    CONVERGED = "converged"  # nothing to do, or every runnable action applied and verified
    PLAN_ERRORS = "plan-errors"  # nothing was changed
    REFUSED = "refused"  # destructive actions refused: nothing was changed
    DECLINED = "declined"  # the front end's confirmation said no: nothing was changed
    NOT_CONVERGED = "not-converged"  # an action or the verification failed


@dataclass(frozen=True)
class Refusal:
    """A planned action the policy does not run, and why."""

    action: Action
    why: str

    def __str__(self) -> str:
        return f"{self.action.kind.value} {self.action.target}: {self.why}"


@dataclass(frozen=True)
class _Decision:
    runnable: tuple[Action, ...]
    refused: tuple[Refusal, ...]
    verdict: Verdict | None  # None: go on and apply `runnable`


def _decide(the_plan: Plan, options: ApplyOptions) -> _Decision:
    """The one apply policy: plan errors stop everything; refused actions stop it too,
    unless the caller (watch mode) skips them and applies the safe rest."""
    if the_plan.errors:
        return _Decision((), (), Verdict.PLAN_ERRORS)
    refusals = the_plan.refusals(options.allow_destroy)
    refused = tuple(Refusal(the_plan.actions[i], why) for i, why in sorted(refusals.items()))
    if refused and not options.skip_refused:
        return _Decision((), refused, Verdict.REFUSED)
    runnable = tuple(a for i, a in enumerate(the_plan.actions) if i not in refusals)
    return _Decision(runnable, refused, None)


# --- the pass ----------------------------------------------------------------------------


def _ignore(_value: Any) -> None:
    return None


LockHook = Callable[["ServerIdentity"], AbstractContextManager[None]]


@dataclass(frozen=True)
class PassHooks:
    """How a front end takes part in a pass; every hook is optional."""

    # Called with the plan before any decision, to show it.
    on_plan: Callable[[Plan], None] = _ignore
    # Asked (plan, server address) before the first write when there is work; None: go ahead.
    confirm: Callable[[Plan, str], bool] | None = None
    # The executor's progress events, to render; raising from it stops between two actions.
    progress: Progress = _ignore
    # The per-server lock held from reading to verifying; None: `server_lock` with the
    # pass's lock timeout.
    lock: LockHook | None = None


@dataclass(frozen=True)
class PassResult:
    """What one pass found and did; the front ends only present it."""

    verdict: Verdict
    plan: Plan
    address: str
    applied: tuple[Action, ...] = ()
    refused: tuple[Refusal, ...] = ()
    failures: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    failed_upgrades: tuple[HeldUpgrade, ...] = ()
    # Each mount of a failed upgrade after the rollback, per node (rollback.MountOutcome).
    rollback: tuple[dict[str, Any], ...] = ()
    writes: int = 0
    # The actions the policy let through (run or not, when an earlier one failed).
    runnable: tuple[Action, ...] = field(default=(), repr=False)

    @property
    def converged(self) -> bool:
        return self.verdict is Verdict.CONVERGED

    def problems(self) -> list[str]:
        """Why the pass did not converge, one line each (empty when it did)."""
        if self.verdict is Verdict.PLAN_ERRORS:
            return [f"{p.target}: {p.message}" for p in self.plan.errors]
        if self.verdict is Verdict.REFUSED:
            return [str(refusal) for refusal in self.refused]
        if self.verdict is Verdict.DECLINED:
            return ["apply declined"]
        if self.verdict is Verdict.NOT_CONVERGED:
            return list(self.failures) or ["the apply did not converge"]
        return []

    def to_dict(self) -> dict[str, Any]:
        """The document `apply --json` prints (schemas/apply.schema.json), every verdict alike."""
        document = ApplyDocument(
            verdict=self.verdict.value,
            converged=self.converged,
            address=self.address,
            plan=self.plan,
            applied=[ActionRef.of(a) for a in self.applied],
            skipped=[ActionRef.of(r.action) for r in self.refused],
            failures=list(self.failures),
            rolled_back=list(self.rolled_back),
            rollback=[RollbackMount.model_validate(mount) for mount in self.rollback],
            writes=self.writes,
        )
        return document.model_dump(mode="json", by_alias=True, exclude_none=True)


def run_pass(
    client: Client,
    target: PassInput,
    options: ApplyOptions | None = None,
    hooks: PassHooks | None = None,
    *,
    lock_timeout: float = 0.0,
) -> PassResult:
    """One pass under the server's lock: read, plan, decide, apply and verify.

    Raises only for what stops a pass before a plan exists (the server cannot be read,
    a saved plan is stale) and for what a hook raises; every other ending is a verdict.
    """
    options = options or ApplyOptions()
    hooks = hooks or PassHooks()
    if target.saved is not None and options.replace:
        raise PlanFileError(
            "--replace applies when planning; make a new plan with `plan --replace`"
        )
    identity = client.server_identity()
    lock = hooks.lock or (lambda server: server_lock(server, lock_timeout))
    with lock(identity):
        if target.saved is not None:
            the_plan = remake_saved_plan(client, target.saved, target.loaded)
        else:
            the_plan = plan_for(
                client,
                target.loaded,
                replace=options.replace,
                held=options.held,
                nodes=options.nodes,
            )
        hooks.on_plan(the_plan)
        decision = _decide(the_plan, options)
        result = PassResult(
            verdict=decision.verdict or Verdict.CONVERGED,
            plan=the_plan,
            address=identity.address,
            refused=decision.refused,
            runnable=decision.runnable,
        )
        if decision.verdict is not None or not decision.runnable:
            return result
        if hooks.confirm is not None and not hooks.confirm(the_plan, identity.address):
            return dataclasses.replace(result, verdict=Verdict.DECLINED)
        applied = _execute(client, the_plan, target.loaded, options, decision, hooks.progress)
    return dataclasses.replace(
        result,
        verdict=Verdict.CONVERGED if applied.converged else Verdict.NOT_CONVERGED,
        applied=tuple(applied.applied),
        failures=tuple(applied.failures),
        rolled_back=tuple(applied.rolled_back),
        failed_upgrades=tuple(applied.failed_upgrades),
        rollback=tuple(outcome.to_dict() for outcome in applied.rollback),
        writes=applied.writes,
    )


def _execute(
    client: Client,
    the_plan: Plan,
    loaded: LoadedDesired,
    options: ApplyOptions,
    decision: _Decision,
    progress: Progress,
) -> ApplyResult:
    nodes = nodes_for(client, loaded, options.nodes)
    result = apply_plan(
        client,
        lambda: read_live_state(client, nodes),
        the_plan,
        loaded.state,
        options,
        progress,
        skipped=[refusal.action for refusal in decision.refused],
        nodes=nodes,
    )
    return result


def apply(
    client: Client,
    the_plan: Plan,
    loaded: LoadedDesired,
    options: ApplyOptions | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    """Apply a plan made from `loaded` (its env values come from there) and verify.

    The library's entry for a plan already in hand: the same policy as a pass, but a
    plan with errors or refused actions raises PlanRefused before the first write.
    """
    options = options or ApplyOptions()
    decision = _decide(the_plan, options)
    if decision.verdict is Verdict.PLAN_ERRORS:
        raise PlanRefused(
            "the plan has errors and cannot be applied:\n"
            + "\n".join(f"  {p.target}: {p.message}" for p in the_plan.errors)
        )
    if decision.verdict is Verdict.REFUSED:
        raise PlanRefused(
            "refused, nothing was changed:\n"
            + "\n".join(f"  {r.action.target}: {r.why}" for r in decision.refused)
        )
    return _execute(client, the_plan, loaded, options, decision, progress or _ignore)
