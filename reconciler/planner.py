"""plan(desired, live) -> Plan: pure, deterministic, no I/O.

The planner decides; the executor only carries out. Every rule of SPEC §1-§2
that depends on the server's behaviour is encoded here, next to a comment
saying which server fact it answers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from deepdiff import DeepDiff

from reconciler.model import (
    CONFIG_DEFAULTS,
    RESERVED_PATHS,
    CatalogEntry,
    DesiredState,
    LiveMount,
    LiveState,
    Mount,
    MountKind,
    PluginEntry,
)
from reconciler.plan import (
    KIND_ORDER,
    Action,
    ActionKind,
    DeregisterAction,
    DeregistrationParams,
    DesiredSource,
    DisableAction,
    EnableAction,
    EnableParams,
    FieldChange,
    MountParams,
    MoveAction,
    MoveParams,
    Plan,
    Problem,
    ReasonCode,
    RegisterAction,
    RegistrationParams,
    ReloadAction,
    ReloadParams,
    ReplaceAction,
    Stage,
    TuneAction,
    TuneParams,
    UpdateAction,
    fingerprint,
)
from reconciler.resolver import (
    HARD_WIRED_BUILTINS,
    CatalogKey,
    Target,
    Unresolved,
    api_path,
    effective_entry,
    entry_target,
    is_builtin_version,
    live_builtins,
    normalize_version,
    resolve_mount,
    runs_builtin,
    with_sha256,
)

_DEREGISTRATION_REASONS: dict[ReasonCode, str] = {
    ReasonCode.DECLARED_ABSENT: "declared state: absent",
    ReasonCode.UNMANAGED_PLUGIN_PRUNED: "not declared and prune_plugins is on",
}

# (type, name, version, sha256) of an upgrade the watcher has set aside after it failed.
HeldUpgrade = tuple[str, str, str, str]


def mount_target_name(kind: MountKind, path: str) -> str:
    """How a mount is named in plans: the file's section and the path."""
    return f"{'auth' if kind == 'auth' else 'secrets'}/{path}"


def catalog_target_name(key: CatalogKey) -> str:
    """How a catalog entry is named in plans and in `--replace TYPE/NAME/VERSION`."""
    return "/".join(key)


def parse_catalog_target(text: str) -> CatalogKey:
    """The inverse of `catalog_target_name`; ValueError names the expected form."""
    parts = text.split("/")
    if len(parts) != 3 or parts[0] not in {"secret", "auth", "database"} or not parts[1]:
        raise ValueError("expected TYPE/NAME/VERSION, e.g. secret/kv-plus/v1.4.0")
    return (parts[0], parts[1], normalize_version(parts[2]))


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
    planner = _Planner(desired, live, frozenset(replace), frozenset(held))
    planner.run()
    actions = sorted(
        planner.actions,
        key=lambda a: (a.stage != Stage.CONVERGE, KIND_ORDER[a.kind], a.target),
    )
    return Plan(
        desired=source or DesiredSource(),
        server=live.server,
        fingerprint=fingerprint(live),
        max_destroy=desired.settings.max_destroy,
        replace=sorted({catalog_target_name(key) for key in replace}),
        actions=actions,
        errors=sorted(set(planner.errors), key=lambda p: (p.target, p.message)),
        warnings=sorted(set(planner.warnings), key=lambda p: (p.target, p.message)),
    )


@dataclass
class _Planner:
    desired: DesiredState
    live: LiveState
    replace: frozenset[CatalogKey]
    held: frozenset[HeldUpgrade]
    actions: list[Action] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.present: dict[CatalogKey, PluginEntry] = {
            e.key: e for e in self.desired.plugins if e.present
        }
        self.absent: dict[CatalogKey, PluginEntry] = {
            e.key: e for e in self.desired.plugins if not e.present
        }
        self.external: dict[CatalogKey, CatalogEntry] = {
            e.key: e for e in self.live.catalog if not e.builtin
        }
        # (type, name) → the built-in's version; "" when the catalog does not list the
        # built-in (the server resolves `database` itself), so its version is unknown.
        self.builtins: dict[tuple[str, str], str] = live_builtins(self.live.catalog)
        self.live_mounts: dict[tuple[MountKind, str], LiveMount] = {
            (m.kind, m.path): m for m in self.live.mounts
        }
        # Filled while planning the catalog, read while planning mounts.
        self.changed_entries: set[CatalogKey] = set()
        self.deregistrations = self._wanted_deregistrations()
        self.deregistered = {key for key, _ in self.deregistrations}
        # External catalog keys that exist once the plan is applied.
        self.entries_after: set[CatalogKey] = (
            set(self.external) | set(self.present)
        ) - self.deregistered
        # Present entries by (type, name), versions in order: every mount resolves through it.
        self.present_by_name: dict[tuple[str, str], list[PluginEntry]] = {}
        for entry in sorted(self.present.values(), key=lambda e: e.version):
            self.present_by_name.setdefault((entry.type, entry.name), []).append(entry)
        self.converge_reloads: list[str] = []
        self.cleanup_reloads: list[str] = []
        self.claimed_paths: set[tuple[MountKind, str]] = set()
        self.disabled_paths: set[tuple[MountKind, str]] = set()
        # Entries that mounts stay on while their upgrade is held: kept registered.
        self.held_on: dict[CatalogKey, list[str]] = {}
        # Declared path → the live mount moved there by this plan.
        self.moved: dict[tuple[MountKind, str], LiveMount] = {}
        # Paths this plan enables, fresh or as a replacement.
        self.enabled: set[tuple[MountKind, str]] = set()

    # --- entry point ----------------------------------------------------------

    def run(self) -> None:
        self._plan_catalog_writes()
        targets = self._plan_declared_mounts()
        self._plan_unmanaged_mounts()
        self._plan_deregistrations(targets)
        self._plan_override_warnings(targets)
        self._add_reloads()

    # --- catalog --------------------------------------------------------------

    def _plan_catalog_writes(self) -> None:
        for key in sorted(self.replace - set(self.present)):
            self.warnings.append(
                Problem(
                    target=catalog_target_name(key),
                    message="--replace names no present entry of the file: nothing re-registered",
                )
            )
        for key, entry in sorted(self.present.items()):
            target = catalog_target_name(key)
            if (entry.type, entry.name) in HARD_WIRED_BUILTINS:
                self.errors.append(
                    Problem(
                        target=target,
                        message=(
                            f"the built-in {entry.type} plugin {entry.name!r} is hard-wired in the "
                            "server and cannot be overridden by an external entry: rename the "
                            "plugin"
                        ),
                    )
                )
                continue
            if entry.sha256 is None:
                self.errors.append(
                    Problem(
                        target=target,
                        message="sha256 is unknown: give it, or set plugin_directory",
                    )
                )
                continue
            if entry.env:
                self.warnings.append(
                    Problem(
                        target=target,
                        message=(
                            "env (sensitive) cannot be verified: the server never returns it, "
                            "so a change of env alone is not seen; use "
                            f"--replace {target} to re-register it"
                        ),
                    )
                )
            wanted = _registration(entry)
            live_entry = self.external.get(key)
            if live_entry is None:
                self.changed_entries.add(key)
                self.actions.append(
                    RegisterAction(
                        target=target,
                        reason="not in the catalog",
                        reason_code=ReasonCode.NOT_REGISTERED,
                        changes=_changes({}, _visible(wanted)),
                        params=wanted,
                    )
                )
                continue
            have = {
                "command": live_entry.command,
                "sha256": live_entry.sha256,
                "args": list(live_entry.args),
            }
            changes = _changes(have, {k: getattr(wanted, k) for k in have})
            if changes or key in self.replace:
                self.changed_entries.add(key)
                self.actions.append(
                    UpdateAction(
                        target=target,
                        reason=(
                            "registered with a different " + ", ".join(c.field for c in changes)
                            if changes
                            else "re-register requested with --replace"
                        ),
                        reason_code=(
                            ReasonCode.REGISTRATION_DIFFERS
                            if changes
                            else ReasonCode.REPLACE_REQUESTED
                        ),
                        changes=changes,
                        params=wanted,
                    )
                )
                if entry.type == "database":
                    # Database plugins serve connections, not mounts: reload them by name.
                    self.actions.append(
                        ReloadAction(
                            target=f"plugin {entry.name}",
                            reason="database connections keep the old binary until reloaded",
                            reason_code=ReasonCode.DATABASE_PLUGIN_UPDATED,
                            params=ReloadParams(plugin=entry.name, scope=self._scope()),
                        )
                    )

    # --- resolution -----------------------------------------------------------

    def _resolve(self, kind: MountKind, mount: Mount) -> Target | None:
        """The declared mount's effective plugin, or None after recording an error."""
        outcome = resolve_mount(
            kind, mount.plugin, mount.version, self.desired.plugins, self.builtins
        )
        if isinstance(outcome, Target):
            return outcome
        where = mount_target_name(kind, mount.path)
        name = mount.plugin
        match outcome:
            case Unresolved.NOT_A_BUILTIN:
                message = f"{name!r} is not a built-in {kind} plugin"
            case Unresolved.ABSENT_VERSION:
                message = f"version {mount.version} of {name!r} is declared absent"
            case Unresolved.UNKNOWN_VERSION:
                message = f"no declared {kind} plugin {name!r} has version {mount.version}"
            case Unresolved.AMBIGUOUS:
                versions = ", ".join(e.version or '""' for e in self.present_by_name[(kind, name)])
                message = f"ambiguous: {name!r} has versions {versions}; pin a version"
            case Unresolved.RESERVED:
                message = f"{name!r} is mounted by the server itself and cannot be mounted again"
            case _:
                message = (
                    f"{kind} plugin {name!r} is neither declared in the file "
                    "nor a built-in of this server"
                )
        self._error(where, message)
        return None

    def _live_resolution(self, mount: LiveMount, entries: set[CatalogKey]) -> Target | None:
        """What a live mount runs at its next reload, given the catalog `entries`."""
        target = effective_entry(
            mount.kind, mount.plugin, mount.plugin_version, entries, self.builtins
        )
        if target is None or target.key is None:
            return target
        return self._external_target(target.key)

    def _external_target(self, key: CatalogKey) -> Target:
        entry = self.present.get(key)
        if entry is not None:
            return entry_target(entry)
        return with_sha256(
            Target(*key[:2], builtin=False, version=key[2]), self.external[key].sha256
        )

    # --- declared mounts ------------------------------------------------------

    def _plan_declared_mounts(self) -> dict[tuple[MountKind, str], Target]:
        targets: dict[tuple[MountKind, str], Target] = {}
        for kind, mount in self.desired.mounts():
            where = mount_target_name(kind, mount.path)
            if mount.path in RESERVED_PATHS[kind]:
                self._error(where, "reserved mount: the server owns it and it cannot be declared")
                continue
            self.claimed_paths.add((kind, mount.path))
            target = self._resolve(kind, mount)
            if target is None or not self._builtin_can_run(kind, mount, target):
                continue
            if not target.builtin and (kind, mount.plugin) in HARD_WIRED_BUILTINS:
                # The entry is refused (an error already names it): nothing to plan on it.
                continue
            target = self._hold_back(kind, mount, target)
            targets[(kind, mount.path)] = target
            live_mount = self.live_mounts.get((kind, mount.path))
            if live_mount is None and mount.moved_from is not None:
                if not self._plan_move(kind, mount):
                    continue
                live_mount = self.moved.get((kind, mount.path))
            if live_mount is None:
                self._plan_enable(kind, mount, target, ActionKind.ENABLE, "not mounted")
                continue
            immutable = self._immutable_changes(mount, live_mount)
            if immutable:
                if mount.protect:
                    self._error(
                        where,
                        "protected mount would be replaced (disable + enable destroys its data): "
                        + ", ".join(f"{c.field} {c.before!r} → {c.after!r}" for c in immutable),
                    )
                    continue
                self._plan_enable(
                    kind,
                    mount,
                    target,
                    ActionKind.REPLACE,
                    "immutable field changed: " + ", ".join(c.field for c in immutable),
                    immutable,
                )
                continue
            errors = len(self.errors)
            self._plan_tune(kind, mount, live_mount, target)
            if len(self.errors) == errors:
                # Without the pin it needs, a reload would not reach the target.
                self._plan_reload(kind, mount, live_mount, target)
        return targets

    def _hold_back(self, kind: MountKind, mount: Mount, target: Target) -> Target:
        """Keep a mount on its current plugin when its target is a held (failed) upgrade."""
        if target.builtin:
            return target
        if (kind, mount.plugin, target.version, target.sha256) not in self.held:
            return target
        live_mount = self.live_mounts.get((kind, mount.path))
        where = mount_target_name(kind, mount.path)
        self.warnings.append(
            Problem(
                target=where,
                message=(
                    f"upgrade to {mount.plugin} {target.version} failed before and is held "
                    "until the file changes"
                ),
            )
        )
        if live_mount is None:
            return target
        current = self._live_resolution(live_mount, set(self.external))
        if current is None:
            return target
        if current.key is not None:
            self.held_on.setdefault(current.key, []).append(where)
        return current

    def _builtin_can_run(self, kind: MountKind, mount: Mount, target: Target) -> bool:
        """False (after recording an error) when an unversioned shadow stays registered."""
        if not target.builtin or (kind, mount.plugin) in HARD_WIRED_BUILTINS:
            return True
        if (kind, mount.plugin, "") not in self.entries_after:
            return True
        # An unpinned mount runs the shadow, and a pin to the built-in's version is stored
        # as "" on enable: with the shadow registered, no request makes it run the built-in.
        self._error(
            mount_target_name(kind, mount.path),
            f"an unversioned external {mount.plugin!r} stays registered and shadows the "
            "built-in: a mount of it cannot run the built-in; declare that entry "
            "state: absent (or set prune_plugins), or mount the external entry",
        )
        return False

    def _plan_move(self, kind: MountKind, mount: Mount) -> bool:
        """Plan the move of `moved_from`; False (after recording an error) if it cannot move."""
        assert mount.moved_from is not None
        source = self.live_mounts.get((kind, mount.moved_from))
        if source is None:
            return True
        where = mount_target_name(kind, mount.path)
        self.claimed_paths.add((kind, mount.moved_from))
        if source.reserved:
            self._error(where, f"moved_from {mount.moved_from}: reserved mounts cannot be moved")
            return False
        immutable = self._immutable_changes(mount, source)
        if immutable:
            # Replace runs before move, so a moved mount cannot also be replaced in one plan;
            # and a replacement would destroy the data the move is asked to keep.
            self._error(
                where,
                f"moved_from {mount.moved_from}: a move keeps the mount as it is, but "
                + ", ".join(f"{c.field} {c.before!r} → {c.after!r}" for c in immutable)
                + " needs a new mount: move it first, or drop moved_from to start afresh",
            )
            return False
        self.moved[(kind, mount.path)] = source.model_copy(update={"path": mount.path})
        self.actions.append(
            MoveAction(
                target=mount_target_name(kind, mount.path),
                reason=f"moved_from {mount.moved_from}: sys/remount keeps its data",
                reason_code=ReasonCode.MOVED_FROM,
                changes=[FieldChange(field="path", before=mount.moved_from, after=mount.path)],
                params=MoveParams(kind=kind, from_path=mount.moved_from, to=mount.path),
            )
        )
        return True

    def _immutable_changes(self, mount: Mount, live_mount: LiveMount) -> list[FieldChange]:
        changes = []
        if mount.plugin != live_mount.plugin:
            changes.append(
                FieldChange(field="plugin", before=live_mount.plugin, after=mount.plugin)
            )
        for name in ("local", "seal_wrap"):
            wanted = getattr(mount, name)
            if wanted is not None and wanted != getattr(live_mount, name):
                changes.append(
                    FieldChange(field=name, before=getattr(live_mount, name), after=wanted)
                )
        return changes

    def _enable_version(self, kind: MountKind, mount: Mount, target: Target) -> str | None:
        """The plugin_version to enable with; None lets the server run the built-in."""
        if not target.builtin:
            return target.version
        # Left to choose, the server pins a new mount to the newest registered version,
        # which silently picks an override: name the built-in whenever one exists.
        # Entries deregistered by this plan still exist when the mount is enabled.
        registered = set(self.external) | set(self.present)
        same_name = [k for k in registered if k[0] == kind and k[1] == mount.plugin]
        if not same_name:
            return None
        return self.builtins[(kind, mount.plugin)]

    def _plan_enable(
        self,
        kind: MountKind,
        mount: Mount,
        target: Target,
        action_kind: ActionKind,
        reason: str,
        changes: list[FieldChange] | None = None,
    ) -> None:
        where = mount_target_name(kind, mount.path)
        version = self._enable_version(kind, mount, target)
        if version == "" and target.builtin:
            self._error(
                where,
                f"external entries named {mount.plugin!r} exist and the server does not list "
                "the built-in's version to pin it: a new mount would run the newest of them",
            )
            return
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
        if self._shadowed_until_cleanup(kind, mount.plugin, target):
            # Enabled while the unversioned shadow still exists, it runs the shadow until the
            # shadow is deregistered and the mount reloaded.
            self.cleanup_reloads.append(api_path(kind, mount.path))
        self.enabled.add((kind, mount.path))
        shown = params.model_dump(exclude_none=True, exclude={"kind", "path"})
        action_type = ReplaceAction if action_kind is ActionKind.REPLACE else EnableAction
        self.actions.append(
            action_type(
                target=where,
                reason=reason,
                reason_code=(
                    ReasonCode.IMMUTABLE_FIELD_CHANGED
                    if action_kind is ActionKind.REPLACE
                    else ReasonCode.NOT_MOUNTED
                ),
                changes=changes or _changes({}, shown),
                params=params,
            )
        )

    def _plan_tune(
        self, kind: MountKind, mount: Mount, live_mount: LiveMount, target: Target
    ) -> None:
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
        pin = self._pin_change(kind, mount, live_mount, target)
        if pin is not None:
            have["plugin_version"], want["plugin_version"] = live_mount.plugin_version, pin
        changes = _changes(have, want)
        if not changes:
            return
        self.actions.append(
            TuneAction(
                target=mount_target_name(kind, mount.path),
                reason="tuned values differ: " + ", ".join(c.field for c in changes),
                reason_code=ReasonCode.TUNED_VALUES_DIFFER,
                changes=changes,
                params=TuneParams(
                    kind=kind,
                    path=mount.path,
                    body={c.field: want[c.field] for c in changes},
                ),
            )
        )

    def _pin_change(
        self, kind: MountKind, mount: Mount, live_mount: LiveMount, target: Target
    ) -> str | None:
        """The plugin_version to tune to, or None when the pin is already right."""
        where = mount_target_name(kind, mount.path)
        if target.builtin:
            if not live_mount.plugin_version or is_builtin_version(live_mount.plugin_version):
                return None
            # A pin cannot be removed (tuning to "" is 400): pin the built-in's own version.
            builtin_version = self.builtins[(kind, mount.plugin)]
            if not builtin_version:
                self._error(
                    where,
                    f"pinned to {live_mount.plugin_version}, and the server does not list the "
                    "built-in's version to pin it back",
                )
                return None
            return builtin_version
        if live_mount.plugin_version == target.version:
            return None
        if target.version == "":
            self._error(
                where,
                "cannot move a pinned mount to an unversioned entry: the server refuses to "
                "clear plugin_version; declare a version",
            )
            return None
        return target.version

    def _plan_reload(
        self, kind: MountKind, mount: Mount, live_mount: LiveMount, target: Target
    ) -> None:
        if target.builtin:
            stale = not runs_builtin(live_mount)
        else:
            stale = (
                live_mount.running_plugin_version != target.version
                or live_mount.running_sha256 != target.sha256
                or (kind, mount.plugin, target.version) in self.changed_entries
            )
        if not stale:
            return
        reload_path = api_path(kind, mount.path)
        if self._shadowed_until_cleanup(kind, mount.plugin, target):
            # Only once the unversioned shadow is deregistered does a reload bring the built-in
            # back; before, an unpinned mount (tuning to the built-in's version may leave it
            # unpinned) would reload onto the shadow again.
            self.cleanup_reloads.append(reload_path)
        else:
            self.converge_reloads.append(reload_path)

    def _shadowed_until_cleanup(self, kind: MountKind, plugin: str, target: Target) -> bool:
        """A built-in target that an unversioned shadow hides until cleanup deregisters it."""
        return (
            target.builtin
            and (kind, plugin) not in HARD_WIRED_BUILTINS
            and (kind, plugin, "") in self.external
        )

    # --- unmanaged mounts -----------------------------------------------------

    def _plan_unmanaged_mounts(self) -> None:
        for (kind, path), live_mount in sorted(self.live_mounts.items()):
            if live_mount.reserved or (kind, path) in self.claimed_paths:
                continue
            where = mount_target_name(kind, path)
            if not self.desired.settings.prune_mounts:
                self.warnings.append(
                    Problem(
                        target=where, message=f"unmanaged mount ({live_mount.plugin}): left alone"
                    )
                )
                continue
            self.disabled_paths.add((kind, path))
            self.actions.append(
                DisableAction(
                    target=where,
                    reason="not declared and prune_mounts is on: disabling destroys its data",
                    reason_code=ReasonCode.UNMANAGED_MOUNT_PRUNED,
                    changes=[FieldChange(field="plugin", before=live_mount.plugin, after=None)],
                    params=MountParams(kind=kind, path=path),
                )
            )

    # --- deregistration -------------------------------------------------------

    def _wanted_deregistrations(self) -> list[tuple[CatalogKey, ReasonCode]]:
        wanted: list[tuple[CatalogKey, ReasonCode]] = []
        for key in sorted(self.external):
            if key in self.absent:
                wanted.append((key, ReasonCode.DECLARED_ABSENT))
            elif key not in self.present:
                if self.desired.settings.prune_plugins:
                    wanted.append((key, ReasonCode.UNMANAGED_PLUGIN_PRUNED))
                else:
                    self.warnings.append(
                        Problem(
                            target=catalog_target_name(key),
                            message="unmanaged catalog entry: left registered",
                        )
                    )
        return wanted

    def _plan_deregistrations(self, targets: dict[tuple[MountKind, str], Target]) -> None:
        remaining = self.entries_after
        for key, code in self.deregistrations:
            held = self.held_on.get(key)
            if held:
                # Watch mode keeps these mounts on the entry until the file changes.
                self.warnings.append(
                    Problem(
                        target=catalog_target_name(key),
                        message=f"{_DEREGISTRATION_REASONS[code]}, but kept registered: "
                        f"{', '.join(sorted(held))} "
                        "stay on it while their upgrade is held",
                    )
                )
                continue
            users = self._users_after(key, targets, remaining)
            if users:
                self._error(
                    catalog_target_name(key),
                    "cannot deregister: still used by "
                    + ", ".join(users)
                    + " (its next reload would leave it without a backend)",
                )
                continue
            self.actions.append(
                DeregisterAction(
                    target=catalog_target_name(key),
                    reason=_DEREGISTRATION_REASONS[code],
                    reason_code=code,
                    changes=[FieldChange(field="sha256", before=self.external[key].sha256)],
                    params=DeregistrationParams(type=key[0], name=key[1], version=key[2]),
                )
            )
            followers = self._unmanaged_followers(key)
            if followers:
                self.warnings.append(
                    Problem(
                        target=catalog_target_name(key),
                        message="deregistering this shadow returns "
                        + ", ".join(followers)
                        + " to the built-in at its next reload (unmanaged: not reloaded now)",
                    )
                )

    def _unmanaged_followers(self, key: CatalogKey) -> list[str]:
        """Unmanaged unpinned mounts that follow the unversioned shadow `key` of a built-in."""
        plugin_type, name, version = key
        if (
            version
            or (plugin_type, name) not in self.builtins
            or (plugin_type, name) in HARD_WIRED_BUILTINS
        ):
            return []
        return [
            mount_target_name(kind, path)
            for (kind, path), live_mount in sorted(self.live_mounts.items())
            if not live_mount.reserved
            and (kind, path) not in self.claimed_paths
            and (kind, path) not in self.disabled_paths
            and (kind, live_mount.plugin) == (plugin_type, name)
            and not live_mount.plugin_version
        ]

    def _users_after(
        self,
        key: CatalogKey,
        targets: dict[tuple[MountKind, str], Target],
        remaining: set[CatalogKey],
    ) -> list[str]:
        """Mounts left that would run `key`, or nothing at all, once it is gone."""
        users = []
        for (kind, path), target in sorted(targets.items()):
            if target.key == key:
                users.append(mount_target_name(kind, path))
        for (kind, path), live_mount in sorted(self.live_mounts.items()):
            if (
                live_mount.reserved
                or (kind, path) in self.claimed_paths
                or (kind, path) in self.disabled_paths
                or (kind, live_mount.plugin) != (key[0], key[1])
            ):
                continue
            now = self._live_resolution(live_mount, set(self.external))
            after = self._live_resolution(live_mount, remaining)
            if now is not None and not now.builtin and now.version == key[2] and after is None:
                users.append(mount_target_name(kind, path))
        return users

    # --- overrides ------------------------------------------------------------

    def _plan_override_warnings(self, targets: dict[tuple[MountKind, str], Target]) -> None:
        """Name every mount an override of a built-in changes, managed or not."""
        reloading = set(self.converge_reloads) | set(self.cleanup_reloads)
        for key in sorted(self.present):
            plugin_type, name, version = key
            if (plugin_type, name) not in self.builtins or (plugin_type, name) in (
                HARD_WIRED_BUILTINS
            ):
                continue
            affected = [
                f"{mount_target_name(kind, path)} ({state})"
                for (kind, path), state in sorted(
                    self._declared_on(key, targets, reloading) | self._unmanaged_on(key)
                )
            ]
            scope = "every unpinned mount of that name" if version == "" else "mounts pinned to it"
            listing = "affected: " + ", ".join(affected) if affected else "no mount affected yet"
            self.warnings.append(
                Problem(
                    target=catalog_target_name(key),
                    message=f"overrides the built-in {plugin_type} plugin {name!r} for {scope}; "
                    + listing,
                )
            )

    def _declared_on(
        self, key: CatalogKey, targets: dict[tuple[MountKind, str], Target], reloading: set[str]
    ) -> set[tuple[tuple[MountKind, str], str]]:
        """Declared mounts that run the override `key` once the plan is applied."""
        found = set()
        for (kind, path), target in targets.items():
            if target.key != key:
                continue
            if (kind, path) in self.enabled:
                state = "enabled on it"
            elif api_path(kind, path) in reloading:
                state = "reloaded onto it now"
            else:
                state = "runs it"
            found.add(((kind, path), state))
        return found

    def _unmanaged_on(self, key: CatalogKey) -> set[tuple[tuple[MountKind, str], str]]:
        """Unmanaged mounts the override `key` takes over (they are never reloaded by a plan)."""
        plugin_type, name, version = key
        entry = self.present[key]
        found = set()
        for (kind, path), live_mount in self.live_mounts.items():
            if (
                live_mount.reserved
                or (kind, path) in self.claimed_paths
                or (kind, path) in self.disabled_paths
                or (kind, live_mount.plugin) != (plugin_type, name)
            ):
                continue
            pinned = live_mount.plugin_version == version != ""
            shadowed = version == "" and not live_mount.plugin_version
            if not (pinned or shadowed):
                continue
            running = (live_mount.running_plugin_version, live_mount.running_sha256)
            if running == (version, entry.sha256) and key not in self.changed_entries:
                state = "unmanaged, runs it"
            else:
                state = "unmanaged, switches at its next reload"
            found.add(((kind, path), state))
        return found

    # --- reloads --------------------------------------------------------------

    def _add_reloads(self) -> None:
        for stage, mounts, code, reason in (
            (
                Stage.CONVERGE,
                self.converge_reloads,
                ReasonCode.RUNNING_PLUGIN_DIFFERS,
                "running plugin differs from its catalog entry",
            ),
            (
                Stage.CLEANUP,
                self.cleanup_reloads,
                ReasonCode.BUILTIN_AFTER_CLEANUP,
                "back to the built-in once the shadowing entry is deregistered",
            ),
        ):
            if not mounts:
                continue
            self.actions.append(
                ReloadAction(
                    target="mounts " + ", ".join(sorted(mounts)),
                    stage=stage,
                    reason=reason,
                    reason_code=code,
                    params=ReloadParams(mounts=sorted(mounts), scope=self._scope()),
                )
            )

    # --- helpers --------------------------------------------------------------

    def _scope(self) -> str:
        return "global" if self.desired.settings.reload_scope == "global" else ""

    def _error(self, target: str, message: str) -> None:
        self.errors.append(Problem(target=target, message=message))


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


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    """Field-level before/after of one entry; only the fields that differ, in key order."""
    if before and before == after:
        # Most entries of a plan are unchanged: DeepDiff only for those that differ.
        return []
    fields: Iterable[Any] = (
        after if not before else DeepDiff(before, after, verbose_level=0).affected_root_keys
    )
    return [
        FieldChange(field=str(name), before=before.get(name), after=after.get(name))
        for name in sorted(fields, key=str)
    ]
