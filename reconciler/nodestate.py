"""What every node runs for every mount, and what every connection names (reads only).

Per node and mount: the catalog entry as that node sees it (a catalog read of a
registered version on one node checks that node's file: 500 when it is missing),
what the node's mount table says runs (`running_plugin_version`/`running_sha256`)
and whether a request through the mount reaches a backend on that node. A failed
reload leaves `running_*` naming what ran before, so only the probe tells a dead
mount from a live one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reconciler import defaults
from reconciler.client import Client
from reconciler.documents import (
    CatalogSeen,
    ConnectionStatusDocument,
    MountStatusDocument,
    NodeMountStatus,
    Running,
    StatusDocument,
    StatusNode,
)
from reconciler.errors import ApiError, PluginFileMissing
from reconciler.model import LiveMount, LiveState, MountKind
from reconciler.nodes import Node, on_node
from reconciler.resolver import CatalogKey, is_builtin_version, namespace_path, runs_external
from reconciler.state import MAX_CONCURRENT_READS
from reconciler.usage import ServerUsage

# A mount wherever it lives: (namespace as a path from the root, kind, path).
MountKey = tuple[str, MountKind, str]


def mount_key(mount: LiveMount) -> MountKey:
    return (mount.namespace, mount.kind, mount.path)


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


def read_node_mounts(
    client: Client, node: Node, mounts: Sequence[LiveMount]
) -> dict[MountKey, NodeMount]:
    """`mounts` (of any namespaces) as `node` has them, each probed there."""
    every = {mount_key(m) for m in mounts}
    return on_node(client, node, lambda pinned: _read_pinned(pinned, node, mounts, every))


# How often a node is read again while it has not caught up.
_NODE_POLL = 0.1


class DeadOnNode:
    """Tells when waiting for a node is pointless: every mount still wrong there has not
    answered for `NODE_DEAD_WAIT` s in a row (its plugin failed to start on that node)."""

    def __init__(self, dead_wait: float = defaults.NODE_DEAD_WAIT) -> None:
        self._dead_wait = dead_wait
        self._since: dict[MountKey, float] = {}

    def all_dead(self, wrong: Collection[MountKey], not_answering: Collection[MountKey]) -> bool:
        now = time.monotonic()
        for key in list(self._since):
            if key not in not_answering:
                del self._since[key]
        for key in not_answering:
            self._since.setdefault(key, now)
        return bool(wrong) and all(
            key in self._since and now - self._since[key] >= self._dead_wait for key in wrong
        )


def wait_on_node(
    client: Client,
    node: Node,
    mounts: Sequence[LiveMount],
    wrong_in: Callable[[Mapping[MountKey, NodeMount]], dict[MountKey, str]],
    wait: float,
) -> tuple[dict[MountKey, NodeMount], dict[MountKey, str]]:
    """`mounts` as `node` has them and what `wrong_in` finds wrong there, read again until
    nothing is, `wait` s are over, or every mount still wrong has stopped answering."""
    deadline = time.monotonic() + wait
    dead = DeadOnNode()
    while True:
        seen = read_node_mounts(client, node, mounts)
        wrong = wrong_in(seen)
        silent = [key for key in wrong if not seen[key].answers]
        if not wrong or time.monotonic() >= deadline or dead.all_dead(wrong, silent):
            return seen, wrong
        time.sleep(_NODE_POLL)


def _read_pinned(
    pinned: Client, node: Node, mounts: Sequence[LiveMount], to_probe: set[MountKey]
) -> dict[MountKey, NodeMount]:
    tables_wanted = sorted({(m.namespace, m.kind) for m in mounts})
    keys = sorted({(m.kind, m.plugin, m.plugin_version) for m in mounts if runs_external(m)})
    with ThreadPoolExecutor(MAX_CONCURRENT_READS, thread_name_prefix="reconciler-node") as pool:
        table_reads = pool.map(lambda t: pinned.list_mounts(t[1], t[0]), tables_wanted)
        tables = dict(zip(tables_wanted, table_reads, strict=True))
        catalogs = pool.map(lambda key: _catalog(pinned, *key), keys)
        catalog = dict(zip(keys, catalogs, strict=True))
        probe_keys = sorted(to_probe)
        probes = pool.map(lambda key: probe_error(pinned, *key), probe_keys)
        probed = dict(zip(probe_keys, probes, strict=True))
    seen: dict[MountKey, NodeMount] = {}
    for mount in mounts:
        raw = tables.get((mount.namespace, mount.kind), {}).get(mount.path, {})
        pinned_key = (mount.kind, mount.plugin, mount.plugin_version)
        sha256, catalog_error = catalog.get(pinned_key, ("", ""))
        error = probed.get(mount_key(mount), "")
        seen[mount_key(mount)] = NodeMount(
            node=node.address,
            active=node.active,
            catalog_version=mount.plugin_version,
            catalog_sha256=sha256,
            catalog_error=catalog_error,
            running_version=str(raw.get("running_plugin_version") or ""),
            running_sha256=str(raw.get("running_sha256") or "").lower(),
            answers=bool(raw) and not error,
            error=error if raw else _not_in_table(mount, tables.get((mount.namespace, mount.kind))),
        )
    return seen


def _not_in_table(mount: LiveMount, table: Mapping[str, Mapping[str, object]] | None) -> str:
    """Why a node lacks the mount: not there yet, or still at the path it was moved from."""
    old = next(
        (
            path
            for path, raw in (table or {}).items()
            if mount.accessor and raw.get("accessor") == mount.accessor
        ),
        None,
    )
    if old is None:
        return "not in this node's mount table"
    return (
        f"not in this node's mount table, which still has it at {old}: a move this node "
        "did not follow (OpenBao standbys take one only once unsealed again or restarted: "
        "seal and unseal it, or restart it)"
    )


def read_status(client: Client, nodes: Sequence[Node], live: LiveState) -> StatusDocument:
    """Every namespace at or below the client's: every mount that runs an external plugin
    or does not answer (built-ins included), on every node, and every connection."""
    home = namespace_path(client.namespace)
    mounts = sorted(
        (
            m
            for m in (*live.mounts, *live.elsewhere)
            if not m.reserved and m.namespace.startswith(home)
        ),
        key=lambda m: (m.namespace, m.kind, m.path),
    )
    every = {(m.namespace, m.kind, m.path) for m in mounts}

    per_node = [
        on_node(
            client, node, functools.partial(_read_pinned, node=node, mounts=mounts, to_probe=every)
        )
        for node in nodes
    ]
    listed = {e.key: e for e in live.catalog if not e.builtin}
    # The one rule for a pin the catalog lacks: the server picture's.
    missing_pins = {
        (user.namespace, user.table, user.path): key
        for user, key in ServerUsage.of(live).pinned_to_missing()
        if user.kind == "mount"
    }
    unreadable: set[str] = set()
    shown: list[MountStatusDocument] = []
    for mount in mounts:
        seen_nodes = []
        for found in per_node:
            seen = found[(mount.namespace, mount.kind, mount.path)]
            catalog_sha256 = seen.catalog_sha256
            entry = listed.get((mount.kind, mount.plugin, mount.plugin_version))
            if seen.catalog_error.startswith(_NOT_PERMITTED) and entry is not None:
                # The list, which this token may read, holds the entry: it is not missing.
                unreadable.add(
                    "single catalog entries (sys/plugins/catalog/<type>/<name>, at the root): "
                    "whether each node has a plugin's file was not checked"
                )
                catalog_sha256 = entry.sha256
            seen_nodes.append(
                NodeMountStatus(
                    node=seen.node,
                    active=seen.active,
                    catalog=CatalogSeen(
                        version=seen.catalog_version,
                        sha256=catalog_sha256,
                        error=seen.catalog_error,
                    ),
                    running=Running(version=seen.running_version, sha256=seen.running_sha256),
                    answers=seen.answers,
                    error=seen.error,
                    problems=_node_problems(mount, seen, catalog_sha256)
                    + _missing_pin(missing_pins.get(mount_key(mount))),
                )
            )
        external = runs_external(mount)
        if external or any(not n.answers or n.problems for n in seen_nodes):
            shown.append(
                MountStatusDocument(
                    namespace=mount.namespace,
                    kind=mount.kind,
                    path=mount.path,
                    plugin=mount.plugin,
                    version=mount.plugin_version,
                    builtin=not external,
                    nodes=seen_nodes,
                )
            )
    connections = _connection_statuses(live, home)
    healthy = all(n.answers and not n.problems for m in shown for n in m.nodes) and not any(
        c.problems for c in connections
    )
    return StatusDocument(
        server=client.address,
        namespace=home,
        namespaces=sorted({home, *(n for n in live.namespaces if n.startswith(home))}),
        nodes=[StatusNode(address=n.address, active=n.active) for n in nodes],
        mounts=shown,
        connections=connections,
        healthy=healthy,
        unreadable=sorted(unreadable),
    )


# How `_catalog` marks a 403: the token may not read the entry, which says nothing of it.
_NOT_PERMITTED = "not permitted"


def _node_problems(mount: LiveMount, seen: NodeMount, catalog_sha256: str) -> list[str]:
    """What a node runs that the mount's pin and the catalog do not say, and a file the
    node lacks (the mount answers until its next reload there, which fails)."""
    if not seen.answers or not runs_external(mount):
        return []
    if seen.catalog_error.startswith(FILE_MISSING):
        return [
            "its plugin file is missing on this node: the next reload or restart leaves it "
            "without a backend; copy the file into the node's plugin directory"
        ]
    pin = mount.plugin_version
    if pin and not is_builtin_version(pin) and seen.running_version != pin:
        return [
            f"pinned to {pin} but runs {seen.running_version or '(unversioned)'}: reload it "
            "(sys/plugins/reload/backend) to run its pin, or tune it back to what it runs"
        ]
    if catalog_sha256 and seen.running_sha256 and seen.running_sha256 != catalog_sha256:
        return [
            f"runs sha256 {seen.running_sha256[:12]}…, the catalog holds "
            f"{catalog_sha256[:12]}… for its version: reload it to run the catalog's binary"
        ]
    return []


def _missing_pin(key: CatalogKey | None) -> list[str]:
    """A mount pinned to an external version the catalog lacks (a removed stanza, a
    deregistration by hand): it answers until its next reload, which fails."""
    if key is None:
        return []
    return [
        f"pinned to {'/'.join(key)}, which is not in the catalog: its next "
        "reload fails and leaves it without a backend; pin it to a version the catalog "
        "holds or register this one again"
    ]


def _connection_statuses(live: LiveState, home: str) -> list[ConnectionStatusDocument]:
    usage = ServerUsage.of(live)
    shas = live.external_sha256()
    statuses = []
    for user in usage.connections():
        if not user.namespace.startswith(home):
            continue
        runs = user.runs(usage.external, usage.builtins)
        problems = []
        if runs is None:
            running = ""
            missing = "/".join((user.plugin_type, user.plugin, user.pin or '""'))
            problems.append(
                f"pinned to {missing}, which is not in the catalog: its next reset fails "
                "and leaves it without a backend; re-pin it or register that version again"
            )
        elif runs.builtin:
            running = "built-in"
        else:
            running = "/".join(runs.key or ())
        statuses.append(
            ConnectionStatusDocument(
                namespace=user.namespace,
                mount=user.path,
                name=user.connection,
                plugin=user.plugin,
                version=user.pin,
                runs=running,
                sha256="" if runs is None or runs.key is None else shas.get(runs.key, ""),
                problems=problems,
            )
        )
    return statuses


def _catalog(client: Client, kind: MountKind, name: str, version: str) -> tuple[str, str]:
    try:
        entry = client.read_plugin(kind, name, version)
    except PluginFileMissing as error:
        return "", f"{FILE_MISSING}: {error}"
    except ApiError as error:
        if error.status == 403:
            return "", f"{_NOT_PERMITTED}: {error}"
        return "", str(error)
    return str(entry.get("sha256") or "").lower(), ""


# How a node's catalog error starts when that node lacks the entry's file.
FILE_MISSING = "file missing"


def probe_error(client: Client, namespace: str, kind: MountKind, path: str) -> str:
    """Why a request through the mount reaches no working backend ("" when it does)."""
    try:
        client.probe_mount(kind, path, namespace)
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
