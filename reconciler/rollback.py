"""Rollback of a failed upgrade: every mount back on what it ran, on every node.

A small interface, kept apart from the executor's run loop:

- `what_ran(before, failed)`: what each mount of the failed upgrades ran before the
  apply, from the live state read before the first write (the active node's
  `running_*`, and on a cluster each node's own table), and so the binary to
  restore; or why it cannot be restored (its version is gone from the catalog …);
- `restore_writes(restores, pins, seen)`: what it runs now → the writes that restore
  it: a tune of each pin that is not what the mount ran, a reload of each mount that
  runs, or fails to run, anything else on some node; never a value already in place;
- `roll_back(...)`: those writes, then the reads that prove them, per node, with a
  local reload sent to a node that still fails; each mount is reported once, with
  what every node runs after the last write.

What ran is read, not remembered: a failed reload leaves `running_*` naming the old
binary, so a re-run after a crash (or a run on another machine) finds it too. A
mount that already runs the failed version everywhere the tables say (a killed run
reloaded it) is restored to what the other nodes or the other mounts of its plugin
ran, which the catalog still holds with its sha256.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler import defaults
from reconciler.client import Client
from reconciler.errors import ApiError
from reconciler.model import LiveMount, LiveState, MountKind
from reconciler.nodes import Node
from reconciler.nodestate import (
    LAGGING,
    MountKey,
    NodeMount,
    mount_key,
    node_has_entry,
    read_node_mounts,
    wait_on_node,
)
from reconciler.planner import HeldUpgrade
from reconciler.resolver import api_path, is_builtin_version, namespace_path
from reconciler.usage import mount_named_from

log = logging.getLogger(__name__)

# Sends one write (counted, and the test kill hook): the executor's.
Write = Callable[..., None]


@dataclass(frozen=True, order=True)
class Binary:
    """What a mount runs: a version and the sha256 of its binary ("" for a built-in)."""

    version: str
    sha256: str

    def __str__(self) -> str:
        if not self.sha256:
            return f"the built-in ({self.version})" if self.version else "nothing"
        return f"{self.version or '(unversioned)'} sha256 {self.sha256[:12]}…"

    def to_dict(self) -> dict[str, str]:
        return {"version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class Restore:
    """One mount of a failed upgrade: what it ran before the apply, and so its target."""

    namespace: str  # a path from the root ("" is the root)
    kind: MountKind
    path: str
    plugin: str
    target: Binary | None
    # Why it cannot be restored ("" when it can).
    why_not: str = ""
    # The client's namespace (a path from the root): mounts elsewhere are named with theirs.
    home: str = ""

    @property
    def key(self) -> MountKey:
        return (self.namespace, self.kind, self.path)

    @property
    def name(self) -> str:
        return mount_named_from(self.home, self.namespace, self.kind, self.path)


@dataclass(frozen=True)
class NodeState:
    """A mount as one node runs it, read after the rollback's last write."""

    node: str
    running: Binary
    answers: bool
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "running": self.running.to_dict(),
            "answers": self.answers,
            "error": self.error,
        }


RESTORED = "rolled back"
UNCHANGED = "unchanged"
NOT_RESTORED = "not restored"


@dataclass(frozen=True)
class MountOutcome:
    """One mount after the rollback: its state, from per-node reads after the last write."""

    mount: str
    state: str  # RESTORED (written and verified), UNCHANGED (nothing to write), NOT_RESTORED
    target: Binary | None
    nodes: tuple[NodeState, ...]
    why: str = ""

    def line(self, cluster: bool) -> str:
        where = f" on every node ({len(self.nodes)})" if cluster else ""
        if self.state == NOT_RESTORED:
            return f"{self.mount} not restored: {self.why}"
        return f"{self.mount} runs {self.target} again{where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mount": self.mount,
            "state": self.state,
            "target": None if self.target is None else self.target.to_dict(),
            "nodes": [node.to_dict() for node in self.nodes],
            "why": self.why,
        }


@dataclass(frozen=True)
class Writes:
    """The writes that restore the mounts: tunes of the pins, then one reload."""

    tunes: tuple[tuple[Restore, str], ...] = ()
    reloads: tuple[Restore, ...] = ()


# --- what ran (pure) -----------------------------------------------------------------


def what_ran(
    before: LiveState, failed: Collection[HeldUpgrade], namespaces: Collection[str]
) -> list[Restore]:
    """Each mount of the failed upgrades' plugins in `namespaces` (the ones the file
    manages, paths from the root) and its target; other namespaces are left alone.

    The target is what the mount ran before the apply. When that is a failed binary
    (a killed run reloaded it), it is what another node ran, or else what the other
    mounts of the plugin ran most.
    """
    plugins = {(kind, name) for kind, name, _version, _sha in failed}
    broken = {(kind, name, Binary(version, sha)) for kind, name, version, sha in failed}
    mounts = [
        m
        for m in (*before.mounts, *before.elsewhere)
        if (m.kind, m.plugin) in plugins and m.namespace in namespaces
    ]
    per_node: dict[MountKey, list[Binary]] = {}
    for node in before.nodes:
        for running in node.mounts:
            per_node.setdefault((running.namespace, running.kind, running.path), []).append(
                Binary(running.running_plugin_version, running.running_sha256)
            )

    def usable(mount: LiveMount, binary: Binary) -> bool:
        known = bool(binary.sha256) or is_builtin_version(binary.version)
        return known and (mount.kind, mount.plugin, binary) not in broken

    siblings: Counter[tuple[MountKind, str, Binary]] = Counter(
        (m.kind, m.plugin, _ran(m)) for m in mounts if usable(m, _ran(m))
    )
    catalog = before.external_sha256()
    home = namespace_path(before.server.namespace)
    restores = []
    for mount in mounts:
        ran = [_ran(mount), *per_node.get(mount_key(mount), [])]
        target = next((b for b in ran if usable(mount, b)), None)
        if target is None:
            known = [
                (count, binary)
                for (kind, plugin, binary), count in siblings.items()
                if (kind, plugin) == (mount.kind, mount.plugin)
            ]
            target = max(known)[1] if known else None
        restores.append(_restorable(mount, target, catalog, home=home))
    return restores


def _ran(mount: LiveMount) -> Binary:
    return Binary(mount.running_plugin_version, mount.running_sha256)


def _restorable(
    mount: LiveMount,
    target: Binary | None,
    catalog: Mapping[tuple[str, str, str], str],
    *,
    home: str,
) -> Restore:
    def cannot(why: str) -> Restore:
        return Restore(mount.namespace, mount.kind, mount.path, mount.plugin, target, why, home)

    if target is None:
        return cannot(
            "it ran the failed version before this apply, and no node nor other mount "
            "of its plugin shows what it ran earlier"
        )
    if target.sha256:
        sha = catalog.get((mount.kind, mount.plugin, target.version))
        if sha is None:
            return cannot(f"it ran {target}, and that version is gone from the catalog")
        if sha != target.sha256:
            return cannot(
                f"it ran {target}, and the catalog's {target.version or '(unversioned)'} "
                f"now has sha256 {sha[:12]}…"
            )
        if target.version == "" and mount.plugin_version != "":
            return cannot(
                f"it ran {target}, and the server refuses to clear a pin back to the "
                "unversioned entry"
            )
    return Restore(mount.namespace, mount.kind, mount.path, mount.plugin, target, home=home)


def restore_writes(
    restores: Sequence[Restore],
    pins: Mapping[MountKey, str],
    seen: Mapping[str, Mapping[MountKey, NodeMount]],
) -> Writes:
    """What the mounts run now (pins and per-node reads) → the writes that restore them."""
    tunes: list[tuple[Restore, str]] = []
    reloads: list[Restore] = []
    for restore in restores:
        if restore.target is None or restore.why_not or restore.key not in pins:
            continue
        if not _pinned_to(pins[restore.key], restore.target):
            tunes.append((restore, restore.target.version))
        if any(
            _wrong(views[restore.key], restore.target)
            for views in seen.values()
            if restore.key in views
        ):
            reloads.append(restore)
    return Writes(tuple(tunes), tuple(reloads))


def _pinned_to(pin: str, target: Binary) -> bool:
    """Whether a mount pinned to `pin` runs `target` once reloaded: an unpinned mount of
    a built-in runs the built-in (the server stores a pin to it as "")."""
    if pin == target.version:
        return True
    return not target.sha256 and (pin == "" or is_builtin_version(pin))


def _wrong(seen: NodeMount, target: Binary) -> str:
    """ "" when the node runs `target` for the mount and it answers; else what differs."""
    if not seen.answers:
        return f"does not answer ({seen.error})"
    running = Binary(seen.running_version, seen.running_sha256)
    if running != target:
        return f"runs {running}, expected {target}"
    return ""


# --- the writes and the reads that prove them ------------------------------------------


def roll_back(
    client: Client,
    nodes: Sequence[Node],
    before: LiveState,
    failed: Collection[HeldUpgrade],
    now: LiveState,
    write: Write,
    scope: str,
    namespaces: Collection[str],
) -> list[MountOutcome]:
    """Restore every mount of the failed upgrades in `namespaces` (the ones the file
    manages) to what it ran; each mount reported once."""
    restores = what_ran(before, failed, namespaces)
    by_key = {mount_key(m): m for m in (*now.mounts, *now.elsewhere)}
    restores = [r for r in restores if r.key in by_key]
    if not restores:
        return []
    mounts = [by_key[r.key] for r in restores]
    seen = {node.address: read_node_mounts(client, node, mounts) for node in nodes}
    pins = {key: mount.plugin_version for key, mount in by_key.items()}
    writes = restore_writes(restores, pins, seen)
    written: set[MountKey] = set()
    problems: dict[MountKey, str] = {}
    for restore, version in writes.tunes:
        log.warning("rolling back %s: pin %s", restore.name, version)
        try:
            write(
                client.tune_mount,
                restore.kind,
                restore.path,
                {"plugin_version": version},
                restore.namespace,
            )
            written.add(restore.key)
        except ApiError as error:
            problems[restore.key] = f"the tune back to {version} failed: {error}"
    reload = [r for r in writes.reloads if r.key not in problems]
    for namespace, paths in _by_namespace(r.key for r in reload).items():
        log.warning("rolling back: reloading %s", ", ".join(paths))
        try:
            write(
                client.reload_backend,
                mounts=paths,
                scope=scope if len(nodes) > 1 else "",
                namespace=namespace,
            )
        except ApiError as error:
            # Each node is read and repaired on its own below.
            log.warning("rollback reload failed: %s", error)
    written.update(r.key for r in reload)
    targets = {r.key: r.target for r in restores if r.target is not None and not r.why_not}
    wait = defaults.NODE_LAG_WAIT if written else 0.0
    after: dict[str, dict[MountKey, NodeMount]] = {}
    repaired: set[MountKey] = set()
    for node in nodes:
        after[node.address], repaired_here = _verified_node(
            client, node, mounts, targets, wait, write
        )
        repaired |= repaired_here
    written |= repaired
    if repaired and len(nodes) > 1:
        # Claims come from reads made after the last write: every node is read again.
        after = {node.address: read_node_mounts(client, node, mounts) for node in nodes}
    return [
        _outcome(client, nodes, restore, after, written, problems.get(restore.key, ""))
        for restore in restores
    ]


def _by_namespace(keys: Iterable[MountKey]) -> dict[str, list[str]]:
    """Mounts grouped by the namespace a reload of them is sent in, as API paths: the
    server reloads nothing for a path that crosses namespaces."""
    grouped: dict[str, list[str]] = {}
    for namespace, kind, path in sorted(keys):
        grouped.setdefault(namespace, []).append(api_path(kind, path))
    return grouped


def _verified_node(
    client: Client,
    node: Node,
    mounts: Sequence[LiveMount],
    targets: Mapping[MountKey, Binary | None],
    wait: float,
    write: Write,
) -> tuple[dict[MountKey, NodeMount], set[MountKey]]:
    """The mounts as `node` runs them, once they run their targets or the wait is over;
    a mount still wrong gets a local reload sent to that node (returned), and is read
    again."""

    def wrong_in(seen: Mapping[MountKey, NodeMount]) -> dict[MountKey, str]:
        return {
            key: why
            for key, target in targets.items()
            if target and (why := _wrong(seen[key], target))
        }

    seen, wrong = wait_on_node(client, node, mounts, wrong_in, wait)
    if not wrong:
        return seen, set()
    repair_on_node(client, node, wrong, write, "rollback: ")
    return read_node_mounts(client, node, mounts), set(wrong)


def repair_on_node(
    client: Client, node: Node, wrong: Iterable[MountKey], write: Write, context: str = ""
) -> None:
    """A local reload sent to `node` of each mount still wrong there, one per namespace.

    A failed local reload is logged: the reads that follow say what the node runs."""
    for namespace, paths in _by_namespace(wrong).items():
        log.warning("%srepairing %s with a local reload of %s", context, node.address, paths)
        try:
            with client.on_node(node.address) as pinned:
                write(pinned.reload_backend, mounts=paths, namespace=namespace)
        except ApiError as error:
            log.warning("local reload on %s failed: %s", node.address, error)


def _outcome(
    client: Client,
    nodes: Sequence[Node],
    restore: Restore,
    after: Mapping[str, Mapping[MountKey, NodeMount]],
    written: Collection[MountKey],
    problem: str,
) -> MountOutcome:
    states = tuple(
        NodeState(
            node=address,
            running=Binary(seen[restore.key].running_version, seen[restore.key].running_sha256),
            answers=seen[restore.key].answers,
            error=seen[restore.key].error,
        )
        for address, seen in after.items()
    )
    if restore.why_not or restore.target is None:
        return MountOutcome(restore.name, NOT_RESTORED, restore.target, states, restore.why_not)
    why = [problem] if problem else []
    for node in nodes:
        wrong = _wrong(after[node.address][restore.key], restore.target)
        if wrong:
            why.append(_on_node(client, nodes, node, restore, wrong))
    if why:
        return MountOutcome(restore.name, NOT_RESTORED, restore.target, states, "; ".join(why))
    state = RESTORED if restore.key in written else UNCHANGED
    return MountOutcome(restore.name, state, restore.target, states)


def _on_node(
    client: Client, nodes: Sequence[Node], node: Node, restore: Restore, wrong: str
) -> str:
    """Why the mount is wrong on `node`, naming a binary missing from its plugin directory."""
    where = f"on node {node.address}: " if len(nodes) > 1 else ""
    missing = ""
    if restore.target is not None and restore.target.sha256:
        try:
            found = node_has_entry(
                client, node, restore.kind, restore.plugin, restore.target.version
            )
        except ApiError as error:
            found = str(error)
        if found and found != LAGGING:
            missing = (
                f"; its binary for {restore.target.version} is missing or unreadable "
                f"there ({found})"
            )
    return f"{where}{wrong} (a local reload sent to it did not repair it){missing}"
