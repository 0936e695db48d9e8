"""Desired state (format version 1) and live state, as pydantic models.

The desired-state models are the source of the JSON Schema. Values are
normalised on load (versions carry one leading `v`, durations are seconds,
mount paths end in `/`) so that the planner compares like with like. The
live-state models use the same normalised value types.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from reconciler.defaults import MAX_DESTROY
from reconciler.durations import SCHEMA_PATTERN, SERVER_MAX_SECONDS, whole_seconds
from reconciler.resolver import api_path, live_builtins, normalize_version

PluginType = Literal["secret", "auth", "database"]
MountKind = Literal["secret", "auth"]

# Mount tables a file may not declare: the server owns them.
RESERVED_PATHS: dict[MountKind, frozenset[str]] = {
    "secret": frozenset({"sys/", "identity/", "cubbyhole/"}),
    "auth": frozenset({"token/"}),
}

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A command is exec'd by the server, never by a shell; refusing shell syntax
# keeps a file that looks like it runs a pipeline from being accepted.
_COMMAND = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")


def _version(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a version must be a string, e.g. v1.4.0 (quote it in YAML)")
    return normalize_version(value)


# `?` and `#` end a URL's path, `%` starts an escape, `*` and `+` are ACL policy globs.
_UNSAFE_PATH_CHARACTERS = frozenset('?#%*+\\"')


def _mount_path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a mount path must be a string")
    path = value.strip()
    if not path or path in {"/"}:
        raise ValueError("a mount path cannot be empty")
    if path.startswith("/") or "//" in path or ".." in path.split("/"):
        raise ValueError(f"invalid mount path {value!r}: no leading '/', '//' or '..'")
    unsafe = sorted({c for c in path if c in _UNSAFE_PATH_CHARACTERS or not c.isprintable()})
    if unsafe or any(c.isspace() for c in path):
        shown = ", ".join(repr(c) for c in unsafe) or "white space"
        raise ValueError(
            f"invalid mount path {value!r}: {shown} cannot be used in a mount path "
            "(a URL or an ACL policy path would read it as something else)"
        )
    return path if path.endswith("/") else path + "/"


def _format_version(value: Any) -> Any:
    # Literal[1] alone would take `true` and `1.0` for 1.
    if type(value) is not int or value != 1:
        raise ValueError(f"unsupported format version {value!r}: only `version: 1` exists")
    return value


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ValueError("sha256 must be 64 hexadecimal characters")
    return value.lower()


Version = Annotated[
    str,
    BeforeValidator(_version),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(v?\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]*)?)?$",
            "description": 'Semantic version, leading "v" optional; "" = unversioned.',
        }
    ),
]
Duration = Annotated[
    int,
    BeforeValidator(whole_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": SERVER_MAX_SECONDS},
                {"type": "string", "pattern": SCHEMA_PATTERN},
            ],
            "description": "Whole seconds, or a duration such as 90s, 15m, 1h30m, 7d.",
        }
    ),
]
MountPath = Annotated[
    str,
    BeforeValidator(_mount_path),
    WithJsonSchema({"type": "string", "minLength": 1, "description": 'Trailing "/" optional.'}),
]


def _namespace_name(value: Any) -> str:
    """One namespace segment as a `namespaces:` key: `team1/` (trailing "/" optional)."""
    if not isinstance(value, str):
        raise ValueError("a namespace name must be a string")
    name = value.strip().strip("/")
    if not name or "/" in name or name in {".", ".."} or any(c.isspace() for c in name):
        raise ValueError(
            f"invalid namespace name {value!r}: one path segment (nest children under "
            "its `namespaces:`), no spaces"
        )
    return name + "/"


def _namespace_path(value: Any) -> str:
    """A namespace as a path from the root: `team1/sub/` (trailing "/" optional)."""
    if not isinstance(value, str):
        raise ValueError("a namespace must be a string")
    segments = value.strip().strip("/").split("/")
    if segments == [""]:
        raise ValueError("a namespace cannot be empty: leave `namespace:` out for the root")
    return "".join(_namespace_name(segment) for segment in segments)


NamespaceName = Annotated[
    str,
    BeforeValidator(_namespace_name),
    WithJsonSchema({"type": "string", "pattern": "^[^/\\s]+/?$"}),
]
NamespacePath = Annotated[
    str,
    BeforeValidator(_namespace_path),
    WithJsonSchema({"type": "string", "pattern": "^[^/\\s]+(/[^/\\s]+)*/?$"}),
]
Sha256 = Annotated[
    str,
    BeforeValidator(_sha256),
    WithJsonSchema({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
]
Name = Annotated[str, Field(pattern=_NAME.pattern, max_length=128)]
FormatVersion = Annotated[Literal[1], BeforeValidator(_format_version)]
OptionValue = Annotated[
    str,
    WithJsonSchema(
        {
            "type": ["string", "integer", "number", "boolean"],
            "description": 'Stored as a string by the server; 2 and "2" are one value.',
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, defer_build=True)


class Settings(_Strict):
    """Global behaviour switches; all optional."""

    prune_plugins: StrictBool = Field(
        default=False, description="Deregister external catalog entries the file does not list."
    )
    prune_mounts: StrictBool = Field(
        default=False, description="Disable mounts the file does not list (destructive)."
    )
    reload_scope: Literal["local", "global"] | None = Field(
        default=None,
        description=(
            "global: reload on every node of a cluster; local: only the node the tool talks "
            "to. Default: global when the server is a cluster of several nodes, else local."
        ),
    )
    nodes: list[str] = Field(
        default=[],
        description=(
            "API addresses of the cluster's nodes, when those sys/ha-status lists are not "
            "reachable from where the tool runs (default: ask sys/ha-status)."
        ),
    )
    reload_unmanaged: StrictBool = Field(
        default=False,
        description="Reload undeclared mounts whose catalog entry this plan updates (or that "
        "an out-of-band re-register changed), instead of leaving them on the old binary.",
    )
    max_destroy: StrictInt = Field(
        default=MAX_DESTROY,
        ge=0,
        description="More destructive actions than this are refused even with --allow-destroy.",
    )


class PluginEntry(_Strict):
    """One catalog entry: (type, name, version) and how to run it."""

    type: PluginType
    name: Name = Field(description="Catalog name; the name of a built-in overrides it.")
    version: Version
    command: str | None = Field(
        default=None,
        description="File name inside the plugin directory (default: the name).",
        json_schema_extra={"pattern": r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._+-]*$"},
    )
    sha256: Sha256 | None = Field(
        default=None,
        description="SHA-256 of the binary; may be omitted only with plugin_directory.",
    )
    args: list[str] | None = None
    env: dict[str, SecretStr] | None = Field(
        default=None, description="Write-only on the server: never printed."
    )
    state: Literal["present", "absent"] = Field(
        default="present", description="absent: deregister this (type, name, version)."
    )
    managed_by: Literal["file", "server"] = Field(
        default="file",
        description=(
            "server: a `plugin` stanza of the server's configuration owns the entry; the file "
            "only refers to it (type, name, version, optional sha256 to expect), never writes it."
        ),
    )

    @model_validator(mode="after")
    def _server_entries_are_references(self) -> PluginEntry:
        if self.managed_by == "server":
            owned = [name for name in ("command", "args", "env") if getattr(self, name) is not None]
            if self.state != "present":
                owned.append("state")
            if owned:
                raise ValueError(
                    f"{', '.join(owned)}: the server configuration owns this entry "
                    "(managed_by: server): change its `plugin` stanza instead"
                )
        return self

    @field_validator("command")
    @classmethod
    def _command_in_plugin_directory(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value or value.startswith(("/", "\\")) or "/" in value or "\\" in value:
            raise ValueError(
                f"command {value!r} must be a file name inside the plugin directory "
                "(no path separators, not absolute)"
            )
        if ".." in value:
            raise ValueError(f"command {value!r} must not contain '..'")
        if not _COMMAND.match(value):
            raise ValueError(
                f"command {value!r} may hold only letters, digits and . _ + - "
                "(it is a file name, never run through a shell)"
            )
        return value

    @field_validator("env")
    @classmethod
    def _env_can_reach_a_process(
        cls, value: dict[str, SecretStr] | None
    ) -> dict[str, SecretStr] | None:
        # The server passes env as NAME=VALUE strings to exec: a name holding "=" would set
        # another variable, and a NUL fails the plugin's start. Values are never echoed.
        for name, secret in (value or {}).items():
            if not name or "=" in name or "\x00" in name:
                raise ValueError(
                    f"env name {name!r} must be non-empty, without '=' or NUL characters"
                )
            if "\x00" in secret.get_secret_value():
                raise ValueError(
                    f"env {name}: the value holds a NUL character, which a process "
                    "environment cannot carry"
                )
        return value

    @property
    def key(self) -> tuple[str, str, str]:
        """The catalog identity (type, name, normalised version)."""
        return (self.type, self.name, self.version)

    @property
    def effective_command(self) -> str:
        return self.command or self.name

    @property
    def present(self) -> bool:
        return self.state == "present"


class MountConfig(_Strict):
    """Tunable mount settings; only the keys given are managed."""

    default_lease_ttl: Duration | None = None
    max_lease_ttl: Duration | None = None
    force_no_cache: StrictBool | None = None
    listing_visibility: Literal["", "hidden", "unauth"] | None = None
    audit_non_hmac_request_keys: list[str] | None = None
    audit_non_hmac_response_keys: list[str] | None = None
    passthrough_request_headers: list[str] | None = None
    allowed_response_headers: list[str] | None = None
    token_type: Literal["default-service", "default-batch", "service", "batch"] | None = Field(
        default=None, description="Auth methods only: the server refuses it on secrets engines."
    )

    @model_validator(mode="after")
    def _default_within_max(self) -> MountConfig:
        # The server refuses both the enable and the tune ("would be less than backend
        # default lease TTL"); 0 means "the system's", which is not compared.
        default, maximum = self.default_lease_ttl, self.max_lease_ttl
        if default and maximum and default > maximum:
            raise ValueError(
                f"default_lease_ttl ({default}s) is above max_lease_ttl ({maximum}s): "
                "the server refuses it; lower the default or raise the max"
            )
        return self


# Tunables that are durations (whole seconds on both sides).
DURATION_CONFIG_KEYS = frozenset({"default_lease_ttl", "max_lease_ttl"})

# Tunables the server takes on auth methods only (400 "can only be modified on auth
# mounts" on a tune, silently dropped on an enable).
AUTH_ONLY_CONFIG_KEYS = frozenset({"token_type"})


# What a tunable reads as on the server when it was never set.
CONFIG_DEFAULTS: dict[str, Any] = {
    "default_lease_ttl": 0,
    "max_lease_ttl": 0,
    "force_no_cache": False,
    "listing_visibility": "",
    "audit_non_hmac_request_keys": [],
    "audit_non_hmac_response_keys": [],
    "passthrough_request_headers": [],
    "allowed_response_headers": [],
    "token_type": "default-service",
}


class Connection(_Strict):
    """A connection of a `database` mount whose plugin the file manages (never its credentials).

    The connection itself, with its connection details, is created on the server
    (`<mount>/config/<name>`); the file only says which plugin version it runs.
    """

    name: Name = Field(description="The connection's name (`<mount>/config/<name>`).")
    plugin: Name = Field(description="A `type: database` catalog entry or built-in.")
    version: Version | None = Field(
        default=None,
        description="Pin this version; default: the only declared entry, else the built-in.",
    )


# The secrets engine whose mounts hold database connections.
DATABASE_ENGINE = "database"


class Mount(_Strict):
    """One secrets engine or auth method mount."""

    path: MountPath
    plugin: Name = Field(description="Catalog name; the type comes from the section.")
    version: Version | None = Field(
        default=None,
        description="Pin this version; default: the only declared entry, else the built-in.",
    )
    description: str | None = None
    config: MountConfig | None = None
    options: dict[str, OptionValue] | None = None
    local: StrictBool | None = Field(default=None, description="Immutable after enable.")
    seal_wrap: StrictBool | None = Field(default=None, description="Immutable after enable.")
    protect: StrictBool = Field(
        default=False, description="Never disabled or replaced, whatever the flags."
    )
    moved_from: MountPath | None = Field(
        default=None, description="Move the mount from this path (sys/remount, data kept)."
    )
    connections: list[Connection] | None = Field(
        default=None,
        description="Only on mounts of the database engine: the connections whose plugin "
        "version the file manages (create each with its credentials first).",
    )

    @field_validator("options", mode="before")
    @classmethod
    def _options_are_strings(cls, value: Any) -> Any:
        # The server stores options as strings: `version: 2` and `version: "2"` are one value.
        if isinstance(value, dict):
            return {key: _option_text(item) for key, item in value.items()}
        return value


def _option_text(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


class Namespace(_Strict):
    """The mounts of one namespace and its child namespaces."""

    secrets: list[Mount] = []
    auth: list[Mount] = []
    namespaces: dict[NamespaceName, Namespace] = Field(
        default={}, description="Child namespaces: created when absent, never deleted."
    )

    def mounts(self) -> list[tuple[MountKind, Mount]]:
        """Every declared mount with the table it lives in."""
        return [("secret", m) for m in self.secrets] + [("auth", m) for m in self.auth]


class DesiredState(_Strict):
    """A desired-state file, format version 1."""

    version: FormatVersion = Field(description="Format version; only 1 exists.")
    plugin_directory: str | None = Field(
        default=None,
        min_length=1,
        description="Local copy of the server's plugin directory, relative to this file.",
    )
    settings: Settings = Settings()
    namespace: NamespacePath | None = Field(
        default=None,
        description="Bind the file to this namespace (a team's file): mounts only, no plugins.",
    )
    plugins: list[PluginEntry] = []
    secrets: list[Mount] = []
    auth: list[Mount] = []
    namespaces: dict[NamespaceName, Namespace] = Field(
        default={},
        description="Namespaces below the file's own: created when absent, never deleted; "
        "undeclared ones are left alone.",
    )

    def mounts(self) -> list[tuple[MountKind, Mount]]:
        """Every declared mount of the file's own namespace with the table it lives in."""
        return [("secret", m) for m in self.secrets] + [("auth", m) for m in self.auth]

    def namespace_tree(self) -> list[tuple[str, Namespace, tuple[str | int, ...]]]:
        """Every declared namespace below the file's own, parents first: its path from the
        file's namespace ("team1/sub/"), its declaration and where the file declares it."""
        found: list[tuple[str, Namespace, tuple[str | int, ...]]] = []

        def walk(
            prefix: str, children: dict[str, Namespace], pointer: tuple[str | int, ...]
        ) -> None:
            for name, child in sorted(children.items()):
                at = (*pointer, "namespaces", name)
                found.append((prefix + name, child, at))
                walk(prefix + name, child.namespaces, at)

        walk("", self.namespaces, ())
        return found


SCHEMA_ID = "urn:reconciler:desired-state:1"


def schema_document(
    model: type[BaseModel],
    schema_id: str,
    title: str,
    description: str,
    mode: Literal["validation", "serialization"] = "validation",
) -> dict[str, Any]:
    """A model's JSON Schema (draft 2020-12) with a header and keys in a stable order.

    `mode="serialization"` describes what the model writes (computed fields included).
    """
    generated = model.model_json_schema(mode=mode)
    body = {key: value for key, value in generated.items() if key not in {"title", "description"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id,
        "title": title,
        "description": description,
        **_sorted_keys(body),
    }


def schema_text(document: dict[str, Any]) -> str:
    """A schema document as the text committed under `schemas/`."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the desired-state file."""
    return schema_document(
        DesiredState,
        SCHEMA_ID,
        "reconciler desired state",
        "The plugin catalog and mount table an OpenBao/Vault server should have "
        "(format version 1).",
    )


def json_schema_text() -> str:
    """`json_schema()` as the text of `schemas/reconciler.schema.json`."""
    return schema_text(json_schema())


def _sorted_keys(value: Any) -> Any:
    # Sorted so that the committed schema changes only when the models do.
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


# --- live state -------------------------------------------------------------


class CatalogEntry(_Strict):
    """A catalog entry as the server reports it (never with `env`)."""

    type: PluginType
    name: str
    version: str
    builtin: bool = False
    sha256: str = ""
    command: str = ""
    args: list[str] = []
    # Registered from a `plugin` stanza of the server's configuration (OpenBao >= 2.6):
    # the server re-registers or deletes it at every SIGHUP, so the configuration owns it.
    declarative: bool = False
    # Its binary came from an OCI image the server pulled into the plugin directory.
    oci: bool = False
    # False when the token could read the catalog list only (one scoped to a namespace):
    # `command` and `args` are then unknown, never "" on the server.
    details_read: bool = True
    # Why the node that answered cannot find the entry's file in its plugin directory
    # ("" when it can): its mounts keep running, but none of them survives a reload.
    file_error: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.type, self.name, self.version)


class LiveMount(_Strict):
    """A mount as the server reports it, values normalised like the desired side."""

    kind: MountKind
    path: str
    plugin: str
    plugin_version: str = ""
    running_plugin_version: str = ""
    running_sha256: str = ""
    description: str = ""
    config: dict[str, Any] = {}
    # Settings the server reports in a mount's config that no MountConfig key manages
    # (e.g. `user_lockout_config`): left as they are, but never silently forgotten.
    unmanaged_config: dict[str, Any] = {}
    options: dict[str, str] = {}
    local: bool = False
    seal_wrap: bool = False
    accessor: str = ""
    # Whether a request through the mount reached its plugin: None when not probed
    # (built-ins are not), False for a mount whose backend failed to start, which
    # `sys/mounts` does not show (its `running_*` values stay stale).
    backend_answers: bool | None = None
    # The namespace it lives in, as a path from the root ("team1/sub/"); "" is the root.
    namespace: str = ""

    @property
    def api_path(self) -> str:
        """The path as the reload endpoint names it (`auth/` prefix for auth mounts)."""
        return api_path(self.kind, self.path)

    @property
    def reserved(self) -> bool:
        return self.path in RESERVED_PATHS[self.kind] or self.plugin in {
            "system",
            "identity",
            "cubbyhole",
            "token",
        }


class LiveConnection(_Strict):
    """A database connection as the server reports it: its plugin only, never its details."""

    mount: str  # the database mount's path, e.g. "db/"
    name: str
    plugin: str
    # "" when unpinned (it runs the unversioned entry or the built-in).
    plugin_version: str = ""
    # The namespace its database mount lives in, as a path from the root; "" is the root.
    namespace: str = ""


class ServerIdentity(_Strict):
    """What makes a server distinct, so a plan for one cannot be applied to another."""

    address: str = ""
    namespace: str = ""
    cluster_id: str = ""


class NodeRunning(_Strict):
    """What one node's own mount table says a mount runs, and whether it answers there."""

    kind: MountKind
    path: str
    running_plugin_version: str = ""
    running_sha256: str = ""
    # The namespace it lives in, as a path from the root ("" is the root).
    namespace: str = ""
    # The mount's accessor: the same mount under another path on this node than on the
    # active one is a move this node's table did not follow.
    accessor: str = ""
    # Whether a request sent to this node through the mount reached its plugin (external
    # plugins only; None when not probed or no verdict). After a failed reload on one
    # node `running_*` still names the old binary there: only this tells it is dead.
    answers: bool | None = None


class LiveNode(_Strict):
    """One node of a cluster and what it runs (each node has its own plugin processes)."""

    address: str
    active: bool = False
    mounts: list[NodeRunning] = []


class LiveState(_Strict):
    """The catalog and mount tables read from the server."""

    server: ServerIdentity = ServerIdentity()
    catalog: list[CatalogEntry] = []
    # The mounts of the namespace the client works in (`server.namespace`).
    mounts: list[LiveMount] = []
    # Every namespace below the root the walk found ("team1/", "team1/sub/").
    namespaces: list[str] = []
    # The mounts of every other namespace walked: never in a plan's mount actions, but a
    # catalog entry any of them runs is in use.
    elsewhere: list[LiveMount] = []
    # The connections of every database mount of every namespace walked (SPEC §10).
    connections: list[LiveConnection] = []
    # The nodes of a cluster with their own mount tables; empty for a single server.
    nodes: list[LiveNode] = []

    def builtin_version(self, plugin_type: str, name: str) -> str | None:
        """The built-in's own version string, or None when no such built-in exists."""
        return live_builtins(self.catalog).get((plugin_type, name))

    def moves_not_followed(self) -> list[tuple[LiveMount, str, str]]:
        """(mount, node address, old path) for each mount a node's own table still has at
        another path, with the same accessor: a `sys/remount` that node did not follow.

        OpenBao 2.7 standbys take a move only once unsealed again or restarted (they
        match table entries by UUID and never compare the path); until then they route
        the old path and answer 404 at the new one.
        """
        found = []
        for node in self.nodes:
            places = {(r.namespace, r.kind, r.path) for r in node.mounts}
            by_accessor = {(r.namespace, r.kind, r.accessor): r.path for r in node.mounts}
            for mount in (*self.mounts, *self.elsewhere):
                if not mount.accessor or (mount.namespace, mount.kind, mount.path) in places:
                    continue
                old = by_accessor.get((mount.namespace, mount.kind, mount.accessor))
                if old is not None:
                    found.append((mount, node.address, old))
        return found

    def external_sha256(self) -> dict[tuple[str, str, str], str]:
        """(type, name, version) → sha256 of every external catalog entry."""
        return {entry.key: entry.sha256 for entry in self.catalog if not entry.builtin}
