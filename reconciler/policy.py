"""The least-privilege ACL policy (HCL) that a desired-state file's runs need, and what
each planned write needs (checked before the first one).

Pure: the paths follow from the file and from the requests the client sends
(`reconciler.client`). One policy serves `apply`, `watch`, `status` and `export`
of the file; `--read-only` serves `plan`, `status` and `export`. The file's form
decides where the policy lives and what it grants:

- a whole-server file (no `namespace:`) is run with a root token: the catalog, the
  root's mounts, every declared namespace, and `sys/ha-status` to find a cluster's
  nodes;
- a file bound to a namespace (`namespace: team1/`) is run with a token of that
  namespace, and its policy is written there, with paths relative to it: the
  catalog is read through the namespace (the list only), never written, and
  `sys/ha-status` cannot be read from a namespace, so it is not granted.

Exact paths are granted for what the file declares; a glob only where the file
cannot name the path: the walk of undeclared namespaces one level down (`+/`),
catalog entries the file does not declare (read at the root), pruning. A stanza
that a broader one already covers with the same capabilities is left out, so that
each stanza is needed. Requests that need no capability are left out too:
`sys/seal-status`, `sys/health` and a mount's help (the verification probe).

The connections of a database mount are read (their plugin and pin, before an
entry is deregistered); their configuration holds the connection details, so only
the connections the file declares are granted. A connection the file does not
declare cannot be read with the policy: a plan then stops with a 403 naming it, and
the fix is to declare it (or to grant its read by hand).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.builtins import OPENBAO_BUILTINS, RESERVED_BUILTINS
from reconciler.model import DATABASE_ENGINE, DesiredState, Mount, MountKind
from reconciler.plan import (
    Action,
    CreateNamespaceAction,
    DeregisterAction,
    DisableAction,
    EnableAction,
    MoveAction,
    RegisterAction,
    ReloadAction,
    RepinAction,
    ReplaceAction,
    ResetAction,
    TuneAction,
    UpdateAction,
)
from reconciler.resolver import is_builtin_version, namespace_path

# Reading a catalog entry (it holds the sha256) is root-protected, like writing one.
_CATALOG_READ = ("read", "sudo")
_CATALOG_WRITE = ("create", "update", "sudo")
_RELOAD = "sys/plugins/reload/backend"


def _table(kind: MountKind) -> str:
    return "sys/auth" if kind == "auth" else "sys/mounts"


def _mount_endpoint(kind: MountKind, path: str) -> str:
    """Where a mount is enabled and disabled, and tuned below: `sys/mounts/<path>` or
    `sys/auth/<path>`."""
    return f"{_table(kind)}/{path.rstrip('/')}"


def _may_run_external(state: DesiredState, kind: MountKind, mount: Mount) -> bool:
    """Whether a mount can run a plugin of its own (which a new version reaches by a reload)."""
    if mount.version is not None and not is_builtin_version(mount.version):
        return True
    declared = {(entry.type, entry.name) for entry in state.plugins}
    key = (kind, mount.plugin)
    return key in declared or key not in OPENBAO_BUILTINS | RESERVED_BUILTINS


def policy_stanzas(state: DesiredState, *, read_only: bool) -> dict[str, set[str]]:
    """Path → capabilities, for `plan` (read_only) or `apply`/`watch` of `state`.

    A bound file's paths are relative to its namespace, where its policy is written.
    """
    stanzas: dict[str, set[str]] = {}
    bound = state.namespace is not None

    def grant(path: str, *capabilities: str) -> None:
        stanzas.setdefault(path, set()).update(capabilities)

    # The catalog list: at the root, or through the namespace for a bound file.
    grant("sys/plugins/catalog", "read")
    if not bound:
        # Each external entry is read for its command and args: the declared ones and
        # the ones the file does not declare (reported as unmanaged, exported).
        grant("sys/plugins/catalog/+/+", *_CATALOG_READ)
        if not state.settings.nodes:
            # A cluster's nodes; a token of a namespace cannot read it (it works on one
            # node with a warning), so a bound file's policy does not grant it.
            grant("sys/ha-status", "read")
    # The walk of every namespace (catalog safety counts all their mounts): the file's
    # own and its children (`+/` covers undeclared ones one level down), then the
    # declared ones deeper down.
    for relative in ("", "+/"):
        grant(f"{relative}sys/namespaces", "list")
        grant(f"{relative}sys/mounts", "read")
        grant(f"{relative}sys/auth", "read")
    scopes = [("", state.mounts()), *((rel, ns.mounts()) for rel, ns, _ in state.namespace_tree())]
    for relative, _mounts in scopes:
        if relative.count("/") > 1:  # `+` matches one path segment only
            grant(f"{relative}sys/namespaces", "list")
            grant(f"{relative}sys/mounts", "read")
            grant(f"{relative}sys/auth", "read")
    # A database mount's connections are listed, and the declared ones read.
    for relative, mounts in scopes:
        for kind, mount in mounts:
            if kind == "secret" and mount.plugin == DATABASE_ENGINE:
                grant(f"{relative}{mount.path}config/", "list")
                for connection in mount.connections or []:
                    grant(f"{relative}{mount.path}config/{connection.name}", "read")
    # Before its first write, apply asks which of its writes the token may make: a token
    # that cannot make them all (a read-only one, or a file that outgrew its policy) is
    # refused before it changes anything.
    grant("sys/capabilities-self", "update")
    if read_only:
        return stanzas

    # watch looks its token up and renews it every pass.
    grant("auth/token/lookup-self", "read")
    grant("auth/token/renew-self", "update")
    absent = {(entry.type, entry.name) for entry in state.plugins if not entry.present}
    for entry in state.plugins:
        if entry.managed_by == "server":
            continue  # the server's configuration owns it: read through `+/+`, never written
        path = f"sys/plugins/catalog/{entry.type}/{entry.name}"
        grant(path, *_CATALOG_READ, *_CATALOG_WRITE)
        if (entry.type, entry.name) in absent:
            grant(path, "delete")
    if state.settings.prune_plugins:
        # Deregistering undeclared entries (`+/+` wins over a `*` glob, so it is widened).
        grant("sys/plugins/catalog/+/+", "delete")

    def grant_scope(relative: str, mounts: Iterable[tuple[MountKind, Mount]]) -> None:
        """What writing one namespace's mounts needs; `relative` is "" for the file's own."""
        mounts = list(mounts)
        # Undeclared mounts of the file's own namespace reloaded onto an updated entry.
        unmanaged = not relative and state.settings.reload_unmanaged
        if unmanaged or any(_may_run_external(state, kind, mount) for kind, mount in mounts):
            # A new version (and its rollback) reaches running mounts through a reload.
            grant(f"{relative}{_RELOAD}", "update", "sudo")
        for kind, mount in mounts:
            root = ("sudo",) if kind == "auth" else ()
            endpoint = _mount_endpoint(kind, mount.path)
            grant(f"{relative}{endpoint}", "create", "update", *root)
            grant(f"{relative}{endpoint}/tune", "update", *root)
            if mount.moved_from is not None:
                grant(f"{relative}sys/remount", "update", "sudo")
                grant(f"{relative}sys/remount/status/*", "read")
            if kind == "secret" and mount.plugin == DATABASE_ENGINE:
                for connection in mount.connections or []:
                    # A re-pin writes the connection's config; a reset restarts it.
                    grant(f"{relative}{mount.path}config/{connection.name}", "update")
                    grant(f"{relative}{mount.path}reset/{connection.name}", "update")
        if state.settings.prune_mounts:
            for kind in ("secret", "auth"):
                auth_root = ("sudo",) if kind == "auth" else ()
                grant(f"{relative}{_table(kind)}/*", "delete", *auth_root)

    for relative, mounts in scopes:
        if relative:
            # Created in its parent when absent; its mounts are written inside it.
            parent, _, name = relative.rstrip("/").rpartition("/")
            grant(f"{parent + '/' if parent else ''}sys/namespaces/{name}", "create", "update")
        grant_scope(relative, mounts)
    return stanzas


_ORDER = ["create", "read", "update", "delete", "list", "sudo"]


def policy_hcl(state: DesiredState, *, read_only: bool, source: str = "") -> str:
    """The policy as HCL text, stanzas sorted by path."""
    commands = "plan, status and export" if read_only else "apply, watch, status and export"
    of = f" of {source}" if source else ""
    lines = [f"# What {commands}{of} need, and no more."]
    if state.namespace is not None:
        lines += [
            f"# Write it in namespace {state.namespace} (its paths are relative to it) and",
            "# give it to a token of that namespace.",
        ]
    else:
        lines.append("# Write it in the root namespace and give it to a token of the root.")
    if not read_only:
        lines.append("# Replacing a mount (--allow-destroy) also needs `delete` on its path.")
    for path, capabilities in sorted(policy_stanzas(state, read_only=read_only).items()):
        listed = ", ".join(f'"{c}"' for c in sorted(capabilities, key=_ORDER.index))
        lines += ["", f'path "{path}" {{', f"  capabilities = [{listed}]", "}"]
    return "\n".join(lines) + "\n"


# --- what each planned write needs ---------------------------------------------------


@dataclass(frozen=True)
class WriteNeed:
    """A request an action sends: its path relative to the client's namespace, and the
    capabilities of which the token must hold one (the server's existence check decides
    between create and update)."""

    path: str
    any_of: frozenset[str]
    action: Action


_WRITE = frozenset({"create", "update"})
_UPDATE = frozenset({"update"})
_DELETE = frozenset({"delete"})
_READ = frozenset({"read"})


def write_needs(actions: Sequence[Action], client_namespace: str) -> list[WriteNeed]:
    """The requests that `actions` send, with the capability each needs."""
    home = namespace_path(client_namespace)

    def at(namespace: str | None, path: str) -> str:
        """`path` sent in `namespace` (a path from the root), seen from the client's."""
        if namespace is None:
            return path
        absolute = namespace_path(namespace)
        return absolute.removeprefix(home) + path if absolute.startswith(home) else path

    needs: list[WriteNeed] = []
    for action in actions:

        def need(path: str, any_of: frozenset[str], action: Action = action) -> None:
            needs.append(WriteNeed(path, any_of, action))

        match action:
            case RegisterAction(params=p) | UpdateAction(params=p):
                need(f"sys/plugins/catalog/{p.type}/{p.name}", _WRITE)
            case DeregisterAction(params=p):
                need(f"sys/plugins/catalog/{p.type}/{p.name}", _DELETE)
            case CreateNamespaceAction(params=p):
                need(at(p.parent, f"sys/namespaces/{p.name.strip('/')}"), _WRITE)
            case ReplaceAction(params=p):
                need(at(p.namespace, _mount_endpoint(p.kind, p.path)), _DELETE)
                need(at(p.namespace, _mount_endpoint(p.kind, p.path)), _WRITE)
            case EnableAction(params=p):
                need(at(p.namespace, _mount_endpoint(p.kind, p.path)), _WRITE)
            case MoveAction(params=p):
                need(at(p.namespace, "sys/remount"), _UPDATE)
                need(at(p.namespace, "sys/remount/status/"), _READ)
            case TuneAction(params=p):
                need(at(p.namespace, f"{_mount_endpoint(p.kind, p.path)}/tune"), _UPDATE)
            case DisableAction(params=p):
                need(at(p.namespace, _mount_endpoint(p.kind, p.path)), _DELETE)
            case ReloadAction(params=p):
                # A node's own reload is sent to that node, in the mounts' namespace too.
                need(at(p.namespace, _RELOAD), _UPDATE)
            case RepinAction(params=p):
                need(at(p.namespace, f"{p.mount}config/{p.name}"), _WRITE)
            case ResetAction(params=p):
                need(at(p.namespace, f"{p.mount}reset/{p.name}"), _UPDATE)
    return needs
