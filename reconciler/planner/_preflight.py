"""`plan --server-version`: which mounts an upgrade to that release would leave dead.

A mount that runs a built-in the target release does not ship stops answering once
the server runs that release (OpenBao 2.7 skips it at start, SPEC §14). Each such
mount, of every namespace read, is:
- a warning when the plan moves it onto a declared external plugin of the same name
  (apply before upgrading);
- an error otherwise: the file must declare a replacement and pin the mount to it.
A mount that already runs an external plugin is ready, and not named.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.model import LiveMount, MountKind
from reconciler.plan import Problem
from reconciler.planner._context import Context, Outcome, elsewhere_name, mount_target_name, problem
from reconciler.releases import builtins_of_release
from reconciler.resolver import HARD_WIRED_BUILTINS, Target

# (namespace, kind, path) of a declared mount → what it runs once the plan is applied.
PlannedTargets = Mapping[tuple[str, MountKind, str], Target]


def preflight(context: Context, release: str, planned: PlannedTargets) -> Outcome:
    """The mounts an upgrade to `release` would leave without their built-in."""
    ships = builtins_of_release(release)
    named = [
        *((mount_target_name(m.kind, m.path), m) for m in context.live.mounts),
        *((elsewhere_name(m), m) for m in context.live.elsewhere),
    ]
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for name, mount in named:
        key = (mount.kind, mount.plugin)
        now = context.running_now(mount)
        if mount.reserved or now is None or not now.builtin:
            continue
        if key in ships or key in HARD_WIRED_BUILTINS:
            continue
        relies = (
            f"runs the built-in {mount.kind} plugin {mount.plugin}, which OpenBao {release} "
            "does not ship"
        )
        after = _after(context, mount, planned)
        if after is not None and not after.builtin:
            warnings.append(
                problem(
                    name,
                    f"{relies}: this plan moves it onto the declared {mount.plugin} "
                    f"{after.version or '(unversioned)'}; apply it before upgrading the server",
                )
            )
            continue
        declared = [e.version or '""' for e in context.present_by_name.get(key, ())]
        fix = (
            f"the file declares {mount.plugin} {', '.join(declared)}: pin the mount to it"
            if declared
            else f"declare an external {mount.kind} plugin named {mount.plugin} and pin the "
            "mount to its version"
        )
        errors.append(
            problem(
                name,
                f"{relies}: after the upgrade it stops answering (its data stays in storage); "
                f"{fix}, then apply before upgrading",
            )
        )
    return Outcome(errors=tuple(errors), warnings=tuple(warnings))


def _after(context: Context, mount: LiveMount, planned: PlannedTargets) -> Target | None:
    """What the mount runs once the plan is applied: its declared target, or else what the
    catalog after the plan resolves it to (an unversioned override reaches unmanaged ones)."""
    declared = planned.get((mount.namespace, mount.kind, mount.path))
    if declared is not None:
        return declared
    return context.live_resolution(mount, context.entries_after)
