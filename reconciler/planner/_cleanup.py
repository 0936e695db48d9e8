"""Phase 4, cleanup: deregister what the file retires, once nothing left needs it."""

from __future__ import annotations

from reconciler.plan import (
    Action,
    DeregisterAction,
    DeregistrationParams,
    FieldChange,
    Problem,
    ReasonCode,
)
from reconciler.planner._context import (
    OWNED_BY_SERVER,
    Context,
    Outcome,
    catalog_target_name,
    mount_target_name,
    problem,
)
from reconciler.planner._mounts import MountChanges, Pruning
from reconciler.resolver import HARD_WIRED_BUILTINS, CatalogKey

_REASONS: dict[ReasonCode, str] = {
    ReasonCode.DECLARED_ABSENT: "declared state: absent",
    ReasonCode.UNMANAGED_PLUGIN_PRUNED: "not declared and prune_plugins is on",
}


def plan_deregistrations(context: Context, mounts: MountChanges, pruning: Pruning) -> Outcome:
    """Deregister retired entries unless a mount left would lose its backend."""
    actions: list[Action] = []
    errors: list[Problem] = []
    warnings = [
        problem(catalog_target_name(key), "unmanaged catalog entry: left registered")
        for key in sorted(context.external)
        if key not in context.absent
        and key not in context.present
        and key not in context.declarative
        and not context.desired.settings.prune_plugins
    ]
    warnings += [
        problem(
            catalog_target_name(key),
            f"{OWNED_BY_SERVER}: left registered, never deregistered (the next SIGHUP "
            "would register it again); remove its stanza to retire it",
        )
        for key in sorted(context.declarative)
        if key not in context.present
    ]
    for key, code in context.deregistrations:
        target = catalog_target_name(key)
        held = mounts.held_on.get(key)
        if held:
            # Watch mode keeps these mounts on the entry until the file changes.
            warnings.append(
                problem(
                    target,
                    f"{_REASONS[code]}, but kept registered: {', '.join(sorted(held))} "
                    "stay on it while their upgrade is held",
                )
            )
            continue
        users = _users_after(context, key, mounts, pruning)
        if users:
            errors.append(
                problem(
                    target,
                    "cannot deregister: still used by "
                    + ", ".join(users)
                    + " (its next reload would leave it without a backend)",
                )
            )
            continue
        actions.append(
            DeregisterAction(
                target=target,
                reason=_REASONS[code],
                reason_code=code,
                changes=[FieldChange(field="sha256", before=context.external[key].sha256)],
                params=DeregistrationParams(type=key[0], name=key[1], version=key[2]),
            )
        )
        followers = _unmanaged_followers(context, key, mounts, pruning)
        if followers:
            warnings.append(
                problem(
                    target,
                    "deregistering this shadow returns "
                    + ", ".join(followers)
                    + " to the built-in at its next reload (unmanaged: not reloaded now)",
                )
            )
    return Outcome(tuple(actions), tuple(errors), tuple(warnings))


def _users_after(
    context: Context, key: CatalogKey, mounts: MountChanges, pruning: Pruning
) -> list[str]:
    """Mounts left that would run `key`, or nothing at all, once it is gone."""
    users = [
        mount_target_name(kind, path)
        for (kind, path), target in sorted(mounts.targets.items())
        if target.key == key
    ]
    for (kind, path), live_mount in context.unmanaged_mounts(mounts.claimed, pruning.disabled):
        if (kind, live_mount.plugin) != key[:2]:
            continue
        now = context.running_now(live_mount)
        after = context.live_resolution(live_mount, context.entries_after)
        if now is not None and not now.builtin and now.version == key[2] and after is None:
            users.append(mount_target_name(kind, path))
    return users


def _unmanaged_followers(
    context: Context, key: CatalogKey, mounts: MountChanges, pruning: Pruning
) -> list[str]:
    """Unmanaged unpinned mounts that follow the unversioned shadow `key` of a built-in."""
    plugin_type, name, version = key
    if (
        version
        or (plugin_type, name) not in context.builtins
        or (plugin_type, name) in HARD_WIRED_BUILTINS
    ):
        return []
    return [
        mount_target_name(kind, path)
        for (kind, path), live_mount in context.unmanaged_mounts(mounts.claimed, pruning.disabled)
        if (kind, live_mount.plugin) == (plugin_type, name) and not live_mount.plugin_version
    ]
