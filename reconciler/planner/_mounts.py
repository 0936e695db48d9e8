"""Phase 2, mount changes: move, enable, replace, tune and reload each declared mount;
phase 3, pruning: disable the undeclared ones when the file asks for it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.model import CONFIG_DEFAULTS, RESERVED_PATHS, LiveMount, Mount, MountKind
from reconciler.plan import (
    KIND_RULES,
    Action,
    ActionKind,
    DisableAction,
    EnableAction,
    EnableParams,
    FieldChange,
    MountParams,
    MoveAction,
    MoveParams,
    Problem,
    ReasonCode,
    ReloadAction,
    ReloadParams,
    ReplaceAction,
    Stage,
    TuneAction,
    TuneParams,
)
from reconciler.planner._context import (
    Context,
    MountKey,
    Outcome,
    changes_between,
    problem,
)
from reconciler.resolver import (
    HARD_WIRED_BUILTINS,
    CatalogKey,
    Target,
    Unresolved,
    api_path,
    is_builtin_version,
    mount_failure,
    resolve_mount,
    runs_builtin,
)
from reconciler.usage import mount_target_name


@dataclass(frozen=True)
class Reloads:
    """Mounts (API paths) to reload: now, or once cleanup has deregistered their shadow.

    `dead` and `repinned` say why some of them are reloaded (their backend does not
    answer; their plugin_version is tuned), for the reason the plan shows.
    """

    converge: frozenset[str] = frozenset()
    cleanup: frozenset[str] = frozenset()
    dead: frozenset[str] = frozenset()
    repinned: frozenset[str] = frozenset()
    # Why each dead mount (API path) does not answer, when the read says more than a probe.
    causes: tuple[tuple[str, str], ...] = ()

    def __or__(self, other: Reloads) -> Reloads:
        return Reloads(
            self.converge | other.converge,
            self.cleanup | other.cleanup,
            self.dead | other.dead,
            self.repinned | other.repinned,
            tuple(sorted(set(self.causes) | set(other.causes))),
        )

    @property
    def paths(self) -> frozenset[str]:
        return self.converge | self.cleanup


@dataclass(frozen=True)
class MountChanges(Outcome):
    # Declared mount → what it runs once the plan is applied.
    targets: Mapping[MountKey, Target] = field(default_factory=dict)
    # Live paths the file declares, or moves away from: not unmanaged.
    claimed: frozenset[MountKey] = frozenset()
    # Paths this plan enables, fresh or as a replacement.
    enabled: frozenset[MountKey] = frozenset()
    # Entries that mounts stay on while their upgrade is held (kept registered).
    held_on: Mapping[CatalogKey, tuple[str, ...]] = field(default_factory=dict)
    reloads: Reloads = Reloads()


@dataclass(frozen=True)
class Pruning(Outcome):
    # Unmanaged paths this plan disables.
    disabled: frozenset[MountKey] = frozenset()
    # Unmanaged mounts reloaded onto an updated entry (`reload_unmanaged`).
    reloads: Reloads = Reloads()


def plan_declared_mounts(context: Context, changed: frozenset[CatalogKey]) -> MountChanges:
    """Every declared mount, each planned on its own: `changed` entries need a reload."""
    outcomes = [
        _plan_mount(context, changed, kind, mount) for kind, mount in context.desired.mounts()
    ]
    held_on: dict[CatalogKey, list[str]] = {}
    for outcome in outcomes:
        for key, where in outcome.held_on.items():
            held_on.setdefault(key, []).extend(where)
    reloads = Reloads()
    for outcome in outcomes:
        reloads |= outcome.reloads
    return MountChanges(
        actions=_joined(o.actions for o in outcomes),
        errors=_joined(o.errors for o in outcomes),
        warnings=_joined(o.warnings for o in outcomes),
        targets={key: t for o in outcomes for key, t in o.targets.items()},
        claimed=frozenset().union(*(o.claimed for o in outcomes)),
        enabled=frozenset().union(*(o.enabled for o in outcomes)),
        held_on={key: tuple(where) for key, where in held_on.items()},
        reloads=reloads,
    )


def plan_unmanaged_mounts(
    context: Context, claimed: frozenset[MountKey], changed: frozenset[CatalogKey] = frozenset()
) -> Pruning:
    """Disable undeclared mounts when `prune_mounts` is on; otherwise name them.

    An undeclared mount left on the old binary of an entry that is updated (by this
    plan, or out of band) is reloaded when `reload_unmanaged` is on, else named.
    """
    if not context.desired.settings.prune_mounts:
        warnings: list[Problem] = []
        reload: set[str] = set()
        for key, live_mount in context.unmanaged_mounts(claimed):
            where = mount_target_name(*key)
            warnings.append(problem(where, _unmanaged_warning(context, live_mount)))
            stale = _old_binary(context, changed, live_mount)
            if stale is None:
                continue
            if context.desired.settings.reload_unmanaged:
                reload.add(live_mount.api_path)
            else:
                warnings.append(
                    problem(
                        where,
                        f"left on the old binary of {stale}: set reload_unmanaged: true "
                        "(or pass --reload-unmanaged) to reload it too",
                    )
                )
        return Pruning(warnings=tuple(warnings), reloads=Reloads(converge=frozenset(reload)))
    unmanaged = list(context.unmanaged_mounts(claimed))
    return Pruning(
        actions=tuple(
            DisableAction(
                target=mount_target_name(*key),
                reason="not declared and prune_mounts is on: disabling destroys its data",
                reason_code=ReasonCode.UNMANAGED_MOUNT_PRUNED,
                changes=[FieldChange(field="plugin", before=live_mount.plugin, after=None)],
                params=MountParams(kind=key[0], path=key[1]),
            )
            for key, live_mount in unmanaged
        ),
        disabled=frozenset(key for key, _ in unmanaged),
    )


def _old_binary(
    context: Context, changed: frozenset[CatalogKey], live_mount: LiveMount
) -> str | None:
    """The updated entry a live mount still runs the old binary of, or None."""
    if runs_builtin(live_mount):
        return None
    target = context.live_resolution(live_mount, context.entries_after)
    if target is None or target.builtin or target.version != live_mount.running_plugin_version:
        return None
    if target.sha256 == live_mount.running_sha256 and target.key not in changed:
        return None
    if target.sha256 == live_mount.running_sha256:
        # Re-registered by this plan (`--replace`, an env change): one hash, said once.
        detail = (
            f"re-registered by this plan with the same sha256 {target.sha256[:12]}…: "
            "its process keeps the args and env it started with"
        )
    else:
        detail = (
            f"runs sha256 {live_mount.running_sha256[:12]}…, the entry has {target.sha256[:12]}…"
        )
    return f"{target.name} {target.version or '(unversioned)'} ({detail})"


def _unmanaged_warning(context: Context, live_mount: LiveMount) -> str:
    failure = mount_failure(live_mount, context.external, context.builtins)
    if failure is not None:
        return f"unmanaged mount ({live_mount.plugin}): left alone, and its backend {failure}"
    return f"unmanaged mount ({live_mount.plugin}): left alone"


def without_doomed(
    context: Context, reloads: Reloads, targets: Mapping[MountKey, Target]
) -> Reloads:
    """`reloads` without the mounts whose entry the catalog will not hold: reloaded, such
    a mount would be left without a backend (it keeps running until then). The plan's
    error names the missing entry; a plan made once it is back reloads them."""
    doomed = {
        api_path(kind, path)
        for (kind, path), target in targets.items()
        if target.key is not None and target.key not in context.entries_after
    }
    if not doomed:
        return reloads
    return Reloads(
        converge=reloads.converge - doomed,
        cleanup=reloads.cleanup - doomed,
        dead=reloads.dead - doomed,
        repinned=reloads.repinned - doomed,
        causes=tuple((path, cause) for path, cause in reloads.causes if path not in doomed),
    )


def reload_actions(
    context: Context,
    reloads: Reloads,
    targets: Mapping[MountKey, Target],
    canaries: Sequence[Canary] = (),
) -> tuple[Action, ...]:
    """The reloads of each stage, naming every mount they reload and why.

    One call restarts every mount it names at once, so mounts moving onto the same
    new binary go in two steps: a canary (one mount, verified by the executor before
    it goes on), then the rest. `canaries` are the plan's, chosen across every
    namespace it manages (`choose_canaries`): this namespace reloads its own, and its
    other reloads wait for the ones whose binary they move onto. The reason code is
    the most urgent of its mounts' reasons (a dead backend, then a tuned pin).
    """
    actions: list[Action] = []
    if reloads.converge:
        here = [c for c in canaries if c.namespace == context.namespace]
        actions.extend(_canary_reload(context, canary) for canary in here)
        rest = reloads.converge - {c.path for c in here}
        if rest:
            moving = {
                target for (kind, path), target in targets.items() if api_path(kind, path) in rest
            }
            waits_on = [c.name for c in canaries if c.target in moving]
            actions.append(_converge_reload(context, reloads, rest, waits_on))
    if reloads.cleanup:
        actions.append(
            ReloadAction(
                target="mounts " + ", ".join(sorted(reloads.cleanup)),
                stage=Stage.CLEANUP,
                reason="back to the built-in once the shadowing entry is deregistered",
                reason_code=ReasonCode.BUILTIN_AFTER_CLEANUP,
                params=ReloadParams(mounts=sorted(reloads.cleanup), scope=context.scope),
            )
        )
    return tuple(actions)


def behind_the_canaries(actions: Iterable[Action]) -> Callable[[Action], bool]:
    """Whether an action of the converge stage waits for the canaries to be verified.

    A reload that fails on one node can restart that node's core, which mounts every
    entry of the mount table again, in every namespace: a mount already pinned to the
    new version dies there too. So the canaries alone are tuned and reloaded (and
    verified on every node) first; every other mount's pin moves after them, whatever
    its namespace, then every other reload, re-pin and reset, in their usual order.
    One order for one server and for clusters.
    """
    canaries = {
        (a.params.namespace, path)
        for a in actions
        if isinstance(a, ReloadAction) and a.canary
        for path in a.params.mounts or []
    }

    def behind(action: Action) -> bool:
        if action.stage is not Stage.CONVERGE or not canaries:
            return False
        if isinstance(action, TuneAction):
            p = action.params
            return (
                "plugin_version" in p.body
                and (p.namespace, api_path(p.kind, p.path)) not in canaries
            )
        if isinstance(action, ReloadAction) and action.canary:
            return False
        return KIND_RULES[action.kind].order > KIND_RULES[ActionKind.TUNE].order

    return behind


@dataclass(frozen=True)
class Canary:
    """The one mount reloaded first onto a new binary, before the others move onto it."""

    namespace: str  # a path from the root
    path: str  # API path, in its namespace
    name: str  # how the plan names it (with its namespace when not the client's)
    target: Target
    others: tuple[str, ...]  # the other mounts that move onto it, named for the plan


# One namespace's candidates: (namespace, how it names a path, binary → API paths).
Candidates = tuple[str, Callable[[str], str], Mapping[Target, Sequence[str]]]


def choose_canaries(scoped: Iterable[Candidates]) -> tuple[Canary, ...]:
    """One canary per new binary that more than one mount moves onto, counting the mounts
    of every namespace the plan manages: the first of them (namespaces in plan order,
    then paths)."""
    by_binary: dict[Target, list[tuple[str, str, str]]] = {}
    for namespace, named, moves in scoped:
        for target, paths in moves.items():
            by_binary.setdefault(target, []).extend(
                (namespace, path, named(path)) for path in sorted(paths)
            )
    return tuple(
        Canary(namespace, path, name, target, tuple(other for _, _, other in rest))
        for target, ((namespace, path, name), *rest) in by_binary.items()
        if rest
    )


def fresh_moves(
    context: Context, paths: frozenset[str], targets: Mapping[MountKey, Target]
) -> dict[Target, list[str]]:
    """Per new external binary, the reloaded mounts (API paths) that move onto it.

    A binary a live mount already runs and answers with, on every node, has proven
    itself on this server (a canary that worked before an interruption, say): it
    needs no canary. One node that runs something else for that mount, or where it
    does not answer (the binary died there), proves nothing.
    """
    on_nodes: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for node in context.live.nodes:
        for running in node.mounts:
            if running.namespace != context.namespace:
                continue
            runs = (running.running_plugin_version, running.running_sha256)
            on_nodes.setdefault((running.kind, running.path), set()).add(
                ("", "") if running.answers is False else runs
            )
    proven = {
        (m.plugin, m.running_plugin_version, m.running_sha256)
        for m in context.live_mounts.values()
        if m.backend_answers is True
        and on_nodes.get((m.kind, m.path), set()) <= {(m.running_plugin_version, m.running_sha256)}
    }
    by_binary: dict[Target, list[str]] = {}
    for (kind, path), target in targets.items():
        where = api_path(kind, path)
        fresh = (target.name, target.version, target.sha256) not in proven
        if where in paths and not target.builtin and fresh:
            by_binary.setdefault(target, []).append(where)
    return {target: sorted(found) for target, found in by_binary.items()}


def _canary_reload(context: Context, canary: Canary) -> ReloadAction:
    target = canary.target
    command = next(
        (e.command for e in context.desired.plugins if e.present and e.key == target.key), ""
    )
    binary = ", ".join(
        part for part in (command and f"command {command}", f"sha256 {target.sha256[:12]}…") if part
    )
    return ReloadAction(
        target=f"mounts {canary.path}",
        reason=(
            f"canary for {target.name} {target.version or '(unversioned)'} ({binary}): "
            f"reloaded alone and verified on every node (running sha256 and a probe) "
            f"before {', '.join(canary.others)} move"
        ),
        reason_code=ReasonCode.CANARY,
        canary=True,
        params=ReloadParams(mounts=[canary.path], scope=context.scope),
    )


def _converge_reload(
    context: Context, reloads: Reloads, paths: frozenset[str], waits_on: Sequence[str]
) -> ReloadAction:
    dead = sorted(paths & reloads.dead)
    repinned = sorted((paths & reloads.repinned) - reloads.dead)
    differs = sorted(paths - reloads.dead - reloads.repinned)
    reasons = []
    causes = dict(reloads.causes)
    if dead:
        reasons.append(
            "backend does not answer: "
            + "; ".join(f"{path} — {causes[path]}" if path in causes else path for path in dead)
        )
    if repinned:
        reasons.append("plugin_version is tuned: " + ", ".join(repinned))
    if differs:
        reasons.append("running plugin differs from its catalog entry: " + ", ".join(differs))
    code = (
        ReasonCode.BACKEND_NOT_ANSWERING
        if dead
        else ReasonCode.PLUGIN_VERSION_PINNED
        if repinned
        else ReasonCode.RUNNING_PLUGIN_DIFFERS
    )
    if len(reasons) == 1 and not causes.keys() & set(dead):
        # One reason for every mount: the target names them already.
        reasons = [reasons[0].rsplit(": ", 1)[0]]
    if waits_on:
        reasons.append("once the canary " + ", ".join(waits_on) + " works")
    return ReloadAction(
        target="mounts " + ", ".join(sorted(paths)),
        stage=Stage.CONVERGE,
        reason="; ".join(reasons),
        reason_code=code,
        params=ReloadParams(mounts=sorted(paths), scope=context.scope),
    )


# --- one declared mount ----------------------------------------------------------------


def _plan_mount(
    context: Context, changed: frozenset[CatalogKey], kind: MountKind, mount: Mount
) -> MountChanges:
    where = mount_target_name(kind, mount.path)
    if mount.path in RESERVED_PATHS[kind]:
        return MountChanges(
            errors=(problem(where, "reserved mount: the server owns it and it cannot be declared"),)
        )
    claimed = frozenset({(kind, mount.path)})
    resolved = _resolve(context, kind, mount)
    if isinstance(resolved, Problem):
        return MountChanges(errors=(resolved,), claimed=claimed)
    shadowed = _builtin_cannot_run(context, kind, mount, resolved)
    if shadowed is not None:
        return MountChanges(errors=(shadowed,), claimed=claimed)
    if not resolved.builtin and (kind, mount.plugin) in HARD_WIRED_BUILTINS:
        # The entry is refused (an error already names it): nothing to plan on it.
        return MountChanges(claimed=claimed)
    held = _hold_back(context, kind, mount, resolved)
    target = held.target
    found = MountChanges(
        warnings=held.warnings,
        claimed=claimed,
        targets={(kind, mount.path): target},
        held_on=held.held_on,
    )
    live_mount = context.live_mounts.get((kind, mount.path))
    if (
        live_mount is not None
        and mount.moved_from is not None
        and (kind, mount.moved_from) in context.live_mounts
    ):
        both = problem(
            where,
            f"moved_from {mount.moved_from}: both {mount.moved_from} and {mount.path} exist, "
            f"so nothing is moved and {mount.moved_from} is not managed by this entry; "
            "disable one of them, or drop moved_from",
        )
        found = _merged(found, MountChanges(warnings=(both,)))
    if live_mount is None and mount.moved_from is not None:
        move = _plan_move(context, kind, mount)
        found = _merged(found, move.outcome)
        if move.moved is None and move.outcome.errors:
            return found
        live_mount = move.moved
    if live_mount is None:
        return _merged(found, _plan_enable(context, kind, mount, target, replace=()))
    immutable = _immutable_changes(mount, live_mount)
    if immutable:
        if mount.protect:
            error = problem(
                where,
                "protected mount would be replaced (disable + enable destroys its data): "
                + ", ".join(f"{c.field} {c.before!r} → {c.after!r}" for c in immutable),
            )
            return _merged(found, MountChanges(errors=(error,)))
        return _merged(found, _plan_enable(context, kind, mount, target, replace=immutable))
    tune = _plan_tune(context, kind, mount, live_mount, target)
    found = _merged(found, tune)
    if tune.errors:
        # Without the pin it needs, a reload would not reach the target.
        return found
    return _merged(
        found, MountChanges(reloads=_reload(context, changed, kind, mount, live_mount, target))
    )


def _resolve(context: Context, kind: MountKind, mount: Mount) -> Target | Problem:
    """The declared mount's effective plugin, or why it has none."""
    outcome = resolve_mount(
        kind,
        mount.plugin,
        mount.version,
        context.declared_by_name.get((kind, mount.plugin), ()),
        context.builtins,
    )
    if isinstance(outcome, Target):
        # A server-owned entry's hash comes from the catalog, not the file.
        return outcome if outcome.key is None else context.external_target(outcome.key)
    name = mount.plugin
    match outcome:
        case Unresolved.NOT_A_BUILTIN:
            message = f"{name!r} is not a built-in {kind} plugin"
        case Unresolved.ABSENT_VERSION:
            message = f"version {mount.version} of {name!r} is declared absent"
        case Unresolved.UNKNOWN_VERSION:
            message = f"no declared {kind} plugin {name!r} has version {mount.version}"
        case Unresolved.AMBIGUOUS:
            versions = ", ".join(e.version or '""' for e in context.present_by_name[(kind, name)])
            message = f"ambiguous: {name!r} has versions {versions}; pin a version"
        case Unresolved.RESERVED:
            message = f"{name!r} is mounted by the server itself and cannot be mounted again"
        case _:
            message = (
                f"{kind} plugin {name!r} is neither declared in the file "
                "nor a built-in of this server"
            )
    live_mount = context.live_mounts.get((kind, mount.path))
    if live_mount is not None and live_mount.plugin == name:
        failure = mount_failure(live_mount, context.external, context.builtins)
        if failure is not None and outcome.depends_on_builtins:
            # The mount is dead already: say why and what brings it back with its data.
            message = f"{message}; the mount {failure}"
    return problem(mount_target_name(kind, mount.path), message)


def _builtin_cannot_run(
    context: Context, kind: MountKind, mount: Mount, target: Target
) -> Problem | None:
    """Why the built-in target cannot run: an unversioned shadow stays registered."""
    if not target.builtin or (kind, mount.plugin) in HARD_WIRED_BUILTINS:
        return None
    if (kind, mount.plugin, "") not in context.entries_after:
        return None
    # An unpinned mount runs the shadow, and a pin to the built-in's version is stored
    # as "" on enable: with the shadow registered, no request makes it run the built-in.
    return problem(
        mount_target_name(kind, mount.path),
        f"an unversioned external {mount.plugin!r} stays registered and shadows the "
        "built-in: a mount of it cannot run the built-in; declare that entry "
        "state: absent (or set prune_plugins), or mount the external entry",
    )


@dataclass(frozen=True)
class _Held:
    target: Target
    warnings: tuple[Problem, ...] = ()
    held_on: Mapping[CatalogKey, tuple[str, ...]] = field(default_factory=dict)


def _hold_back(context: Context, kind: MountKind, mount: Mount, target: Target) -> _Held:
    """Keep a mount on its current plugin when its target is a held (failed) upgrade."""
    if target.builtin or (kind, mount.plugin, target.version, target.sha256) not in context.held:
        return _Held(target)
    where = mount_target_name(kind, mount.path)
    warning = problem(
        where,
        f"upgrade to {mount.plugin} {target.version} failed before and is held until the "
        "file changes",
    )
    live_mount = context.live_mounts.get((kind, mount.path))
    current = None if live_mount is None else context.running_now(live_mount)
    if current is None:
        return _Held(target, (warning,))
    held_on = {} if current.key is None else {current.key: (where,)}
    return _Held(current, (warning,), held_on)


@dataclass(frozen=True)
class _Move:
    outcome: MountChanges
    # The live mount as it is once moved to the declared path; None when nothing moves.
    moved: LiveMount | None = None


def _plan_move(context: Context, kind: MountKind, mount: Mount) -> _Move:
    """The move of `moved_from` to the declared path, or why it cannot move."""
    assert mount.moved_from is not None
    source = context.live_mounts.get((kind, mount.moved_from))
    if source is None:
        return _Move(MountChanges())
    where = mount_target_name(kind, mount.path)
    claimed = frozenset({(kind, mount.moved_from)})
    if source.reserved:
        error = problem(where, f"moved_from {mount.moved_from}: reserved mounts cannot be moved")
        return _Move(MountChanges(errors=(error,), claimed=claimed))
    immutable = _immutable_changes(mount, source)
    if immutable:
        # Replace runs before move, so a moved mount cannot also be replaced in one plan;
        # and a replacement would destroy the data the move is asked to keep.
        error = problem(
            where,
            f"moved_from {mount.moved_from}: a move keeps the mount as it is, but "
            + ", ".join(f"{c.field} {c.before!r} → {c.after!r}" for c in immutable)
            + " needs a new mount: move it first, or drop moved_from to start afresh",
        )
        return _Move(MountChanges(errors=(error,), claimed=claimed))
    move = MoveAction(
        target=where,
        reason=f"moved_from {mount.moved_from}: sys/remount keeps its data",
        reason_code=ReasonCode.MOVED_FROM,
        changes=[FieldChange(field="path", before=mount.moved_from, after=mount.path)],
        params=MoveParams(kind=kind, from_path=mount.moved_from, to=mount.path),
    )
    warnings: tuple[Problem, ...] = ()
    if len(context.live.nodes) > 1:
        warnings = (
            problem(
                where,
                f"moved from {mount.moved_from} on a cluster: OpenBao 2.7 standbys keep the "
                f"mount at {mount.moved_from} (and answer 404 at {mount.path}) until each is "
                "sealed and unsealed again or restarted; the apply names them",
            ),
        )
    return _Move(
        MountChanges(actions=(move,), warnings=warnings, claimed=claimed),
        source.model_copy(update={"path": mount.path}),
    )


def _immutable_changes(mount: Mount, live_mount: LiveMount) -> list[FieldChange]:
    changes = []
    if mount.plugin != live_mount.plugin:
        changes.append(FieldChange(field="plugin", before=live_mount.plugin, after=mount.plugin))
    for name in ("local", "seal_wrap"):
        wanted = getattr(mount, name)
        if wanted is not None and wanted != getattr(live_mount, name):
            changes.append(FieldChange(field=name, before=getattr(live_mount, name), after=wanted))
    return changes


def _enable_version(context: Context, kind: MountKind, mount: Mount, target: Target) -> str | None:
    """The plugin_version to enable with; None lets the server run the built-in."""
    if not target.builtin:
        return target.version
    # Left to choose, the server pins a new mount to the newest registered version,
    # which silently picks an override: name the built-in whenever one exists.
    # Entries deregistered by this plan still exist when the mount is enabled.
    registered = set(context.external) | set(context.present)
    if not any(k[0] == kind and k[1] == mount.plugin for k in registered):
        return None
    return context.builtins[(kind, mount.plugin)]


def _plan_enable(
    context: Context,
    kind: MountKind,
    mount: Mount,
    target: Target,
    replace: list[FieldChange] | tuple[()],
) -> MountChanges:
    """Enable the mount; with the `replace` changes, disable the live one first."""
    where = mount_target_name(kind, mount.path)
    version = _enable_version(context, kind, mount, target)
    if version == "" and target.builtin:
        error = problem(
            where,
            f"external entries named {mount.plugin!r} exist and the server does not list "
            "the built-in's version to pin it: a new mount would run the newest of them",
        )
        return MountChanges(errors=(error,))
    params = EnableParams(
        kind=kind,
        path=mount.path,
        plugin=mount.plugin,
        plugin_version=version,
        description=mount.description,
        config=None if mount.config is None else mount.config.model_dump(exclude_none=True),
        options=None if mount.options is None else dict(mount.options),
        local=mount.local,
        seal_wrap=mount.seal_wrap,
    )
    action: Action
    if replace:
        action = ReplaceAction(
            target=where,
            reason="immutable field changed: " + ", ".join(c.field for c in replace),
            reason_code=ReasonCode.IMMUTABLE_FIELD_CHANGED,
            changes=list(replace),
            params=params,
        )
    else:
        action = EnableAction(
            target=where,
            reason="not mounted",
            reason_code=ReasonCode.NOT_MOUNTED,
            changes=changes_between(
                {}, params.model_dump(exclude_none=True, exclude={"kind", "path"})
            ),
            params=params,
        )
    reloads = Reloads()
    if _shadowed_until_cleanup(context, kind, mount.plugin, target):
        # Enabled while the unversioned shadow still exists, it runs the shadow until the
        # shadow is deregistered and the mount reloaded.
        reloads = Reloads(cleanup=frozenset({api_path(kind, mount.path)}))
    return MountChanges(actions=(action,), enabled=frozenset({(kind, mount.path)}), reloads=reloads)


def _plan_tune(
    context: Context, kind: MountKind, mount: Mount, live_mount: LiveMount, target: Target
) -> MountChanges:
    have: dict[str, Any] = {}
    want: dict[str, Any] = {}
    if mount.description is not None:
        have["description"], want["description"] = live_mount.description, mount.description
    if mount.config is not None:
        for key, value in mount.config.model_dump(exclude_none=True).items():
            have[key] = live_mount.config.get(key, CONFIG_DEFAULTS.get(key))
            want[key] = value
    if mount.options is not None:
        # Only the declared option keys are managed.
        have_options = {k: live_mount.options.get(k) for k in mount.options}
        if have_options != mount.options:
            have["options"], want["options"] = have_options, dict(mount.options)
    pin = _pin_change(context, kind, mount, live_mount, target)
    if isinstance(pin, Problem):
        return MountChanges(errors=(pin,))
    if pin is not None:
        have["plugin_version"], want["plugin_version"] = live_mount.plugin_version, pin
    changes = changes_between(have, want)
    if not changes:
        return MountChanges()
    tune = TuneAction(
        target=mount_target_name(kind, mount.path),
        reason="tuned values differ: " + ", ".join(c.field for c in changes),
        reason_code=ReasonCode.TUNED_VALUES_DIFFER,
        changes=changes,
        params=TuneParams(
            kind=kind, path=mount.path, body={c.field: want[c.field] for c in changes}
        ),
    )
    return MountChanges(actions=(tune,))


def _pin_change(
    context: Context, kind: MountKind, mount: Mount, live_mount: LiveMount, target: Target
) -> str | Problem | None:
    """The plugin_version to tune to, None when the pin is already right, or why it cannot."""
    where = mount_target_name(kind, mount.path)
    if target.builtin:
        if not live_mount.plugin_version or is_builtin_version(live_mount.plugin_version):
            return None
        # A pin cannot be removed (tuning to "" is 400): pin the built-in's own version.
        builtin_version = context.builtins[(kind, mount.plugin)]
        if not builtin_version:
            return problem(
                where,
                f"pinned to {live_mount.plugin_version}, and the server does not list the "
                "built-in's version to pin it back",
            )
        return builtin_version
    if live_mount.plugin_version == target.version:
        return None
    if target.version == "":
        return problem(
            where,
            "cannot move a pinned mount to an unversioned entry: the server refuses to "
            "clear plugin_version; declare a version",
        )
    return target.version


def _reload(
    context: Context,
    changed: frozenset[CatalogKey],
    kind: MountKind,
    mount: Mount,
    live_mount: LiveMount,
    target: Target,
) -> Reloads:
    """The reload a live mount needs to run its target, if any."""
    if target.builtin:
        stale = not runs_builtin(live_mount)
    else:
        stale = (
            live_mount.running_plugin_version != target.version
            or live_mount.running_sha256 != target.sha256
            or (kind, mount.plugin, target.version) in changed
        )
    # The running_* values of a mount whose plugin failed to start stay as they were, and
    # so do they when a tune moves the pin back to what they report: neither can be
    # trusted to say a reload is not needed.
    failure = mount_failure(live_mount, context.external, context.builtins)
    dead = failure is not None
    repinned = isinstance(_pin_change(context, kind, mount, live_mount, target), str)
    if not (stale or dead or repinned):
        return Reloads()
    path = frozenset({api_path(kind, mount.path)})
    why = Reloads(
        dead=path if dead else frozenset(),
        repinned=path if repinned else frozenset(),
        causes=((live_mount.api_path, failure.cause),) if failure is not None else (),
    )
    if _shadowed_until_cleanup(context, kind, mount.plugin, target):
        # Only once the unversioned shadow is deregistered does a reload bring the built-in
        # back; before, an unpinned mount (tuning to the built-in's version may leave it
        # unpinned) would reload onto the shadow again.
        return why | Reloads(cleanup=path)
    return why | Reloads(converge=path)


def _shadowed_until_cleanup(context: Context, kind: MountKind, plugin: str, target: Target) -> bool:
    """A built-in target that an unversioned shadow hides until cleanup deregisters it."""
    return (
        target.builtin
        and (kind, plugin) not in HARD_WIRED_BUILTINS
        and (kind, plugin, "") in context.external
    )


# --- combining results -------------------------------------------------------------------


def _joined(parts: Iterable[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(item for part in parts for item in part)


def _merged(first: MountChanges, second: MountChanges) -> MountChanges:
    """Two results for the same mount as one."""
    held_on = dict(first.held_on)
    for key, where in second.held_on.items():
        held_on[key] = held_on.get(key, ()) + where
    return MountChanges(
        actions=first.actions + second.actions,
        errors=first.errors + second.errors,
        warnings=first.warnings + second.warnings,
        targets={**first.targets, **second.targets},
        claimed=first.claimed | second.claimed,
        enabled=first.enabled | second.enabled,
        held_on=held_on,
        reloads=first.reloads | second.reloads,
    )
