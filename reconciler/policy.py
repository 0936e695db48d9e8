"""The least-privilege ACL policy (HCL) that `plan` or `apply` of one desired state needs.

Pure: the paths follow from the file and from the requests the client sends
(`reconciler.client`): exact paths for the file's catalog entries and mounts, a
glob only where the file cannot name the path (pruning undeclared mounts or
entries). Requests that need no capability are left out: `sys/seal-status`,
`sys/health`, a mount's help (the verification probe), and the token's own
`auth/token/lookup-self`/`renew-self` (in the `default` policy).
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.model import DATABASE_ENGINE, DesiredState, Mount, MountKind

# Reading a catalog entry (it holds the sha256) is root-protected, like writing one.
_CATALOG_READ = ("read", "sudo")
_CATALOG_WRITE = ("create", "update", "delete", "sudo")


def _table(kind: MountKind) -> str:
    return "sys/auth" if kind == "auth" else "sys/mounts"


def policy_stanzas(state: DesiredState, *, read_only: bool) -> dict[str, set[str]]:
    """Path → capabilities, for `plan` (read_only) or `apply` of `state`."""
    stanzas: dict[str, set[str]] = {}

    def grant(path: str, *capabilities: str) -> None:
        stanzas.setdefault(path, set()).update(capabilities)

    grant("sys/plugins/catalog", "read")
    grant("sys/mounts", "read")
    grant("sys/auth", "read")
    # The walk of every namespace (catalog safety counts all their mounts): the children
    # of each namespace and their mount tables; `+/` covers undeclared ones one level down.
    grant("sys/namespaces", "list")
    grant("+/sys/namespaces", "list")
    grant("+/sys/mounts", "read")
    grant("+/sys/auth", "read")
    for relative, _, _ in state.namespace_tree():
        grant(f"{relative}sys/namespaces", "list")
        grant(f"{relative}sys/mounts", "read")
        grant(f"{relative}sys/auth", "read")
    # The connections of every database mount, declared or not, are read (their plugin
    # and pin) before an entry is deregistered: the file cannot name the undeclared ones.
    # (A LIST is checked against the path with a trailing "/", which `*` covers.)
    grant("+/config/*", "read", "list")
    if not state.settings.nodes:
        # The nodes of a cluster (one on a single server), unless the file names them.
        grant("sys/ha-status", "read")
    for entry in state.plugins:
        grant(f"sys/plugins/catalog/{entry.type}/{entry.name}", *_CATALOG_READ)
    databases = [
        mount
        for kind, mount in state.mounts()
        if kind == "secret" and mount.plugin == DATABASE_ENGINE
    ]
    for mount in databases:
        if mount.path.count("/") > 1:  # `+` matches one path segment only
            grant(f"{mount.path}config/*", "read", "list")
    if read_only:
        return stanzas
    for entry in state.plugins:
        grant(f"sys/plugins/catalog/{entry.type}/{entry.name}", *_CATALOG_WRITE)
    if state.settings.prune_plugins:
        grant("sys/plugins/catalog/*", *_CATALOG_READ, *_CATALOG_WRITE)

    def grant_scope(relative: str, mounts: Iterable[tuple[MountKind, Mount]]) -> None:
        """What writing one namespace's mounts needs; `relative` is "" for the root's."""
        if state.plugins:
            # A new version reaches running mounts through one reload call.
            grant(f"{relative}sys/plugins/reload/backend", "update", "sudo")
        for kind, mount in mounts:
            root = ("sudo",) if kind == "auth" else ()
            path = mount.path.rstrip("/")
            grant(f"{relative}{_table(kind)}/{path}", "create", "update", *root)
            grant(f"{relative}{_table(kind)}/{path}/tune", "update", *root)
            if mount.moved_from is not None:
                grant(f"{relative}sys/remount", "update", "sudo")
                grant(f"{relative}sys/remount/status/*", "read")
        if state.settings.prune_mounts:
            for kind in ("secret", "auth"):
                auth_root = ("sudo",) if kind == "auth" else ()
                grant(f"{relative}{_table(kind)}/*", "delete", *auth_root)

    grant_scope("", state.mounts())
    for mount in databases:
        for connection in mount.connections or []:
            # A re-pin writes the connection's config; a reset restarts it. (An exact path
            # replaces the glob's capabilities for it: the read is granted again.)
            grant(f"{mount.path}config/{connection.name}", "read", "update")
            grant(f"{mount.path}reset/{connection.name}", "update")
    for relative, namespace, _ in state.namespace_tree():
        # Created in its parent when absent; its mounts are written inside it.
        parent, _, name = relative.rstrip("/").rpartition("/")
        grant(f"{parent + '/' if parent else ''}sys/namespaces/{name}", "create", "update")
        grant_scope(relative, namespace.mounts())
    return stanzas


_ORDER = ["create", "read", "update", "delete", "list", "sudo"]


def policy_hcl(state: DesiredState, *, read_only: bool, source: str = "") -> str:
    """The policy as HCL text, stanzas sorted by path."""
    command = "plan" if read_only else "apply"
    lines = [f"# What `reconciler {command}{' ' + source if source else ''}` needs, and no more."]
    if not read_only:
        lines.append("# Replacing a mount (--allow-destroy) also needs `delete` on its path.")
    for path, capabilities in sorted(policy_stanzas(state, read_only=read_only).items()):
        listed = ", ".join(f'"{c}"' for c in sorted(capabilities, key=_ORDER.index))
        lines += ["", f'path "{path}" {{', f"  capabilities = [{listed}]", "}"]
    return "\n".join(lines) + "\n"
