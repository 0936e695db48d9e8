"""Desired state (format version 1) and live state, as pydantic models.

The desired-state models are the source of the JSON Schema. Values are
normalised on load (versions carry one leading `v`, durations are seconds,
mount paths end in `/`) so that the planner compares like with like. The
live-state models use the same normalised value types.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    field_validator,
)

PluginType = Literal["secret", "auth", "database"]
MountKind = Literal["secret", "auth"]

# Mount tables a file may not declare: the server owns them.
RESERVED_PATHS: dict[MountKind, frozenset[str]] = {
    "secret": frozenset({"sys/", "identity/", "cubbyhole/"}),
    "auth": frozenset({"token/"}),
}

_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DURATION_UNITS = (86400, 3600, 60, 1)


def normalize_version(value: str) -> str:
    """`1.2.3` and `v1.2.3` are the same version; the `v` form is canonical."""
    if value == "":
        return ""
    if not _SEMVER.match(value):
        raise ValueError(f"invalid semantic version {value!r} (expected e.g. v1.4.0)")
    return value if value.startswith("v") else "v" + value


def parse_duration(value: Any) -> int:
    """Seconds from `3600`, `"3600"`, `"90s"`, `"15m"`, `"1h"`, `"7d"` or `"1h30m"`."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like 1h")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _DURATION.match(text)
        if text and match:
            return sum(
                int(part) * unit
                for part, unit in zip(match.groups(), _DURATION_UNITS, strict=True)
                if part
            )
    raise ValueError(f"invalid duration {value!r} (expected seconds or e.g. 90s, 15m, 1h, 7d)")


def _version(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a version must be a string, e.g. v1.4.0 (quote it in YAML)")
    return normalize_version(value)


def _mount_path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a mount path must be a string")
    path = value.strip()
    if not path or path in {"/"}:
        raise ValueError("a mount path cannot be empty")
    if path.startswith("/") or "//" in path or ".." in path.split("/"):
        raise ValueError(f"invalid mount path {value!r}: no leading '/', '//' or '..'")
    return path if path.endswith("/") else path + "/"


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
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^(\d+|(\d+d)?(\d+h)?(\d+m)?(\d+s)?)$"},
            ],
            "description": "Seconds, or a duration such as 90s, 15m, 1h, 7d.",
        }
    ),
]
MountPath = Annotated[
    str,
    BeforeValidator(_mount_path),
    WithJsonSchema({"type": "string", "minLength": 1, "description": 'Trailing "/" optional.'}),
]
Sha256 = Annotated[
    str,
    BeforeValidator(_sha256),
    WithJsonSchema({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
]
Name = Annotated[str, Field(pattern=_NAME.pattern, max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Settings(_Strict):
    """Global behaviour switches; all optional."""

    prune_plugins: bool = False
    prune_mounts: bool = False
    reload_scope: Literal["local", "global"] = "local"
    max_destroy: int = Field(default=3, ge=0)


class PluginEntry(_Strict):
    """One catalog entry: (type, name, version) and how to run it."""

    type: PluginType
    name: Name
    version: Version
    command: str | None = None
    sha256: Sha256 | None = None
    args: list[str] | None = None
    env: dict[str, SecretStr] | None = None
    state: Literal["present", "absent"] = "present"

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
        if value in {".", ".."} or ".." in value:
            raise ValueError(f"command {value!r} must not contain '..'")
        if "\x00" in value:
            raise ValueError("command must not contain NUL")
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
    force_no_cache: bool | None = None
    listing_visibility: Literal["", "hidden", "unauth"] | None = None
    audit_non_hmac_request_keys: list[str] | None = None
    audit_non_hmac_response_keys: list[str] | None = None
    passthrough_request_headers: list[str] | None = None
    allowed_response_headers: list[str] | None = None
    token_type: Literal["default-service", "default-batch", "service", "batch"] | None = None


class Mount(_Strict):
    """One secrets engine or auth method mount."""

    path: MountPath
    plugin: Name
    version: Version | None = None
    description: str | None = None
    config: MountConfig | None = None
    options: dict[str, str] | None = None
    local: bool | None = None
    seal_wrap: bool | None = None
    protect: bool = False
    moved_from: MountPath | None = None

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


class DesiredState(_Strict):
    """A desired-state file, format version 1."""

    version: Literal[1] = Field(description="Format version; only 1 exists.")
    plugin_directory: str | None = None
    settings: Settings = Settings()
    plugins: list[PluginEntry] = []
    secrets: list[Mount] = []
    auth: list[Mount] = []

    def mounts(self) -> list[tuple[MountKind, Mount]]:
        """Every declared mount with the table it lives in."""
        return [("secret", m) for m in self.secrets] + [("auth", m) for m in self.auth]


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
    options: dict[str, str] = {}
    local: bool = False
    seal_wrap: bool = False
    accessor: str = ""

    @property
    def api_path(self) -> str:
        """The path as the reload endpoint names it (`auth/` prefix for auth mounts)."""
        return f"auth/{self.path}" if self.kind == "auth" else self.path

    @property
    def reserved(self) -> bool:
        return self.path in RESERVED_PATHS[self.kind] or self.plugin in {
            "system",
            "identity",
            "cubbyhole",
            "token",
        }


class ServerIdentity(_Strict):
    """What makes a server distinct, so a plan for one cannot be applied to another."""

    address: str = ""
    namespace: str = ""
    cluster_id: str = ""


class LiveState(_Strict):
    """The catalog and mount tables read from the server."""

    server: ServerIdentity = ServerIdentity()
    catalog: list[CatalogEntry] = []
    mounts: list[LiveMount] = []

    def builtin_version(self, plugin_type: str, name: str) -> str | None:
        """The built-in's own version string, or None when no such built-in exists."""
        for entry in self.catalog:
            if entry.builtin and entry.type == plugin_type and entry.name == name:
                return entry.version
        return None
