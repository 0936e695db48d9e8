"""How the server resolves plugins and mounts: every such fact, written once (pure, no I/O).

The loader's reference checks, the planner, export and the tests' model of the
server all ask the questions answered here: which built-ins exist (given as an
argument: the shipped list for `validate`, the live server's list otherwise),
which versions name a built-in, how versions compare, what a declared mount
resolves to, what a live mount runs at its next reload, and how the API names
a mount.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from reconciler.builtins import OPENBAO_BUILTINS, RESERVED_BUILTINS, UNCATALOGUED_BUILTINS
from reconciler.releases import last_release_shipping

if TYPE_CHECKING:
    from reconciler.model import CatalogEntry, LiveMount, MountKind, PluginEntry, PluginType

BuiltinKey = tuple[str, str]
CatalogKey = tuple[str, str, str]
# (type, name) of each built-in → its own version; "" when the server does not say
# (the shipped list, and built-ins the catalog never lists).
BuiltinVersions = Mapping[BuiltinKey, str]

# Built-ins the server resolves without the catalog: an external entry of this
# name is accepted (204) but never runs (OpenBao 2.7: kv).
HARD_WIRED_BUILTINS: frozenset[BuiltinKey] = frozenset({("secret", "kv")})

# The built-ins of the shipped OpenBao list, for `validate` (no server to ask).
SHIPPED_BUILTINS: BuiltinVersions = MappingProxyType(dict.fromkeys(OPENBAO_BUILTINS, ""))

_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


# --- versions ------------------------------------------------------------------


def normalize_version(value: str) -> str:
    """`1.2.3` and `v1.2.3` are the same version; the `v` form is canonical."""
    if value == "":
        return ""
    if not _SEMVER.match(value):
        raise ValueError(f"invalid semantic version {value!r} (expected e.g. v1.4.0)")
    return value if value.startswith("v") else "v" + value


def version_order(version: str) -> tuple[tuple[int | str, ...], ...]:
    """A sort key of semantic-version precedence ("" first; build metadata ignored)."""
    match = _SEMVER.match(version)
    if match is None:
        return ((-1,),)
    major, minor, patch, prerelease, _build = match.groups()
    core: tuple[int | str, ...] = (int(major), int(minor), int(patch))
    if prerelease is None:
        # A release sorts after every pre-release of the same core.
        return (core, (1,))
    parts = tuple((0, int(part)) if part.isdigit() else (1, part) for part in prerelease.split("."))
    return (core, (0,), *parts)


def newest_version(versions: Iterable[str]) -> str:
    """The version the server picks when left to choose among registered versions."""
    return max(versions, key=version_order)


def is_builtin_version(version: str) -> bool:
    """A built-in's own version string, e.g. `v2.7.2+builtin.bao`."""
    return "+builtin" in version


def pins_builtin(version: str, builtin_version: str | None) -> bool:
    """True when a pin to `version` names the built-in (whose version is `builtin_version`)."""
    return is_builtin_version(version) or bool(builtin_version and version == builtin_version)


# --- built-ins -------------------------------------------------------------------


def live_builtins(catalog: Iterable[CatalogEntry]) -> dict[BuiltinKey, str]:
    """The built-ins of a live catalog with their versions, plus those no catalog lists."""
    found = dict.fromkeys(UNCATALOGUED_BUILTINS, "")
    found.update({(e.type, e.name): e.version for e in catalog if e.builtin})
    return found


def is_reserved_builtin(plugin_type: str, name: str) -> bool:
    """The server mounts it itself and refuses to mount or override it."""
    return (plugin_type, name) in RESERVED_BUILTINS


def runs_builtin(mount: LiveMount) -> bool:
    """A mount runs a built-in when the server reports no binary hash for it."""
    return mount.running_sha256 == ""


def runs_external(mount: LiveMount) -> bool:
    """A mount runs, or is pinned to, an external catalog entry: a process of its own,
    which can fail to start."""
    pinned_external = mount.plugin_version != "" and not is_builtin_version(mount.plugin_version)
    return not runs_builtin(mount) or pinned_external


# --- mount paths -------------------------------------------------------------------


def api_path(kind: MountKind, path: str) -> str:
    """A mount as the API names it (`sys/remount`, reload, help): auth mounts under `auth/`."""
    path = path.strip("/") + "/"
    return f"auth/{path}" if kind == "auth" else path


def namespace_path(namespace: str) -> str:
    """A namespace as plans and live mounts name it: "team1/sub/", "" for the root."""
    stripped = namespace.strip("/")
    return stripped + "/" if stripped else ""


def split_api_path(path: str) -> tuple[MountKind, str]:
    """The inverse of `api_path`."""
    if path.startswith("auth/"):
        return "auth", path.removeprefix("auth/")
    return "secret", path


# --- resolution --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a mount runs: the built-in, or one external catalog entry."""

    type: str
    name: str
    builtin: bool
    version: str = ""
    sha256: str = ""

    @property
    def key(self) -> CatalogKey | None:
        """The external catalog entry this target runs; None for the built-in."""
        return None if self.builtin else (self.type, self.name, self.version)


def entry_target(entry: PluginEntry) -> Target:
    """The target of a declared catalog entry."""
    return Target(
        entry.type, entry.name, builtin=False, version=entry.version, sha256=entry.sha256 or ""
    )


class Unresolved(StrEnum):
    """Why a declared mount resolves to nothing."""

    RESERVED = "reserved-plugin"
    NOT_A_BUILTIN = "not-a-builtin"
    ABSENT_VERSION = "absent-version"
    UNKNOWN_VERSION = "unknown-version"
    AMBIGUOUS = "ambiguous"
    ONLY_ABSENT = "only-absent"
    UNDECLARED = "undeclared"

    @property
    def depends_on_builtins(self) -> bool:
        """Whether another server's built-in list could resolve the mount after all."""
        return self in {Unresolved.NOT_A_BUILTIN, Unresolved.ONLY_ABSENT, Unresolved.UNDECLARED}


def entries_by_name(plugins: Iterable[PluginEntry]) -> dict[BuiltinKey, list[PluginEntry]]:
    """The file's entries grouped by (type, name), present or absent, in file order.

    Built once per file, so resolving every mount costs one lookup each, not a scan.
    """
    grouped: dict[BuiltinKey, list[PluginEntry]] = {}
    for entry in plugins:
        grouped.setdefault((entry.type, entry.name), []).append(entry)
    return grouped


def resolve_mount(
    kind: PluginType,
    plugin: str,
    version: str | None,
    declared: Sequence[PluginEntry],
    builtins: BuiltinVersions,
) -> Target | Unresolved:
    """A declared mount's effective plugin (SPEC §1, version resolution).

    `declared` holds the file's entries of this plugin (`entries_by_name`). A pinned
    version names the built-in or one declared entry; unpinned, the sole present
    entry of that name, else the built-in.
    """
    if is_reserved_builtin(kind, plugin):
        return Unresolved.RESERVED
    builtin_version = builtins.get((kind, plugin))
    if version is not None:
        if pins_builtin(version, builtin_version):
            if builtin_version is None:
                return Unresolved.NOT_A_BUILTIN
            return Target(kind, plugin, builtin=True)
        for entry in declared:
            if entry.version == version:
                return entry_target(entry) if entry.present else Unresolved.ABSENT_VERSION
        return Unresolved.UNKNOWN_VERSION
    present = [e for e in declared if e.present]
    if len(present) > 1:
        return Unresolved.AMBIGUOUS
    if present:
        return entry_target(present[0])
    if builtin_version is not None:
        return Target(kind, plugin, builtin=True)
    return Unresolved.ONLY_ABSENT if declared else Unresolved.UNDECLARED


def effective_entry(
    kind: str,
    plugin: str,
    pin: str,
    external: Collection[CatalogKey],
    builtins: Collection[BuiltinKey],
) -> Target | None:
    """What a mount pinned to `pin` ("" unpinned) runs at its next enable or reload.

    `external` holds the registered external entries; the target's sha256 is left
    for the caller to look up. None: the mount would have no backend.
    """
    if (kind, plugin) in HARD_WIRED_BUILTINS:
        return Target(kind, plugin, builtin=True)
    if pin and not is_builtin_version(pin):
        return (
            Target(kind, plugin, builtin=False, version=pin)
            if ((kind, plugin, pin) in external)
            else None
        )
    # Unpinned (or pinned to the built-in): an unversioned external entry shadows the built-in.
    if not pin and (kind, plugin, "") in external:
        return Target(kind, plugin, builtin=False, version="")
    if (kind, plugin) in builtins:
        return Target(kind, plugin, builtin=True)
    return None


def with_sha256(target: Target, sha256: str) -> Target:
    """`target` with the hash of the entry it runs."""
    return replace(target, sha256=sha256)


# --- database connections (SPEC §10) ------------------------------------------------


def resolve_connection(
    plugin: str,
    version: str | None,
    declared: Sequence[PluginEntry],
    builtins: BuiltinVersions,
) -> Target | Unresolved:
    """A declared connection's plugin: resolved among `database` entries as a mount's is."""
    return resolve_mount("database", plugin, version, declared, builtins)


def connection_pin(target: Target) -> str:
    """The `plugin_version` a connection reports while it runs `target`.

    A connection on the built-in, or on the unversioned entry that shadows it, is
    unpinned (""); writing "" is refused while only versioned entries exist.
    """
    return "" if target.builtin else target.version


def connection_runs(
    plugin: str, pin: str, external: Collection[CatalogKey], builtins: Collection[BuiltinKey]
) -> Target | None:
    """What a live connection pinned to `pin` runs at its next reset (None: nothing)."""
    return effective_entry("database", plugin, pin, external, builtins)


# --- mounts that do not answer -------------------------------------------------------


@dataclass(frozen=True)
class MountFailure:
    """Why a live mount does not answer, and what brings it back (plan, export, watch)."""

    cause: str
    fix: str
    # The built-in the server no longer ships, when that is the cause: a preflight,
    # export and the docs name the release that last shipped it.
    removed_builtin: bool = False

    def __str__(self) -> str:
        return f"does not answer: {self.cause}; {self.fix}"


def mount_failure(
    mount: LiveMount,
    external: Collection[CatalogKey],
    builtins: Collection[BuiltinKey],
) -> MountFailure | None:
    """Why `mount` has no backend, None when nothing read says so.

    Two reads show it: the probe through the mount failed (its plugin did not start;
    `sys/mounts` still reports what ran before), or the server reports nothing running
    and the mount resolves to no plugin at all — the server skipped it at start, as
    OpenBao 2.7 does with a mount of a built-in it no longer ships (SPEC §14).
    """
    if mount.reserved:
        return None
    kind, plugin, pin = mount.kind, mount.plugin, mount.plugin_version
    target = effective_entry(kind, plugin, pin, external, builtins)
    nothing_runs = mount.running_plugin_version == "" and mount.running_sha256 == ""
    if target is None and nothing_runs:
        if pin and not is_builtin_version(pin):
            return MountFailure(
                cause=f"it is pinned to {kind} plugin {plugin} {pin}, which is not in the catalog",
                fix=f"register {plugin} {pin} (or pin the mount to a registered version) "
                "and reload it",
            )
        last = last_release_shipping((kind, plugin))
        if last is not None:
            return MountFailure(
                cause=f"this server no longer ships the built-in {kind} plugin {plugin} "
                f"(last in OpenBao {last}); its data is still in storage",
                fix=f"declare an external {kind} plugin named {plugin} and pin the mount to "
                "it: apply registers, tunes and reloads it, and the mount is back with its data",
                removed_builtin=True,
            )
        return MountFailure(
            cause=f"no built-in and no catalog entry is named {kind} plugin {plugin}",
            fix=f"register a {kind} plugin named {plugin} and reload the mount",
        )
    if mount.backend_answers is False:
        return MountFailure(
            cause="its plugin failed to start (sys/mounts still reports what ran before)",
            fix="reload it (sys/plugins/reload/backend) once its binary can start, "
            "or pin it back to a version that runs",
        )
    return None
