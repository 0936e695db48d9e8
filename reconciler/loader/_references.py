"""Rules that relate the entries of a desired-state file to each other (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from reconciler.builtins import BUILTIN_ALIASES
from reconciler.loader._yaml import Pointer
from reconciler.model import (
    AUTH_ONLY_CONFIG_KEYS,
    DATABASE_ENGINE,
    RESERVED_PATHS,
    DesiredState,
    Mount,
    MountKind,
    PluginEntry,
)
from reconciler.releases import last_release_shipping
from reconciler.resolver import (
    SHIPPED_BUILTINS,
    BuiltinVersions,
    Unresolved,
    is_reserved_builtin,
    resolve_connection,
    resolve_mount,
)

_SECTIONS: tuple[tuple[Literal["secrets", "auth"], MountKind], ...] = (
    ("secrets", "secret"),
    ("auth", "auth"),
)
_KIND_NOUN: dict[str, str] = {"secret": "secrets engine", "auth": "auth method"}
# The server refuses to mount anything under these (`cannot mount "auth/x/"`).
_PROTECTED_PREFIXES: dict[MountKind, tuple[str, ...]] = {
    "secret": ("auth/", "audit/", *sorted(RESERVED_PATHS["secret"])),
    "auth": tuple(sorted(RESERVED_PATHS["auth"])),
}
# Problems about how a mount resolves; meaningless when an entry it might
# resolve to was dropped for schema errors.
RESOLUTION_CODES = frozenset(
    {
        "undeclared",
        "unknown-version",
        "ambiguous",
        "absent",
        *(f"connection-{outcome.value}" for outcome in Unresolved),
    }
)


@dataclass(frozen=True)
class ReferenceProblem:
    """A cross-reference error at `pointer` (keys and list indices from the top level)."""

    pointer: Pointer
    message: str
    code: str

    @property
    def where(self) -> str:
        """The pointer written as `secrets[3].plugin`."""
        return dotted(self.pointer)


def check_references(
    state: DesiredState, builtins: BuiltinVersions | None = SHIPPED_BUILTINS
) -> list[ReferenceProblem]:
    """The rules that relate entries to each other, as problems pointing into the file.

    Pure: no I/O. `builtins` holds the built-in plugins (`reconciler.resolver`):
    the shipped OpenBao list by default, or a live server's. None leaves out the
    problems that depend on which built-ins exist: the plan decides those against
    the live server's list.
    """
    problems: list[ReferenceProblem] = []
    problems += _check_plugins(state)
    if state.namespace is not None and state.plugins:
        problems.append(
            ReferenceProblem(
                ("plugins",),
                f"a file bound to a namespace (namespace: {state.namespace}) declares mounts "
                "only: the one catalog serves every namespace and is written from the root's "
                "file; its mounts name the catalog's entries by name and version",
                "bound-file-plugins",
            )
        )
    by_name: dict[tuple[str, str], list[tuple[int, PluginEntry]]] = {}
    for position, entry in enumerate(state.plugins):
        by_name.setdefault((entry.type, entry.name), []).append((position, entry))
    scopes: list[tuple[Pointer, list[Mount], list[Mount]]] = [((), state.secrets, state.auth)]
    scopes += [(at, ns.secrets, ns.auth) for _, ns, at in state.namespace_tree()]
    for at, secrets, auth in scopes:
        for section, kind in _SECTIONS:
            mounts = secrets if section == "secrets" else auth
            found = _check_paths(section, kind, mounts)
            found += _check_config_kind(section, kind, mounts)
            if state.namespace is None:
                # A bound file's mounts resolve against the live catalog, at plan time.
                for index, mount in enumerate(mounts):
                    named = by_name.get((kind, mount.plugin), [])
                    found += _check_resolution(state, named, builtins, section, kind, index, mount)
                    found += _check_connections(by_name, builtins, section, kind, index, mount)
            problems += [replace(p, pointer=(*at, *p.pointer)) for p in found]
    return problems


def dotted(pointer: Pointer) -> str:
    text = ""
    for part in pointer:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- cross-references ---------------------------------------------------------


def _check_plugins(state: DesiredState) -> list[ReferenceProblem]:
    problems: list[ReferenceProblem] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, entry in enumerate(state.plugins):
        first = seen.setdefault(entry.key, index)
        if first != index:
            problems.append(
                ReferenceProblem(
                    ("plugins", index, "version"),
                    f"duplicate plugin {entry_name(entry)}: plugins[{first}] declares it too "
                    "(versions compare without the leading 'v')",
                    "duplicate-plugin",
                )
            )
        if is_reserved_builtin(entry.type, entry.name):
            problems.append(
                ReferenceProblem(
                    ("plugins", index, "name"),
                    f"{entry.name!r} is a reserved built-in of the server and cannot be overridden",
                    "reserved-plugin",
                )
            )
        if (
            entry.present
            and entry.managed_by == "file"
            and entry.sha256 is None
            and state.plugin_directory is None
        ):
            problems.append(
                ReferenceProblem(
                    ("plugins", index),
                    f"plugin {entry_name(entry)}: sha256 is required unless plugin_directory "
                    "is set (then it is computed from the file)",
                    "sha256-required",
                )
            )
    return problems


def entry_name(entry: PluginEntry) -> str:
    return f"{entry.type}/{entry.name}/{entry.version or '(unversioned)'}"


def _check_paths(section: str, kind: MountKind, mounts: list[Mount]) -> list[ReferenceProblem]:
    problems: list[ReferenceProblem] = []
    declared: dict[str, int] = {}
    for index, mount in enumerate(mounts):
        problems += _reserved(section, kind, index, "path", mount.path)
        first = declared.setdefault(mount.path, index)
        if first != index:
            problems.append(
                ReferenceProblem(
                    (section, index, "path"),
                    f"duplicate {section} path {mount.path!r}: {section}[{first}] declares it too",
                    "duplicate-path",
                )
            )
    for index, mount in enumerate(mounts):
        for other_path in _parents(mount.path):
            other = declared.get(other_path)
            if other is None:
                continue
            # Reported at whichever of the two comes later in the file.
            later, earlier = (index, other) if index > other else (other, index)
            problems.append(
                ReferenceProblem(
                    (section, later, "path"),
                    f"{section} path {mount.path!r} is nested inside {other_path!r} "
                    f"({section}[{earlier}] and [{later}]): the server refuses mounts inside "
                    "mounts",
                    "nested-path",
                )
            )
    moved: dict[str, int] = {}
    for index, mount in enumerate(mounts):
        if mount.moved_from is None:
            continue
        pointer: Pointer = (section, index, "moved_from")
        problems += _reserved(section, kind, index, "moved_from", mount.moved_from)
        if mount.moved_from == mount.path:
            problems.append(
                ReferenceProblem(pointer, "moved_from is the mount's own path", "moved-from")
            )
        elif mount.moved_from in declared:
            problems.append(
                ReferenceProblem(
                    pointer,
                    f"moved_from {mount.moved_from!r} is declared as a mount path "
                    f"({section}[{declared[mount.moved_from]}]): a path cannot be moved away "
                    "and kept",
                    "moved-from",
                )
            )
        first = moved.setdefault(mount.moved_from, index)
        if first != index:
            problems.append(
                ReferenceProblem(
                    pointer,
                    f"moved_from {mount.moved_from!r} is also the moved_from of "
                    f"{section}[{first}]: one mount can move to one place",
                    "moved-from",
                )
            )
    return problems


def _check_config_kind(
    section: str, kind: MountKind, mounts: list[Mount]
) -> list[ReferenceProblem]:
    """Tunables the server takes on auth methods only, refused where it would drop them."""
    if kind == "auth":
        return []
    return [
        ReferenceProblem(
            (section, index, "config", key),
            f"{key} applies to auth methods only: the server drops it when enabling a "
            "secrets engine and refuses it in a tune; remove it",
            "auth-only",
        )
        for index, mount in enumerate(mounts)
        if mount.config is not None
        for key in sorted(AUTH_ONLY_CONFIG_KEYS)
        if getattr(mount.config, key) is not None
    ]


def _parents(path: str) -> Iterator[str]:
    """`a/b/c/` → `a/`, `a/b/`."""
    position = path.find("/")
    while 0 <= position < len(path) - 1:
        yield path[: position + 1]
        position = path.find("/", position + 1)


def _reserved(
    section: str, kind: MountKind, index: int, key: str, path: str
) -> list[ReferenceProblem]:
    for prefix in _PROTECTED_PREFIXES[kind]:
        if path.startswith(prefix):
            shown = f"auth/{path}" if kind == "auth" else path
            what = "reserved" if path == prefix else f"inside the reserved {prefix!r}"
            return [
                ReferenceProblem(
                    (section, index, key),
                    f"{section} path {shown!r} is {what}: the server owns it and refuses to "
                    "mount there",
                    "reserved-path",
                )
            ]
    return []


def _check_resolution(
    state: DesiredState,
    entries: list[tuple[int, PluginEntry]],
    builtins: BuiltinVersions | None,
    section: str,
    kind: MountKind,
    index: int,
    mount: Mount,
) -> list[ReferenceProblem]:
    """Version resolution (SPEC §1): pinned version, sole declared entry, or the built-in.

    `entries` are the file's entries of the mount's plugin, with their positions.
    """
    named = [entry for _, entry in entries]
    outcome = resolve_mount(kind, mount.plugin, mount.version, named, builtins or {})
    if not isinstance(outcome, Unresolved):
        return []
    if builtins is None and outcome.depends_on_builtins:
        return []
    name, version = mount.plugin, mount.version
    at_plugin: Pointer = (section, index, "plugin")
    at_version: Pointer = (section, index, "version")
    noun = _KIND_NOUN[kind]
    match outcome:
        case Unresolved.RESERVED:
            return [
                ReferenceProblem(
                    at_plugin,
                    f"{name!r} is mounted by the server itself and cannot be mounted again",
                    "reserved-plugin",
                )
            ]
        case Unresolved.NOT_A_BUILTIN:
            return [
                ReferenceProblem(
                    at_version,
                    f"version {version} pins a built-in, but {name!r} is not a built-in {noun}",
                    "unknown-version",
                )
            ]
        case Unresolved.ABSENT_VERSION:
            number = next(i for i, e in entries if e.version == version)
            return [
                ReferenceProblem(
                    at_version,
                    f"{kind}/{name}/{version} is declared with state: absent "
                    f"(plugins[{number}]): a mount cannot use an entry being removed",
                    "absent",
                )
            ]
        case Unresolved.UNKNOWN_VERSION:
            declared = ", ".join(_shown(e.version) for _, e in entries)
            return [
                ReferenceProblem(
                    at_version,
                    f"no {kind} plugin {name!r} with version {_shown(version or '')} is declared"
                    + (f" (declared: {declared})" if declared else ""),
                    "unknown-version",
                )
            ]
        case Unresolved.AMBIGUOUS:
            versions = ", ".join(_shown(e.version) for _, e in entries if e.present)
            return [
                ReferenceProblem(
                    at_plugin,
                    f"ambiguous: pin a version ({kind} plugin {name!r} is declared as {versions})",
                    "ambiguous",
                )
            ]
        case Unresolved.ONLY_ABSENT:
            return [
                ReferenceProblem(
                    at_plugin,
                    f"{kind} plugin {name!r} is declared only with state: absent "
                    f"(plugins[{entries[0][0]}]) and is not a built-in",
                    "absent",
                )
            ]
    hint = ""
    if (kind, name) in BUILTIN_ALIASES:
        hint = f" (the server stores it under another name: write {BUILTIN_ALIASES[kind, name]})"
    else:
        other = sorted({e.type for e in state.plugins if e.name == name})
        if other:
            hint = f" (plugins declares it with type: {', '.join(other)})"
        elif (last := last_release_shipping((kind, name))) is not None:
            hint = (
                f" (a built-in of OpenBao {last}, no longer shipped: declare an external "
                f"{kind} plugin named {name} to replace it)"
            )
    return [
        ReferenceProblem(
            at_plugin,
            f"plugin {name!r} is neither declared in plugins (type: {kind}) nor a built-in "
            f"{noun}{hint}",
            "undeclared",
        )
    ]


def _check_connections(
    by_name: dict[tuple[str, str], list[tuple[int, PluginEntry]]],
    builtins: BuiltinVersions | None,
    section: str,
    kind: MountKind,
    index: int,
    mount: Mount,
) -> list[ReferenceProblem]:
    """Connections (SPEC §10): only on database mounts, unique names, a database plugin each."""
    if mount.connections is None:
        return []
    if kind != "secret" or mount.plugin != DATABASE_ENGINE:
        return [
            ReferenceProblem(
                (section, index, "connections"),
                f"connections belong only to mounts of the {DATABASE_ENGINE!r} secrets engine "
                f"({section} path {mount.path!r} runs {mount.plugin!r})",
                "connections-not-database",
            )
        ]
    problems: list[ReferenceProblem] = []
    seen: dict[str, int] = {}
    for number, connection in enumerate(mount.connections):
        at: Pointer = (section, index, "connections", number)
        first = seen.setdefault(connection.name, number)
        if first != number:
            problems.append(
                ReferenceProblem(
                    (*at, "name"),
                    f"duplicate connection {connection.name!r} on {mount.path!r}: "
                    f"connections[{first}] declares it too",
                    "duplicate-connection",
                )
            )
        entries = by_name.get(("database", connection.plugin), [])
        outcome = resolve_connection(
            connection.plugin, connection.version, [e for _, e in entries], builtins or {}
        )
        if not isinstance(outcome, Unresolved):
            continue
        if builtins is None and outcome.depends_on_builtins:
            continue
        problems.append(
            _unresolved_connection(at, connection.plugin, connection.version, entries, outcome)
        )
    return problems


def _unresolved_connection(
    at: Pointer,
    plugin: str,
    version: str | None,
    entries: list[tuple[int, PluginEntry]],
    outcome: Unresolved,
) -> ReferenceProblem:
    declared = ", ".join(_shown(e.version) for _, e in entries if e.present)
    match outcome:
        case Unresolved.ABSENT_VERSION | Unresolved.UNKNOWN_VERSION:
            why = (
                "is declared with state: absent: a connection cannot use an entry being removed"
                if outcome is Unresolved.ABSENT_VERSION
                else "is not declared" + (f" (declared: {declared})" if declared else "")
            )
            return ReferenceProblem(
                (*at, "version"),
                f"database plugin {plugin!r} version {_shown(version or '')} {why}",
                "connection-" + outcome.value,
            )
        case Unresolved.AMBIGUOUS:
            message = (
                f"ambiguous: pin a version (database plugin {plugin!r} is declared as {declared})"
            )
        case Unresolved.ONLY_ABSENT:
            message = (
                f"database plugin {plugin!r} is declared only with state: absent and is not "
                "a built-in"
            )
        case _:
            message = (
                f"plugin {plugin!r} is neither declared in plugins (type: database) nor a "
                "built-in database plugin"
            )
    return ReferenceProblem((*at, "plugin"), message, "connection-" + outcome.value)


def _shown(version: str) -> str:
    return version or '""'
