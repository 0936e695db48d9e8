"""Write a live state as a desired-state file (format version 1).

The file validates and plans empty against the server it was read from: it
lists every external catalog entry and every mount that is not reserved, with
only the values a plan compares and that differ from the server's defaults.
An entry a `plugin` stanza of the server's configuration owns is written as a
`managed_by: server` reference (type, name, version, sha256), so that the
mounts pinned to it stay valid and no plan writes it. A mount's `version` is
written when the mount is pinned, and for an unpinned mount only where leaving
it out would resolve to something other than what the mount runs (SPEC §1,
version resolution). A database mount lists its
connections with their plugin and pin only: their connection details are
never read into the live state, so they cannot reach the file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.durations import duration_text
from reconciler.model import (
    CONFIG_DEFAULTS,
    DATABASE_ENGINE,
    CatalogEntry,
    LiveConnection,
    LiveMount,
    LiveState,
    Mount,
    PluginEntry,
)
from reconciler.resolver import (
    HARD_WIRED_BUILTINS,
    effective_entry,
    live_builtins,
    namespace_path,
    pins_builtin,
)

_DURATION_KEYS = frozenset({"default_lease_ttl", "max_lease_ttl"})


def export_desired(live: LiveState) -> str:
    """The YAML text of a desired-state file equal to `live`.

    Read at the root: the whole server, the catalog and every namespace's mounts. Read
    in a namespace: a file bound to it (`namespace:`), its mounts and those of the
    namespaces below it, and no catalog entry (the catalog is the root file's).
    """
    home = namespace_path(live.server.namespace)
    skipped: list[str] = []
    plugins = CommentedSeq()
    exported_keys: set[tuple[str, str, str]] = set()
    if home:
        # A bound file declares no entry: its mounts resolve against the live catalog,
        # whose list a token scoped to the namespace may read (without command or args).
        exported_keys = {entry.key for entry in live.catalog if not entry.builtin}
    for entry in sorted(live.catalog, key=lambda e: e.key):
        if entry.builtin or home:
            continue
        if (entry.type, entry.name) in HARD_WIRED_BUILTINS:
            # Registered, but never run: the plan refuses to declare it (it stays unmanaged).
            skipped.append(
                f"plugin {'/'.join(entry.key)}: the built-in {entry.name!r} is hard-wired, "
                "so this entry never runs and cannot be declared"
            )
            continue
        item = _plugin(entry)
        try:
            PluginEntry.model_validate(dict(item))
        except ValidationError as error:
            skipped.append(f"plugin {'/'.join(entry.key)}: {_first_error(error)}")
            continue
        plugins.append(item)
        exported_keys.add(entry.key)

    document = CommentedMap()
    document["version"] = 1
    if home:
        # Bound to its namespace: mounts name the live catalog's entries, written elsewhere.
        document["namespace"] = home
    elif plugins:
        document["plugins"] = plugins
    _mount_sections(document, live.mounts, live, exported_keys, skipped, "")
    below = sorted(n for n in live.namespaces if n != home and n.startswith(home))
    if below:
        by_namespace: dict[str, list[LiveMount]] = {}
        for mount in live.elsewhere:
            by_namespace.setdefault(mount.namespace, []).append(mount)
        tree = CommentedMap()
        for namespace in below:
            node = tree
            *parents, name = namespace[len(home) :].rstrip("/").split("/")
            for parent in parents:
                node = node.setdefault(parent + "/", CommentedMap()).setdefault(
                    "namespaces", CommentedMap()
                )
            declared = node.setdefault(name + "/", CommentedMap())
            _mount_sections(
                declared,
                by_namespace.get(namespace, []),
                live,
                exported_keys,
                skipped,
                f"namespace {namespace}: ",
            )
        document["namespaces"] = tree
    document.yaml_set_start_comment(_header(live, skipped, unmanaged_settings(live)))
    return _dump(document)


def _mount_sections(
    into: CommentedMap,
    mounts: list[LiveMount],
    live: LiveState,
    exported_keys: set[tuple[str, str, str]],
    skipped: list[str],
    where: str,
) -> None:
    """`secrets:` and `auth:` of one namespace's mounts, into `into`."""
    sections: dict[str, CommentedSeq] = {"secret": CommentedSeq(), "auth": CommentedSeq()}
    for mount in sorted(mounts, key=lambda m: (m.kind, m.path)):
        if mount.reserved:
            continue
        item, problem = _mount(mount, live, exported_keys, skipped)
        if problem is None:
            try:
                Mount.model_validate(dict(item))
            except ValidationError as error:
                problem = _first_error(error)
        if problem is not None:
            skipped.append(f"{where}{_section(mount)}/{mount.path}: {problem}")
            continue
        sections[mount.kind].append(item)
    if sections["secret"]:
        into["secrets"] = sections["secret"]
    if sections["auth"]:
        into["auth"] = sections["auth"]


def unmanaged_settings(live: LiveState) -> list[str]:
    """Live mount settings a desired-state file cannot express, one line each; an export
    names them (in its header) so that adopting a server never loses one unseen."""
    return [
        f"{_where(mount)}{_section(mount)}/{mount.path}: {key} = "
        f"{json.dumps(value, sort_keys=True)}"
        for mount in sorted(
            [*live.mounts, *live.elsewhere], key=lambda m: (m.namespace, m.kind, m.path)
        )
        if not mount.reserved
        for key, value in sorted(mount.unmanaged_config.items())
    ]


def _where(mount: LiveMount) -> str:
    return f"namespace {mount.namespace}: " if mount.namespace else ""


def _header(live: LiveState, skipped: list[str], unmanaged: list[str]) -> str:
    where = live.server.address or "the server"
    if live.server.namespace:
        where += f" (namespace {live.server.namespace})"
    lines = [f"Desired state exported from {where} by `reconciler export`."]
    if live.server.namespace:
        lines += [
            "Bound to this namespace: its mounts name the catalog's entries, which the",
            "root's file declares (the one catalog serves every namespace).",
        ]
    else:
        lines += [
            "The `env` of plugin entries cannot be exported: the server never returns it",
            "(it is write-only). Add `env:` by hand to the entries that need it.",
        ]
    if any(entry.declarative for entry in live.catalog):
        lines.append("Entries with `managed_by: server` are owned by `plugin` stanzas of the")
        lines.append("server configuration: plans check them, never write them; change the")
        lines.append("stanza (and send SIGHUP) to change one.")
    if skipped:
        lines.append("Not exported, because a desired-state file cannot express it:")
        lines.extend(f"  {line}" for line in skipped)
    if unmanaged:
        lines.append("Not managed by reconciler, kept as they are on the server (plan and")
        lines.append("apply never change them; set them with `bao auth tune` or the API):")
        lines.extend(f"  {line}" for line in unmanaged)
    return "\n".join(lines)


def _plugin(entry: CatalogEntry) -> CommentedMap:
    item = CommentedMap()
    item["type"] = entry.type
    item["name"] = entry.name
    item["version"] = entry.version
    if entry.declarative:
        # A reference, never an owned entry: a register over it would fight the stanza.
        item["managed_by"] = "server"
        item["sha256"] = entry.sha256
        return item
    item["command"] = entry.command
    item["sha256"] = entry.sha256
    if entry.args:
        item["args"] = list(entry.args)
    return item


def _mount(
    mount: LiveMount, live: LiveState, exported: set[tuple[str, str, str]], skipped: list[str]
) -> tuple[CommentedMap, str | None]:
    item = CommentedMap()
    item["path"] = mount.path
    item["plugin"] = mount.plugin
    version, problem = _version(mount, live, exported)
    if version is not None:
        item["version"] = version
    if mount.description:
        item["description"] = mount.description
    config = _config(mount.config)
    if config:
        item["config"] = config
    if mount.options:
        item["options"] = CommentedMap(sorted(mount.options.items()))
    if mount.local:
        item["local"] = True
    if mount.seal_wrap:
        item["seal_wrap"] = True
    if mount.kind == "secret" and mount.plugin == DATABASE_ENGINE:
        connections = CommentedSeq()
        for connection in sorted(live.connections, key=lambda c: c.name):
            if (connection.namespace, connection.mount) != (mount.namespace, mount.path):
                continue
            versions = {v for (t, n, v) in exported if (t, n) == ("database", connection.plugin)}
            if connection.plugin_version and connection.plugin_version not in versions:
                skipped.append(
                    f"secrets/{mount.path}connections/{connection.name}: pinned to "
                    f"{connection.plugin}/{connection.plugin_version}, which is not in the "
                    "catalog (left unmanaged)"
                )
                continue
            connections.append(_connection(connection, versions))
        if connections:
            item["connections"] = connections
    return item, problem


def _connection(connection: LiveConnection, versions: set[str]) -> CommentedMap:
    """Name, plugin and the pin; unpinned, `version` only where leaving it out would differ."""
    item = CommentedMap()
    item["name"] = connection.name
    item["plugin"] = connection.plugin
    if connection.plugin_version:
        item["version"] = connection.plugin_version
    elif "" in versions and versions != {""}:
        # Unpinned on the unversioned entry, next to versioned ones: say so.
        item["version"] = ""
    return item


def _version(
    mount: LiveMount, live: LiveState, exported: set[tuple[str, str, str]]
) -> tuple[str | None, str | None]:
    """The `version` to write (None: leave it out), or why the mount cannot be written."""
    versions = {v for (t, n, v) in exported if (t, n) == (mount.kind, mount.plugin)}
    builtins = live_builtins(live.catalog)
    builtin = builtins.get((mount.kind, mount.plugin))
    if mount.plugin_version:
        if pins_builtin(mount.plugin_version, builtin):
            return mount.plugin_version, None
        if mount.plugin_version not in versions:
            return None, (
                f"pinned to {mount.plugin}/{mount.plugin_version}, which is not in the catalog "
                "(the mount has no working backend until it is registered again)"
            )
        return mount.plugin_version, None
    runs = effective_entry(mount.kind, mount.plugin, "", exported, builtins)
    if runs is not None and not runs.builtin:
        # Unpinned, it runs the unversioned entry that shadows the built-in.
        return (None if versions == {""} else ""), None
    # Unpinned, it runs the built-in: a file naming external versions must say so.
    if versions and builtin:
        return builtin, None
    return None, None


def _config(config: Mapping[str, Any]) -> CommentedMap:
    written = CommentedMap()
    for key in sorted(config):
        value = config[key]
        if key not in CONFIG_DEFAULTS or value == CONFIG_DEFAULTS[key]:
            continue
        if key in _DURATION_KEYS:
            written[key] = duration_text(int(value))
        elif isinstance(value, list):
            written[key] = list(value)
        else:
            written[key] = value
    return written


def _section(mount: LiveMount) -> str:
    return "auth" if mount.kind == "auth" else "secrets"


def _first_error(error: ValidationError) -> str:
    detail = error.errors()[0]
    where = ".".join(str(part) for part in detail["loc"])
    return f"{where}: {detail['msg']}" if where else str(detail["msg"])


def _dump(document: CommentedMap) -> str:
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    stream = io.StringIO()
    yaml.dump(document, stream)
    return stream.getvalue()
