"""Namespaces: the scopes a file manages, their creation, and the ones it leaves alone.

The one catalog serves every namespace. A file manages the client's namespace
and the namespaces it declares below it (`namespaces:`); each is planned as a
scope of its own, its requests sent in that namespace. A mount of a namespace
the file leaves alone that runs an updated entry keeps the old binary until
someone with access to that namespace reloads it: a warning names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.model import DesiredState, LiveState, PluginEntry
from reconciler.plan import (
    Action,
    CreateNamespaceAction,
    FieldChange,
    NamespaceParams,
    Problem,
    ReasonCode,
)
from reconciler.planner._context import (
    Context,
    HeldUpgrade,
    Outcome,
    catalog_target_name,
    elsewhere_name,
    problem,
)
from reconciler.resolver import CatalogKey, namespace_path
from reconciler.usage import ServerUsage, where_text


def elsewhere_warnings(context: Context, changed: frozenset[CatalogKey]) -> tuple[Problem, ...]:
    """One warning per updated entry that mounts of other namespaces run now."""
    warnings = []
    for key in sorted(changed & set(context.external)):
        users = [
            elsewhere_name(live_mount)
            for live_mount in context.mounts_elsewhere()
            if (live_mount.kind, live_mount.plugin) == key[:2]
            and (running := context.running_now(live_mount)) is not None
            and running.key == key
        ]
        # Connections of other namespaces: not reset by this plan (nor any reload).
        users += [
            user.named()
            for user in context.usage.using(key)
            if user.kind == "connection" and user.namespace != context.namespace
        ]
        if users:
            warnings.append(
                problem(
                    catalog_target_name(key),
                    "updated, but these mounts and connections of other namespaces run it "
                    "and keep the old binary until reloaded (a connection: reset) in their "
                    "namespace: " + ", ".join(users),
                )
            )
    return tuple(warnings)


# --- the file's namespaces ---------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """One namespace the file manages: its own context, and how its plan entries are named."""

    namespace: str
    context: Context
    # False for the client's own namespace: its entries are named and sent as always.
    elsewhere: bool

    def named(self, target: str) -> str:
        if not self.elsewhere:
            return target
        return f"{target} in {where_text(self.namespace)}"

    def outcome(self, outcome: Outcome) -> Outcome:
        """`outcome` with its targets naming this namespace and its requests sent in it."""
        if not self.elsewhere:
            return outcome
        return Outcome(
            actions=tuple(self.action(action) for action in outcome.actions),
            errors=tuple(self.problem(p) for p in outcome.errors),
            warnings=tuple(self.problem(p) for p in outcome.warnings),
        )

    def action(self, action: Action) -> Action:
        if not self.elsewhere:
            return action
        params = action.params.model_copy(update={"namespace": self.namespace})
        return action.model_copy(update={"target": self.named(action.target), "params": params})

    def problem(self, found: Problem) -> Problem:
        return found.model_copy(update={"target": self.named(found.target)})


def namespace_scopes(
    desired: DesiredState,
    live: LiveState,
    replace: frozenset[CatalogKey],
    held: frozenset[HeldUpgrade],
) -> tuple[Scope, ...]:
    """The client's namespace first, then every namespace the file declares below it.

    Each scope sees its own live mounts; the client's also sees, as `elsewhere`, the
    mounts of the namespaces the file leaves alone (they count for catalog safety).
    """
    home = namespace_path(live.server.namespace)
    declared = [(home + relative, namespace) for relative, namespace, _ in desired.namespace_tree()]
    managed = {home, *(path for path, _ in declared)}
    every = [*live.mounts, *live.elsewhere]
    left_alone = [m for m in every if m.namespace not in managed]

    usage = ServerUsage.of(live)

    def scope_live(namespace: str) -> LiveState:
        return live.model_copy(
            update={
                "mounts": [m for m in every if m.namespace == namespace],
                "elsewhere": left_alone,
                "connections": [c for c in live.connections if c.namespace == namespace],
            }
        )

    def context(file: DesiredState, namespace: str) -> Context:
        return Context.of(
            file, scope_live(namespace), replace, held, namespace=namespace, usage=usage
        )

    scopes = [Scope(home, context(desired, home), elsewhere=False)]
    for path, namespace in declared:
        its_file = desired.model_copy(
            update={"secrets": namespace.secrets, "auth": namespace.auth, "namespaces": {}}
        )
        scopes.append(Scope(path, context(its_file, path), elsewhere=True))
    return tuple(scopes)


def unmanaged_namespace_warnings(desired: DesiredState, scopes: Sequence[Scope]) -> Outcome:
    """A namespace below the file's own that holds mounts but that the file does not
    declare (any more): named, like an unmanaged mount, and left alone.

    Only for files that manage namespaces (with `namespaces:`, or bound to one): a
    root file without them plans the root alone and never claimed the others.
    """
    given = desired.model_fields_set
    if "namespaces" not in given and desired.namespace is None:
        return Outcome()
    home = scopes[0].namespace
    managed = {scope.namespace for scope in scopes}
    holding: dict[str, list[str]] = {}
    for user in scopes[0].context.usage.mounts():
        if user.namespace.startswith(home) and user.namespace not in managed:
            holding.setdefault(user.namespace, []).append(user.name)
    return Outcome(
        warnings=tuple(
            problem(
                f"namespace {namespace}",
                f"unmanaged namespace: the file does not declare it, and it holds "
                f"{len(names)} mount{'s' if len(names) > 1 else ''} ({', '.join(names)}): "
                "left alone (a namespace is never deleted); declare it under `namespaces:` "
                "to manage them",
            )
            for namespace, names in sorted(holding.items())
        )
    )


def plan_namespace_creation(scopes: Sequence[Scope]) -> Outcome:
    """Create each declared namespace the server lacks (parents first); none is deleted."""
    existing = set(scopes[0].context.live.namespaces)
    return Outcome(
        actions=tuple(
            CreateNamespaceAction(
                target=f"namespace {scope.namespace}",
                reason="declared namespace is absent",
                reason_code=ReasonCode.NAMESPACE_MISSING,
                changes=[FieldChange(field="namespace", after=scope.namespace)],
                params=NamespaceParams(
                    parent=scope.namespace.rstrip("/").rpartition("/")[0],
                    name=scope.namespace.rstrip("/").rpartition("/")[2],
                ),
            )
            for scope in scopes
            if scope.elsewhere and scope.namespace not in existing
        )
    )


def bound_to_live_catalog(desired: DesiredState, live: LiveState) -> DesiredState:
    """A file bound to a namespace, with the live catalog's external entries as its own.

    Such a file declares no entries: its mounts resolve against what the catalog holds,
    and the plan never writes the catalog (no register, update or deregistration).
    """
    entries = [
        PluginEntry.model_construct(
            type=entry.type,
            name=entry.name,
            version=entry.version,
            command=entry.command or None,
            sha256=entry.sha256 or None,
            args=list(entry.args) or None,
            env=None,
            state="present",
        )
        for entry in live.catalog
        if not entry.builtin
    ]
    settings = desired.settings.model_copy(update={"prune_plugins": False})
    return desired.model_copy(update={"plugins": entries, "settings": settings})


def binding_errors(desired: DesiredState, live: LiveState) -> tuple[Problem, ...]:
    """A bound file run in another namespace: refused before anything is written."""
    if desired.namespace is None or desired.namespace == namespace_path(live.server.namespace):
        return ()
    running = namespace_path(live.server.namespace)
    return (
        problem(
            f"namespace {desired.namespace}",
            f"the file is bound to namespace {desired.namespace} but runs in "
            f"{where_text(running)}: set BAO_NAMESPACE or --namespace to {desired.namespace}",
        ),
    )
