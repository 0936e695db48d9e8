"""What every phase of planning reads: the inputs, indexed once, and how plans name things."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.model import (
    CatalogEntry,
    DesiredState,
    LiveMount,
    LiveState,
    MountKind,
    PluginEntry,
)
from reconciler.plan import Action, FieldChange, Problem, ReasonCode, ReloadScope
from reconciler.resolver import (
    BuiltinKey,
    CatalogKey,
    Target,
    effective_entry,
    entries_by_name,
    entry_target,
    live_builtins,
    namespace_path,
    normalize_version,
    with_sha256,
)
from reconciler.usage import ServerUsage, mount_target_name, where_text

# (type, name, version, sha256) of an upgrade the watcher has set aside after it failed.
HeldUpgrade = tuple[str, str, str, str]
MountKey = tuple[MountKind, str]


def elsewhere_name(mount: LiveMount) -> str:
    """How a plan names a mount of a namespace other than the client's: with its namespace."""
    return f"{mount_target_name(mount.kind, mount.path)} in {where_text(mount.namespace)}"


def catalog_target_name(key: CatalogKey) -> str:
    """How a catalog entry is named in plans and in `--replace TYPE/NAME/VERSION`."""
    return "/".join(key)


def parse_catalog_target(text: str) -> CatalogKey:
    """The inverse of `catalog_target_name`; ValueError names the expected form."""
    parts = text.split("/")
    if len(parts) != 3 or parts[0] not in {"secret", "auth", "database"} or not parts[1]:
        raise ValueError("expected TYPE/NAME/VERSION, e.g. secret/kv-plus/v1.4.0")
    return (parts[0], parts[1], normalize_version(parts[2]))


@dataclass(frozen=True)
class Outcome:
    """What a phase adds to the plan; each phase returns one (or a subclass)."""

    actions: tuple[Action, ...] = ()
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()


# Why the planner never writes an entry a `plugin` stanza owns.
OWNED_BY_SERVER = "owned by the server configuration (a `plugin` stanza)"


def problem(target: str, message: str) -> Problem:
    return Problem(target=target, message=message)


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    """Field-level before/after of one entry; only the fields that differ, in key order."""
    if before and before == after:
        # Most entries of a plan are unchanged: DeepDiff only for those that differ.
        return []
    if not before:
        fields: Iterable[Any] = after
    else:
        # Imported here: deepdiff (and cachebox, asyncio) costs ~40 ms of start-up, which
        # a no-op `plan` would pay for nothing.
        from deepdiff import DeepDiff  # noqa: PLC0415

        fields = DeepDiff(before, after, verbose_level=0).affected_root_keys
    return [
        FieldChange(field=str(name), before=before.get(name), after=after.get(name))
        for name in sorted(fields, key=str)
    ]


@dataclass(frozen=True)
class Context:
    """The planner's inputs, indexed for the phases; nothing here changes while planning."""

    desired: DesiredState
    live: LiveState
    replace: frozenset[CatalogKey]
    held: frozenset[HeldUpgrade]
    present: Mapping[CatalogKey, PluginEntry]
    absent: Mapping[CatalogKey, PluginEntry]
    external: Mapping[CatalogKey, CatalogEntry]
    # (type, name) → the built-in's version; "" when the server does not list it.
    builtins: Mapping[BuiltinKey, str]
    live_mounts: Mapping[MountKey, LiveMount]
    # The file's entries by (type, name), present or absent, in file order.
    declared_by_name: Mapping[tuple[str, str], Sequence[PluginEntry]]
    # Present entries by (type, name), versions in order.
    present_by_name: Mapping[tuple[str, str], tuple[PluginEntry, ...]]
    # External entries a `plugin` stanza of the server's configuration owns: never written.
    declarative: frozenset[CatalogKey]
    # External entries this plan means to deregister, and why (cleanup may still keep some).
    deregistrations: tuple[tuple[CatalogKey, ReasonCode], ...]
    # External catalog keys that exist once the plan is applied.
    entries_after: frozenset[CatalogKey]
    # The reload scope the file asks for ("global", or "" for this node).
    scope: ReloadScope
    # The namespace this context plans, as a path from the root ("" is the root).
    namespace: str
    # Every mount and connection of every namespace: what every in-use check reads.
    usage: ServerUsage

    @classmethod
    def of(
        cls,
        desired: DesiredState,
        live: LiveState,
        replace: frozenset[CatalogKey],
        held: frozenset[HeldUpgrade],
        *,
        namespace: str | None = None,
        usage: ServerUsage | None = None,
    ) -> Context:
        """`namespace` defaults to the client's; `usage` to the picture of `live`."""
        present = {e.key: e for e in desired.plugins if e.present}
        absent = {e.key: e for e in desired.plugins if not e.present}
        external = {e.key: e for e in live.catalog if not e.builtin}
        # A deregister would only last until the next SIGHUP re-registers the stanza.
        declarative = frozenset(key for key, entry in external.items() if entry.declarative)
        by_name: dict[tuple[str, str], list[PluginEntry]] = {}
        for entry in sorted(present.values(), key=lambda e: e.version):
            by_name.setdefault((entry.type, entry.name), []).append(entry)
        deregistrations = tuple(
            (
                key,
                ReasonCode.DECLARED_ABSENT if key in absent else ReasonCode.UNMANAGED_PLUGIN_PRUNED,
            )
            for key in sorted(external)
            if key not in declarative
            and (key in absent or (key not in present and desired.settings.prune_plugins))
        )
        gone = {key for key, _ in deregistrations}
        owned_by_file = {key for key, entry in present.items() if entry.managed_by == "file"}
        return cls(
            desired=desired,
            live=live,
            replace=replace,
            held=held,
            present=present,
            absent=absent,
            external=external,
            declarative=declarative,
            builtins=live_builtins(live.catalog),
            live_mounts={(m.kind, m.path): m for m in live.mounts},
            declared_by_name=entries_by_name(desired.plugins),
            present_by_name={name: tuple(entries) for name, entries in by_name.items()},
            deregistrations=deregistrations,
            # A server-owned reference adds nothing: only a stanza can.
            entries_after=frozenset((set(external) | set(owned_by_file)) - gone),
            scope=reload_scope(desired.settings.reload_scope, live),
            namespace=namespace_path(live.server.namespace) if namespace is None else namespace,
            usage=ServerUsage.of(live) if usage is None else usage,
        )

    def live_resolution(self, mount: LiveMount, entries: frozenset[CatalogKey]) -> Target | None:
        """What a live mount runs at its next reload, given the catalog `entries`."""
        target = effective_entry(
            mount.kind, mount.plugin, mount.plugin_version, entries, self.builtins
        )
        if target is None or target.key is None:
            return target
        return self.external_target(target.key)

    def running_now(self, mount: LiveMount) -> Target | None:
        """What a live mount runs at its next reload if this plan changed nothing."""
        return self.live_resolution(mount, frozenset(self.external))

    def external_target(self, key: CatalogKey) -> Target:
        entry = self.present.get(key)
        if entry is not None and (entry.managed_by == "file" or key not in self.external):
            return entry_target(entry)
        return with_sha256(
            Target(*key[:2], builtin=False, version=key[2]), self.external[key].sha256
        )

    def unmanaged_mounts(
        self, claimed: frozenset[MountKey], disabled: frozenset[MountKey] = frozenset()
    ) -> Iterator[tuple[MountKey, LiveMount]]:
        """Live mounts the file does not declare and the plan leaves in place, in order."""
        for key, live_mount in sorted(self.live_mounts.items()):
            if not live_mount.reserved and key not in claimed and key not in disabled:
                yield key, live_mount

    def mounts_elsewhere(self) -> Iterator[LiveMount]:
        """The mounts of every other namespace: never changed by this plan, always kept."""
        for live_mount in self.live.elsewhere:
            if not live_mount.reserved:
                yield live_mount

    def every_mount_named(self) -> Iterator[tuple[str, LiveMount]]:
        """Every live mount of every namespace read, with the name plans give it: the
        client's namespace's by path alone, the others' with their namespace. In one
        order whatever order the server listed them in: plans are deterministic."""
        for live_mount in sorted(self.live.mounts, key=lambda m: (m.kind, m.path)):
            yield mount_target_name(live_mount.kind, live_mount.path), live_mount
        for live_mount in sorted(self.live.elsewhere, key=lambda m: (m.namespace, m.kind, m.path)):
            yield elsewhere_name(live_mount), live_mount

    def loses_backend(self, live_mount: LiveMount, key: CatalogKey) -> bool:
        """Whether a mount left in place runs `key` now and nothing once `key` is gone."""
        if (live_mount.kind, live_mount.plugin) != key[:2]:
            return False
        now = self.running_now(live_mount)
        after = self.live_resolution(live_mount, self.entries_after)
        return now is not None and not now.builtin and now.version == key[2] and after is None


def reload_scope(setting: str | None, live: LiveState) -> ReloadScope:
    """The scope reloads are sent with: global on a cluster unless the file says local."""
    if setting is None:
        return "global" if len(live.nodes) > 1 else ""
    return "global" if setting == "global" else ""
