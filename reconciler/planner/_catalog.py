"""Phase 1, catalog writes: register what is missing, update what differs (SPEC §2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.model import PluginEntry
from reconciler.plan import (
    Action,
    Problem,
    ReasonCode,
    RegisterAction,
    RegistrationParams,
    UpdateAction,
)
from reconciler.planner._context import (
    OWNED_BY_SERVER,
    Context,
    Outcome,
    catalog_target_name,
    changes_between,
    problem,
)
from reconciler.resolver import HARD_WIRED_BUILTINS, CatalogKey


@dataclass(frozen=True)
class CatalogWrites(Outcome):
    # The entries this plan registers or updates: their mounts need a reload.
    changed: frozenset[CatalogKey] = frozenset()


def plan_catalog_writes(context: Context) -> CatalogWrites:
    """Register and update so the catalog holds the file's entries.

    Database plugins are not reloaded here: the server refuses a reload by name for
    them; their connections are re-pinned or reset (`_connections`).
    """
    actions: list[Action] = []
    errors: list[Problem] = []
    warnings: list[Problem] = [
        problem(
            catalog_target_name(key),
            "--replace names no present entry of the file: nothing re-registered",
        )
        for key in sorted(context.replace - set(context.present))
    ]
    changed: set[CatalogKey] = set()
    for key, entry in sorted(context.present.items()):
        target = catalog_target_name(key)
        if entry.managed_by == "server":
            continue  # a reference: checked against the catalog by `plan_server_references`
        if (entry.type, entry.name) in HARD_WIRED_BUILTINS:
            errors.append(
                problem(
                    target,
                    f"the built-in {entry.type} plugin {entry.name!r} is hard-wired in the "
                    "server and cannot be overridden by an external entry: rename the plugin",
                )
            )
            continue
        if key in context.declarative:
            owned = _owned_by_server(context, key, entry)
            (errors if owned.is_error else warnings).append(owned.problem)
            continue
        if entry.sha256 is None:
            errors.append(problem(target, "sha256 is unknown: give it, or set plugin_directory"))
            continue
        if entry.env:
            warnings.append(
                problem(
                    target,
                    "env (sensitive) cannot be verified: the server never returns it, so a "
                    f"change of env alone is not seen; use --replace {target} to re-register it",
                )
            )
        written = _write(context, key, entry)
        if written:
            changed.add(key)
            actions += written
    return CatalogWrites(tuple(actions), tuple(errors), tuple(warnings), frozenset(changed))


@dataclass(frozen=True)
class _Owned:
    problem: Problem
    is_error: bool


def _owned_by_server(context: Context, key: CatalogKey, entry: PluginEntry) -> _Owned:
    """A file entry naming a declarative one: a no-op note when it matches, else an error.

    Never a write: an API register flips the entry to non-declarative, and from then
    on the server's every SIGHUP stops at that stanza (later stanzas unregistered).
    """
    target = catalog_target_name(key)
    live_entry = context.external[key]
    have = {"command": live_entry.command, "sha256": live_entry.sha256, "args": live_entry.args}
    wanted = {
        "command": entry.effective_command,
        "sha256": entry.sha256,
        "args": list(entry.args or []),
    }
    differing = [c.field for c in changes_between(have, wanted)]
    if key in context.replace:
        why = "--replace names it"
    elif differing:
        why = "the file gives a different " + ", ".join(differing)
    elif entry.env:
        why = "the file gives env"
    else:
        return _Owned(
            problem(target, f"{OWNED_BY_SERVER}; every field matches the file: nothing written"),
            is_error=False,
        )
    return _Owned(
        problem(
            target,
            f"{OWNED_BY_SERVER}: {why}, and the reconciler never writes it; change the stanza "
            "and send SIGHUP, or drop the entry from the file",
        ),
        is_error=True,
    )


def _write(context: Context, key: CatalogKey, entry: PluginEntry) -> list[Action]:
    """The register, or the update, one present entry needs."""
    target = catalog_target_name(key)
    wanted = _registration(entry)
    live_entry = context.external.get(key)
    if live_entry is None:
        return [
            RegisterAction(
                target=target,
                reason="not in the catalog",
                reason_code=ReasonCode.NOT_REGISTERED,
                changes=changes_between({}, _visible(wanted)),
                params=wanted,
            )
        ]
    have: dict[str, Any] = {"sha256": live_entry.sha256}
    if live_entry.details_read:
        # A token that may read the list only knows the hash: command and args unknown
        # are not different.
        have |= {"command": live_entry.command, "args": live_entry.args}
    changes = changes_between(have, {name: getattr(wanted, name) for name in have})
    if not changes and key not in context.replace:
        return []
    return [
        UpdateAction(
            target=target,
            reason=(
                "registered with a different " + ", ".join(c.field for c in changes)
                if changes
                else "re-register requested with --replace"
            ),
            reason_code=(
                ReasonCode.REGISTRATION_DIFFERS if changes else ReasonCode.REPLACE_REQUESTED
            ),
            changes=changes,
            params=wanted,
        )
    ]


def _registration(entry: PluginEntry) -> RegistrationParams:
    """What register/update send, minus env values (only whether there are any)."""
    assert entry.sha256 is not None  # an entry without one is a plan error, never registered
    return RegistrationParams(
        type=entry.type,
        name=entry.name,
        version=entry.version,
        command=entry.effective_command,
        sha256=entry.sha256,
        args=list(entry.args or []),
        has_env=bool(entry.env),
    )


def _visible(params: RegistrationParams) -> dict[str, Any]:
    shown = params.model_dump(exclude={"type", "name", "version", "has_env"})
    if params.has_env:
        shown["env"] = "(sensitive)"
    return shown


def missing_file_warnings(context: Context) -> tuple[Problem, ...]:
    """Entries whose file the node that answered lacks: what runs them keeps running until
    its next reload (or reset, or server restart), which then fails."""
    warnings = []
    for key, entry in sorted(context.external.items()):
        if not entry.file_error:
            continue
        users = context.usage.using(key)
        who = (
            f"{', '.join(user.named() for user in users)} run(s) it until the next reload or "
            "restart, which would fail"
            if users
            else "nothing runs it yet; a mount moved onto it would fail"
        )
        warnings.append(problem(catalog_target_name(key), f"{who}: {entry.file_error}"))
    return tuple(warnings)
