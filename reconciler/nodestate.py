"""What every node runs for every mount on an external plugin (reads only).

Per node and mount: the catalog entry as that node sees it (a catalog read of a
registered version on one node checks that node's file: 500 when it is missing),
what the node's mount table says runs (`running_plugin_version`/`running_sha256`)
and whether a request through the mount reaches a backend on that node. A failed
reload leaves `running_*` naming what ran before, so only the probe tells a dead
mount from a live one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from reconciler.client import Client
from reconciler.errors import ApiError
from reconciler.model import LiveMount, LiveState, MountKind
from reconciler.nodes import Node, on_node
from reconciler.state import MAX_CONCURRENT_READS

MountKey = tuple[MountKind, str]


@dataclass(frozen=True)
class NodeMount:
    """One mount as one node has it."""

    node: str
    active: bool
    catalog_version: str
    catalog_sha256: str  # "" when the node cannot read the entry (catalog_error says why)
    catalog_error: str
    running_version: str
    running_sha256: str
    answers: bool
    error: str  # why the mount does not answer on this node ("" when it does)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "active": self.active,
            "catalog": {
                "version": self.catalog_version,
                "sha256": self.catalog_sha256,
                "error": self.catalog_error,
            },
            "running": {"version": self.running_version, "sha256": self.running_sha256},
            "answers": self.answers,
            "error": self.error,
        }


@dataclass(frozen=True)
class MountStatus:
    """One mount on an external plugin, on every node."""

    kind: MountKind
    path: str
    plugin: str
    version: str
    nodes: tuple[NodeMount, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "plugin": self.plugin,
            "version": self.version,
            "nodes": [node.to_dict() for node in self.nodes],
        }


def external_mounts(live: LiveState) -> list[LiveMount]:
    """Mounts that run (or are pinned to) an external catalog entry."""
    external = {(e.type, e.name, e.version) for e in live.catalog if not e.builtin}
    return [
        m
        for m in live.mounts
        if m.running_sha256 or (m.kind, m.plugin, m.plugin_version) in external
    ]


def read_node_mounts(
    client: Client,
    node: Node,
    mounts: Sequence[LiveMount],
    *,
    probe: Iterable[MountKey] | None = None,
) -> dict[MountKey, NodeMount]:
    """`mounts` as `node` has them; only the mounts in `probe` are probed (default: all)."""
    to_probe = set((m.kind, m.path) for m in mounts) if probe is None else set(probe)
    return on_node(client, node, lambda pinned: _read_pinned(pinned, node, mounts, to_probe))


def _read_pinned(
    pinned: Client, node: Node, mounts: Sequence[LiveMount], to_probe: set[MountKey]
) -> dict[MountKey, NodeMount]:
    tables = {kind: pinned.list_mounts(kind) for kind in sorted({m.kind for m in mounts})}
    keys = sorted({(m.kind, m.plugin, m.plugin_version) for m in mounts})
    with ThreadPoolExecutor(MAX_CONCURRENT_READS, thread_name_prefix="reconciler-node") as pool:
        catalogs = pool.map(lambda key: _catalog(pinned, *key), keys)
        catalog = dict(zip(keys, catalogs, strict=True))
        probe_keys = sorted(to_probe)
        probes = pool.map(lambda key: _probe(pinned, *key), probe_keys)
        probed = dict(zip(probe_keys, probes, strict=True))
    seen: dict[MountKey, NodeMount] = {}
    for mount in mounts:
        raw = tables.get(mount.kind, {}).get(mount.path, {})
        sha256, catalog_error = catalog[(mount.kind, mount.plugin, mount.plugin_version)]
        error = probed.get((mount.kind, mount.path), "")
        seen[(mount.kind, mount.path)] = NodeMount(
            node=node.address,
            active=node.active,
            catalog_version=mount.plugin_version,
            catalog_sha256=sha256,
            catalog_error=catalog_error,
            running_version=str(raw.get("running_plugin_version") or ""),
            running_sha256=str(raw.get("running_sha256") or "").lower(),
            answers=bool(raw) and not error,
            error=error if raw else "not in this node's mount table",
        )
    return seen


def read_status(client: Client, nodes: Sequence[Node], live: LiveState) -> list[MountStatus]:
    """Every mount on an external plugin, on every node."""
    mounts = external_mounts(live)
    per_node = [read_node_mounts(client, node, mounts) for node in nodes]
    return [
        MountStatus(
            kind=m.kind,
            path=m.path,
            plugin=m.plugin,
            version=m.plugin_version,
            nodes=tuple(seen[(m.kind, m.path)] for seen in per_node),
        )
        for m in mounts
    ]


def _catalog(client: Client, kind: MountKind, name: str, version: str) -> tuple[str, str]:
    try:
        entry = client.read_plugin(kind, name, version)
    except ApiError as error:
        return "", str(error)
    return str(entry.get("sha256") or "").lower(), ""


def _probe(client: Client, kind: MountKind, path: str) -> str:
    try:
        client.probe_mount(kind, path)
    except ApiError as error:
        return str(error)
    return ""


def node_has_entry(client: Client, node: Node, kind: str, name: str, version: str) -> str:
    """ "" when `node` has the registered entry's file; else why not.

    A standby answers 404 for a version registered a moment ago: that is lag, so
    the caller waits; any other error (500 `lstat` …) is the node's own answer.
    """
    with client.on_node(node.address) as pinned:
        try:
            pinned.read_plugin(kind, name, version)
        except ApiError as error:
            # 404: not replicated yet; 307: the standby is not ready for reads yet.
            if error.status in (404, 307, 308):
                return LAGGING
            return str(error)
    return ""


# What node_has_entry answers while the node has not seen the entry yet.
LAGGING = "the node has not seen the entry yet (404)"


def runs_expected(seen: NodeMount, version: str, sha256: str) -> str:
    """ "" when the node runs `version`/`sha256` for the mount and it answers; else what differs."""
    if not seen.answers:
        return f"does not answer ({seen.error})"
    if (seen.running_version, seen.running_sha256) != (version, sha256):
        running = seen.running_version or "(unversioned)"
        return (
            f"runs {running} sha256 {seen.running_sha256[:12]}…, "
            f"expected {version} sha256 {sha256[:12]}…"
        )
    return ""
