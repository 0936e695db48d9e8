"""Per-node drift: a node of a cluster that runs another binary than the catalog says.

Each node has its own plugin processes: a plain (local) reload sent to one node,
or a node that missed a global reload, leaves that node running something else
while the others are right. Such a mount is reloaded on that node only.

Mounts the rest of the plan reloads or changes are left out: that reload (global
on a cluster) reaches every node, and the verification checks each one.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.plan import (
    Action,
    EnableAction,
    MoveAction,
    Problem,
    ReasonCode,
    ReloadAction,
    ReloadParams,
    ReplaceAction,
    TuneAction,
)
from reconciler.planner._context import Context, Outcome, problem
from reconciler.resolver import api_path, namespace_path
from reconciler.usage import mount_target_name


def plan_node_reloads(context: Context, others: Iterable[Action]) -> tuple[Action, ...]:
    """One local reload per node that runs another binary for a mount of the context's
    namespace than the catalog says, or where the mount does not answer.

    `others`: the rest of the plan (any namespace); the mounts it writes to or reloads
    are left out.
    """
    live = context.live
    if len(live.nodes) < 2:
        return ()
    planned = _planned_paths(others, namespace_path(live.server.namespace))
    sha = live.external_sha256()
    expected: dict[tuple[str, str], tuple[str, str, str]] = {}
    for mount in live.mounts:
        entry_sha = sha.get((mount.kind, mount.plugin, mount.plugin_version), "")
        if entry_sha and (mount.namespace, mount.api_path) not in planned:
            expected[(mount.kind, mount.path)] = (mount.api_path, mount.plugin_version, entry_sha)
    actions: list[Action] = []
    for node in live.nodes:
        drifted: list[str] = []
        described: list[str] = []
        for running in node.mounts:
            want = expected.get((running.kind, running.path))
            if want is None or running.namespace != context.namespace:
                continue
            api_path, version, entry_sha = want
            runs = (running.running_plugin_version, running.running_sha256)
            if running.answers is False:
                described.append(f"{api_path} does not answer there")
            elif runs != (version, entry_sha):
                described.append(
                    f"{api_path} runs {running.running_plugin_version or '(unversioned)'} "
                    f"sha256 {running.running_sha256[:12] or '(none)'}"
                )
            else:
                continue
            drifted.append(api_path)
        if drifted:
            actions.append(
                ReloadAction(
                    target=f"mounts {', '.join(sorted(drifted))} on node {node.address}",
                    reason="this node runs another binary than the catalog says, or none: "
                    + "; ".join(sorted(described)),
                    reason_code=ReasonCode.NODE_RUNS_OTHER_BINARY,
                    params=ReloadParams(mounts=sorted(drifted), node=node.address),
                )
            )
    return tuple(actions)


def stale_moves(context: Context) -> Outcome:
    """A mount of the context's namespace that a node's own table still has at another
    path: a move (`sys/remount`) that node did not follow. An error for a declared
    mount, a warning for another.

    On OpenBao 2.7 a standby keeps routing the old path (and serving it) until it is
    unsealed again or restarted; no reload or tune makes it follow. Nothing this tool
    can write repairs it, and every later plan would otherwise call the server
    converged while that node disagrees: an error, naming the node and the fix.
    """
    declared = {(kind, m.path) for kind, m in context.desired.mounts()}
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for mount, node, old in context.live.moves_not_followed():
        if mount.namespace != context.namespace:
            continue
        found = errors if (mount.kind, mount.path) in declared else warnings
        found.append(
            problem(
                mount_target_name(mount.kind, mount.path),
                f"node {node}'s mount table did not follow the move: it still has this "
                f"mount at {old}. OpenBao standbys take a sys/remount only once unsealed "
                "again or restarted: seal and unseal that node (or restart it), then "
                "apply again",
            )
        )
    return Outcome(errors=tuple(errors), warnings=tuple(warnings))


def _planned_paths(actions: Iterable[Action], home: str) -> frozenset[tuple[str, str]]:
    """(namespace, API path) of every mount `actions` write to or reload."""
    paths: set[tuple[str, str]] = set()
    for action in actions:
        namespace = getattr(action.params, "namespace", None)
        where = home if namespace is None else namespace
        match action:
            case EnableAction(params=p) | ReplaceAction(params=p):
                paths.add((where, api_path(p.kind, p.path)))
            case TuneAction(params=tune):
                paths.add((where, api_path(tune.kind, tune.path)))
            case MoveAction(params=move):
                paths.update(
                    {
                        (where, api_path(move.kind, move.from_path)),
                        (where, api_path(move.kind, move.to)),
                    }
                )
            case ReloadAction(params=reload):
                paths.update((where, path) for path in reload.mounts or [])
    return frozenset(paths)
