"""Read the live catalog and the mount tables of every namespace into a `LiveState`.

The number of requests depends on the number of external catalog entries,
of namespaces and of mounts that run an external plugin, never on the number
of built-in mounts: one catalog list, one read per external entry (for its
command, args and the `declarative` and `oci` flags, which the list does not
carry), the server's identity, per namespace one `LIST sys/namespaces` (it
lists one level, so nested namespaces need a walk) and the two mount tables,
and one probe per mount that runs an external plugin, sent in its namespace
(`sys/mounts` keeps reporting a plugin that failed to start as running: only
a request through the mount shows it is dead). They run concurrently.

The one catalog serves the mounts of every namespace, so the walk starts at
the root whatever namespace the client works in; a token that may not list
the root's namespaces (one scoped to a namespace) walks from its own.

Each mount of the database engine, in every namespace walked, adds one LIST of
its connections and one read per connection (SPEC §10), managed or not: the
plan must know every connection that names a catalog entry, wherever it lives,
before it deregisters one. Of a connection only its plugin and version are
kept; its connection details never leave the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, get_args

from reconciler.client import Client
from reconciler.durations import whole_seconds
from reconciler.errors import ApiError, PermissionDenied, PluginFileMissing
from reconciler.model import (
    DATABASE_ENGINE,
    CatalogEntry,
    LiveConnection,
    LiveMount,
    LiveNode,
    LiveState,
    MountConfig,
    MountKind,
    NodeRunning,
    PluginType,
)
from reconciler.nodes import Node, on_node
from reconciler.resolver import namespace_path, runs_external

log = logging.getLogger(__name__)

# Concurrent requests per read: enough to hide latency, few enough to be polite.
MAX_CONCURRENT_READS = 8

_PLUGIN_TYPES = frozenset(get_args(PluginType))
_CONFIG_KEYS = tuple(MountConfig.model_fields)
_DURATION_KEYS = frozenset({"default_lease_ttl", "max_lease_ttl"})
_LIST_KEYS = frozenset(
    {
        "audit_non_hmac_request_keys",
        "audit_non_hmac_response_keys",
        "passthrough_request_headers",
        "allowed_response_headers",
    }
)


_Tables = tuple[Future[dict[str, dict[str, Any]]], Future[dict[str, dict[str, Any]]]]


def read_live_state(client: Client, nodes: Sequence[Node] = ()) -> LiveState:
    """The server's catalog (external entries with their hash), every namespace's mounts
    and its identity.

    With several `nodes`, also each node's own mount tables of every namespace (two
    reads per namespace) and a probe of every external-plugin mount, sent to that node
    only: what each node runs and whether it answers there, for per-node drift and
    moves a node did not follow.
    """
    home = namespace_path(client.namespace)
    with ThreadPoolExecutor(MAX_CONCURRENT_READS, thread_name_prefix="reconciler-read") as pool:
        catalog_list = pool.submit(_list_catalog, client, home)
        identity = pool.submit(client.server_identity)
        walk = _NamespaceWalk(client, pool, home)
        entries, readable = catalog_list.result()
        listed = [entry for entry in entries if _known_type(entry)]
        details: dict[int, Future[dict[str, Any] | PluginFileMissing | None]] = {
            index: pool.submit(_read_external, client, entry)
            for index, entry in enumerate(listed)
            if readable and not entry.get("builtin")
        }
        catalog = []
        for index, entry in enumerate(listed):
            if index not in details:
                unread = not readable and not entry.get("builtin")
                catalog.append(_catalog_entry(entry, {}, details_read=not unread))
                continue
            detail = details[index].result()
            if isinstance(detail, PluginFileMissing):
                catalog.append(
                    _catalog_entry(entry, {}, details_read=False, file_error=str(detail))
                )
            elif detail is not None:
                catalog.append(_catalog_entry(entry, detail))
        tables = walk.finish()
        mounts = [
            mount
            for namespace, (secret_mounts, auth_mounts) in tables.items()
            for mount in (
                *(
                    _live_mount("secret", path, raw, namespace)
                    for path, raw in secret_mounts.result().items()
                ),
                *(
                    _live_mount("auth", path, raw, namespace)
                    for path, raw in auth_mounts.result().items()
                ),
            )
        ]
        server = identity.result()
        probes = {
            index: pool.submit(_backend_answers, client, mount)
            for index, mount in enumerate(mounts)
            if _runs_external(mount)
        }
        # Every namespace's connections: the catalog serves them all (SPEC §9, §10).
        connections = _read_connections(client, pool, mounts)
        for index, probe in probes.items():
            mounts[index] = mounts[index].model_copy(update={"backend_answers": probe.result()})
    catalog.sort(key=lambda e: (e.type, e.name, e.version))
    mounts.sort(key=lambda m: (m.namespace, m.kind, m.path))
    connections.sort(key=lambda c: (c.namespace, c.mount, c.name))
    return LiveState(
        server=server,
        catalog=catalog,
        mounts=[m for m in mounts if m.namespace == home],
        namespaces=sorted(namespace for namespace in tables if namespace),
        elsewhere=[m for m in mounts if m.namespace != home],
        connections=connections,
        nodes=[_read_node(client, node, mounts) for node in nodes] if len(nodes) > 1 else [],
    )


class _NamespaceWalk:
    """Every namespace from the root down (from `home` when the root refuses the token),
    each with its two mount tables being read.

    The root's requests are sent when the walk is made; `finish` waits for them and
    walks on. Answers are awaited after the catalog list's: a `LIST` to a wrong
    address (plain HTTP to a TLS listener) gets no answer at all, while a `GET` gets
    one that says what is wrong.
    """

    def __init__(self, client: Client, pool: ThreadPoolExecutor, home: str) -> None:
        self._client, self._pool, self._home = client, pool, home
        self._found = {"": self._tables("")}
        self._pending = {"": pool.submit(client.list_namespaces, "")}

    def _tables(self, namespace: str) -> _Tables:
        return (
            self._pool.submit(self._client.list_mounts, "secret", namespace),
            self._pool.submit(self._client.list_mounts, "auth", namespace),
        )

    def finish(self) -> dict[str, _Tables]:
        found, pending, home = self._found, self._pending, self._home
        while pending:
            namespace, children = pending.popitem()
            try:
                keys = children.result()
            except PermissionDenied:
                if namespace != "" or not home:
                    raise
                # A token scoped to `home` sees neither the root nor its siblings.
                log.debug("the token may not list the root's namespaces: walking from %s", home)
                for future in found.pop(""):
                    future.cancel()
                found[home] = self._tables(home)
                pending[home] = self._pool.submit(self._client.list_namespaces, home)
                continue
            for key in keys:
                child = namespace + key
                found[child] = self._tables(child)
                pending[child] = self._pool.submit(self._client.list_namespaces, child)
        if home not in found and "" in found:
            # Walked from the root, the whole tree is known: the client's namespace is not
            # in it, and every read in it would be a bare 404.
            parent, _, name = home.rstrip("/").rpartition("/")
            in_parent = f" -namespace={parent}" if parent else ""
            raise ApiError(
                f"namespace {home} does not exist: create it first (`bao namespace create"
                f"{in_parent} {name}`, with a token that may create namespaces"
                f"{' in ' + parent + '/' if parent else ' at the root'}), or declare it "
                "under `namespaces:` of the whole-server file, apply that, then run again",
                status=404,
                path="sys/namespaces",
            )
        if home not in found:
            # Not among the walked namespaces: its own tables say why (404, 403).
            found[home] = self._tables(home)
        return found


def _list_catalog(client: Client, home: str) -> tuple[list[dict[str, Any]], bool]:
    """The catalog list, and whether its entries can be read one by one.

    A token scoped to a namespace is refused at the root; through its namespace the
    list answers (sha256 included) but single entries do not, so command and args stay
    unknown: such a token's file never writes the catalog.
    """
    try:
        return client.list_catalog(), True
    except PermissionDenied:
        if not home:
            raise
        return client.list_catalog(home), False


def _read_connections(
    client: Client, pool: ThreadPoolExecutor, mounts: list[LiveMount]
) -> list[LiveConnection]:
    """Every connection of every database mount, each in its namespace: one LIST per
    mount, one read per connection."""
    databases = [
        (m.namespace, m.path) for m in mounts if m.kind == "secret" and m.plugin == DATABASE_ENGINE
    ]
    listed = {
        (namespace, path): pool.submit(client.list_connections, path, namespace)
        for namespace, path in databases
    }
    reads = {
        (namespace, path, name): pool.submit(client.read_connection, path, name, namespace)
        for (namespace, path), names in listed.items()
        for name in names.result()
    }
    connections = []
    for (namespace, path, name), read in reads.items():
        found = read.result()
        if found is not None:  # deleted since the list was read
            connections.append(
                LiveConnection(
                    mount=path,
                    name=name,
                    plugin=found["plugin_name"],
                    plugin_version=found["plugin_version"],
                    namespace=namespace,
                )
            )
    return connections


def _read_node(client: Client, node: Node, mounts: Sequence[LiveMount]) -> LiveNode:
    """What `node`'s own tables say each namespace's mounts run, and whether each mount
    that runs an external plugin answers a request sent to that node."""
    namespaces = sorted({mount.namespace for mount in mounts})
    external = [m for m in mounts if _runs_external(m)]

    def tables(pinned: Client) -> list[NodeRunning]:
        wanted = [(namespace, kind) for namespace in namespaces for kind in _KINDS]
        with ThreadPoolExecutor(MAX_CONCURRENT_READS, thread_name_prefix="reconciler-node") as pool:
            listed = pool.map(lambda t: pinned.list_mounts(t[1], t[0]), wanted)
            probes = pool.map(lambda m: _backend_answers(pinned, m), external)
            answers = {
                (m.namespace, m.kind, m.path): a for m, a in zip(external, probes, strict=True)
            }
            tables = dict(zip(wanted, listed, strict=True))
        running = []
        for (namespace, kind), table in sorted(tables.items()):
            for key, raw in table.items():
                path = key if key.endswith("/") else key + "/"
                running.append(
                    NodeRunning(
                        kind=kind,
                        path=path,
                        running_plugin_version=str(raw.get("running_plugin_version") or ""),
                        running_sha256=str(raw.get("running_sha256") or "").lower(),
                        namespace=namespace,
                        accessor=str(raw.get("accessor") or ""),
                        answers=answers.get((namespace, kind, path)),
                    )
                )
        return running

    running = on_node(client, node, tables)
    return LiveNode(address=node.address, active=node.active, mounts=running)


_KINDS: tuple[MountKind, ...] = ("secret", "auth")


def _known_type(entry: Mapping[str, Any]) -> bool:
    if entry.get("type") in _PLUGIN_TYPES:
        return True
    log.debug("ignoring catalog entry of unknown type: %s", entry)
    return False


def _runs_external(mount: LiveMount) -> bool:
    """A mount whose plugin is a process of its own (the server's reserved mounts never)."""
    return not mount.reserved and runs_external(mount)


def _backend_answers(client: Client, mount: LiveMount) -> bool | None:
    """Whether the mount's backend answers a help request; None when the probe says nothing."""
    try:
        client.probe_mount(mount.kind, mount.path, mount.namespace)
    except ApiError as error:
        if error.status == 404 and "nothing is mounted" not in str(error):
            return False
        # Disabled since the table was read, a refused token or a server error: no
        # verdict on the backend, and no reason to fail the whole read.
        log.warning("could not probe %s: %s", mount.api_path, error)
        return None
    return True


def _read_external(
    client: Client, entry: Mapping[str, Any]
) -> dict[str, Any] | PluginFileMissing | None:
    """The full entry, or None when it was deregistered since the list was read.

    An entry whose file the answering node lacks cannot be read (500): it is kept as
    listed, with why, so that the plan and status can say so rather than fail.
    """
    try:
        return client.read_plugin(
            str(entry["type"]), str(entry["name"]), str(entry.get("version") or "")
        )
    except PluginFileMissing as error:
        return error
    except ApiError as error:
        if error.status == 404:
            return None
        raise


def _catalog_entry(
    listed: Mapping[str, Any],
    detail: Mapping[str, Any],
    *,
    details_read: bool = True,
    file_error: str = "",
) -> CatalogEntry:
    return CatalogEntry(
        type=listed["type"],
        name=str(listed["name"]),
        version=str(listed.get("version") or ""),
        builtin=bool(listed.get("builtin")),
        sha256=str(detail.get("sha256") or listed.get("sha256") or "").lower(),
        command=str(detail.get("command") or ""),
        args=[str(arg) for arg in detail.get("args") or []],
        # Only a read carries these (the list does not); servers before them omit them.
        declarative=detail.get("declarative") is True,
        oci=detail.get("oci") is True,
        details_read=details_read,
        file_error=file_error,
    )


def _live_mount(
    kind: MountKind, path: str, raw: Mapping[str, Any], namespace: str = ""
) -> LiveMount:
    options = raw.get("options") or {}
    return LiveMount(
        kind=kind,
        path=path if path.endswith("/") else path + "/",
        plugin=str(raw.get("type") or ""),
        plugin_version=str(raw.get("plugin_version") or ""),
        running_plugin_version=str(raw.get("running_plugin_version") or ""),
        running_sha256=str(raw.get("running_sha256") or "").lower(),
        description=str(raw.get("description") or ""),
        config=normalise_config(raw.get("config") or {}),
        unmanaged_config={
            str(key): value
            for key, value in (raw.get("config") or {}).items()
            if key not in _CONFIG_KEYS and value not in (None, "", [], {})
        },
        options={str(key): _option_text(value) for key, value in options.items()},
        local=bool(raw.get("local")),
        seal_wrap=bool(raw.get("seal_wrap")),
        accessor=str(raw.get("accessor") or ""),
        namespace=namespace,
    )


def normalise_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A mount's config as the desired side holds it: MountConfig keys, durations in seconds."""
    config: dict[str, Any] = {}
    for key in _CONFIG_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if key in _DURATION_KEYS:
            try:
                config[key] = whole_seconds(value)
            except ValueError:
                log.warning("ignoring unreadable %s %r in a mount's config", key, value)
        elif key in _LIST_KEYS:
            config[key] = [str(item) for item in value]
        elif key == "force_no_cache":
            config[key] = bool(value)
        else:
            config[key] = str(value)
    return config


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
