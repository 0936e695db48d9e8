"""`plan --server-version`: which mounts an upgrade to that release would leave dead.

A mount that runs a built-in the target release does not ship stops answering once
the server runs that release (OpenBao 2.7 skips it at start, SPEC §14). Each mount of
every namespace read whose plugin is named after such a built-in is listed with where
it stands (`Plan.preflight`), and is:
- an error while it runs the built-in and the plan leaves it there: the file must
  declare a replacement and pin the mount to it;
- a warning when the plan moves it onto a declared external plugin of the same name
  (apply before upgrading);
- nothing more when it already runs an external plugin: ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.model import LiveMount, MountKind
from reconciler.plan import PreflightMount, PreflightStatus, Problem
from reconciler.planner._context import Context, Outcome, problem
from reconciler.releases import builtins_of_release, last_release_shipping
from reconciler.resolver import HARD_WIRED_BUILTINS, Target

# (namespace, kind, path) of a declared mount → what it runs once the plan is applied.
PlannedTargets = Mapping[tuple[str, MountKind, str], Target]


@dataclass(frozen=True)
class Preflight(Outcome):
    mounts: tuple[PreflightMount, ...] = ()


def preflight(context: Context, release: str, planned: PlannedTargets) -> Preflight:
    """The mounts an upgrade to `release` would leave without their built-in."""
    ships = builtins_of_release(release)
    errors: list[Problem] = []
    warnings: list[Problem] = []
    listed: list[PreflightMount] = []
    for name, mount in context.every_mount_named():
        key = (mount.kind, mount.plugin)
        if mount.reserved or key in ships or key in HARD_WIRED_BUILTINS:
            continue
        if last_release_shipping(key) is None:
            continue  # never a built-in: an external plugin, whatever the release
        now = context.running_now(mount)
        if now is None:
            continue  # already dead: `not_answering` says why
        after = _after(context, mount, planned)
        moved = after is not None and not after.builtin
        # What counts is where the plan leaves it: one that takes a mount back to the
        # built-in makes it unreplaced again.
        if not moved:
            status = PreflightStatus.UNREPLACED
        elif now.builtin:
            status = PreflightStatus.MOVED_BY_THIS_PLAN
        else:
            status = PreflightStatus.RUNS_REPLACEMENT
        listed.append(
            PreflightMount(
                target=name,
                kind=mount.kind,
                path=mount.path,
                namespace=mount.namespace,
                plugin=mount.plugin,
                status=status,
                replacement=after.version if after is not None and moved else "",
            )
        )
        relies = (
            f"runs the built-in {mount.kind} plugin {mount.plugin}, which OpenBao {release} "
            "does not ship"
        )
        if status is PreflightStatus.MOVED_BY_THIS_PLAN and after is not None:
            warnings.append(
                problem(
                    name,
                    f"{relies}: this plan moves it onto the declared {mount.plugin} "
                    f"{after.version or '(unversioned)'}; apply it before upgrading the server",
                )
            )
        elif status is PreflightStatus.UNREPLACED:
            declared = [e.version or '""' for e in context.present_by_name.get(key, ())]
            fix = (
                f"the file declares {mount.plugin} {', '.join(declared)}: pin the mount to it"
                if declared
                else f"declare an external {mount.kind} plugin named {mount.plugin} and pin "
                "the mount to its version"
            )
            errors.append(
                problem(
                    name,
                    f"{relies}: after the upgrade it stops answering (its data stays in "
                    f"storage); {fix}, then apply before upgrading",
                )
            )
    return Preflight(errors=tuple(errors), warnings=tuple(warnings), mounts=tuple(listed))


def _after(context: Context, mount: LiveMount, planned: PlannedTargets) -> Target | None:
    """What the mount runs once the plan is applied: its declared target, or else what the
    catalog after the plan resolves it to (an unversioned override reaches unmanaged ones)."""
    declared = planned.get((mount.namespace, mount.kind, mount.path))
    if declared is not None:
        return declared
    return context.live_resolution(mount, context.entries_after)
