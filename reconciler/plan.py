"""A plan is data: actions with before/after and a reason, errors, warnings, a fingerprint.

The same versioned JSON document is printed by `plan --json` and saved by
`plan --out`; `apply PLAN.json` loads it back. It never holds `env` values:
those are read again from the desired file the plan names.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    computed_field,
    model_validator,
)

from reconciler import __version__
from reconciler.defaults import MAX_DESTROY
from reconciler.model import (
    LiveState,
    MountKind,
    PluginType,
    ServerIdentity,
    schema_document,
    schema_text,
)

# MAJOR.MINOR: a minor version only adds fields to the plan and its actions, and a
# reader of the same major ignores the ones it does not know; the parameters of an
# action kind change only with a major version.
PLAN_FORMAT_VERSION = "2.3"
_PLAN_FORMAT_MAJOR = PLAN_FORMAT_VERSION.split(".", maxsplit=1)[0]


class ActionKind(StrEnum):
    CREATE_NAMESPACE = "create-namespace"
    REGISTER = "register"
    UPDATE = "update"
    REPLACE = "replace"
    MOVE = "move"
    ENABLE = "enable"
    TUNE = "tune"
    RELOAD = "reload"
    DISABLE = "disable"
    DEREGISTER = "deregister"
    REPIN = "repin"
    RESET = "reset"


class Safety(StrEnum):
    SAFE = "safe"
    DISRUPTIVE = "disruptive"
    DESTRUCTIVE = "destructive"


class Stage(StrEnum):
    """Converge first, verify, then clean up (old versions go only after the new ones work)."""

    CONVERGE = "converge"
    CLEANUP = "cleanup"


@dataclass(frozen=True)
class KindRule:
    """What follows from an action's kind alone."""

    symbol: str
    safety: Safety
    # The stages an action of this kind may run in; the first is its default.
    stages: tuple[Stage, ...]
    # Position inside its stage; the executor runs actions in plan order.
    order: int


_CONVERGE = (Stage.CONVERGE,)
_CLEANUP = (Stage.CLEANUP,)
KIND_RULES: dict[ActionKind, KindRule] = {
    # A declared namespace exists before anything is mounted in it.
    ActionKind.CREATE_NAMESPACE: KindRule("+", Safety.SAFE, _CONVERGE, -1),
    ActionKind.REGISTER: KindRule("+", Safety.SAFE, _CONVERGE, 0),
    ActionKind.UPDATE: KindRule("~", Safety.SAFE, _CONVERGE, 0),
    ActionKind.REPLACE: KindRule("±", Safety.DESTRUCTIVE, _CONVERGE, 1),
    ActionKind.MOVE: KindRule("→", Safety.SAFE, _CONVERGE, 2),
    ActionKind.ENABLE: KindRule("+", Safety.SAFE, _CONVERGE, 3),
    ActionKind.TUNE: KindRule("~", Safety.SAFE, _CONVERGE, 4),
    ActionKind.DISABLE: KindRule("-", Safety.DESTRUCTIVE, _CLEANUP, 5),
    ActionKind.DEREGISTER: KindRule("-", Safety.SAFE, _CLEANUP, 6),
    # A reload back to a built-in waits until cleanup has deregistered its shadow.
    ActionKind.RELOAD: KindRule("↻", Safety.DISRUPTIVE, (Stage.CONVERGE, Stage.CLEANUP), 7),
    # Database connections move once their new entry is registered; the old one goes in cleanup.
    ActionKind.REPIN: KindRule("⇢", Safety.DISRUPTIVE, _CONVERGE, 8),
    ActionKind.RESET: KindRule("↻", Safety.DISRUPTIVE, _CONVERGE, 9),
}
SYMBOLS: dict[ActionKind, str] = {kind: rule.symbol for kind, rule in KIND_RULES.items()}
KIND_ORDER: dict[ActionKind, int] = {kind: rule.order for kind, rule in KIND_RULES.items()}


class ReasonCode(StrEnum):
    """Why an action is planned, for machines; `reason` says it for people."""

    NAMESPACE_MISSING = "namespace-missing"
    NOT_REGISTERED = "not-registered"
    REGISTRATION_DIFFERS = "registration-differs"
    REPLACE_REQUESTED = "replace-requested"
    DATABASE_PLUGIN_UPDATED = "database-plugin-updated"
    CONNECTION_PIN_DIFFERS = "connection-pin-differs"
    CONNECTION_NEWLY_SHADOWED = "connection-newly-shadowed"
    NOT_MOUNTED = "not-mounted"
    IMMUTABLE_FIELD_CHANGED = "immutable-field-changed"
    MOVED_FROM = "moved-from"
    TUNED_VALUES_DIFFER = "tuned-values-differ"
    RUNNING_PLUGIN_DIFFERS = "running-plugin-differs"
    NODE_RUNS_OTHER_BINARY = "node-runs-other-binary"
    BACKEND_NOT_ANSWERING = "backend-not-answering"
    PLUGIN_VERSION_PINNED = "plugin-version-pinned"
    CANARY = "canary"
    BUILTIN_AFTER_CLEANUP = "builtin-after-cleanup"
    UNMANAGED_MOUNT_PRUNED = "unmanaged-mount-pruned"
    DECLARED_ABSENT = "declared-absent"
    UNMANAGED_PLUGIN_PRUNED = "unmanaged-plugin-pruned"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class _Readable(BaseModel):
    """A part of the plan that a later 2.x may add fields to: unknown ones are ignored."""

    # Every field is written (the schema describes the written document).
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        json_schema_serialization_defaults_required=True,
        defer_build=True,
    )


class FieldChange(_Data):
    """One changed field of an entry; sensitive values are never stored."""

    field: str
    before: Any = None
    after: Any = None


# --- parameters: what the executor sends, per kind ----------------------------------


class RegistrationParams(_Data):
    """register/update: the catalog entry, minus env values (only whether there are any)."""

    type: PluginType
    name: str
    version: str
    command: str
    sha256: str
    args: list[str]
    has_env: bool


class NamespaceParams(_Data):
    """create-namespace: `name` is created inside `parent` (a path from the root; "" is the
    root), one level per request as the server requires."""

    parent: str
    name: str


class DeregistrationParams(_Data):
    type: PluginType
    name: str
    version: str


class EnableParams(_Data):
    """enable, and replace (the live mount at `path` is disabled first).

    `plugin_version` None lets the server run the built-in; the other optional
    fields are sent only when the file declares them.
    """

    kind: MountKind
    path: str
    plugin: str
    plugin_version: str | None = None
    description: str | None = None
    config: dict[str, Any] | None = None
    options: dict[str, str] | None = None
    local: bool | None = None
    seal_wrap: bool | None = None
    # The namespace it is sent in, as a path from the root; None: the client's namespace.
    namespace: str | None = None


class MoveParams(_Data):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    kind: MountKind
    from_path: str = Field(alias="from")
    to: str
    # The namespace it is sent in, as a path from the root; None: the client's namespace.
    namespace: str | None = None


class TuneParams(_Data):
    kind: MountKind
    path: str
    # Only the changed keys.
    body: dict[str, Any]
    # The namespace it is sent in, as a path from the root; None: the client's namespace.
    namespace: str | None = None


class MountParams(_Data):
    """disable: the mount to remove."""

    kind: MountKind
    path: str
    # The namespace it is sent in, as a path from the root; None: the client's namespace.
    namespace: str | None = None


# How far a reload reaches: "global" every node of a cluster, "" the node it is sent to.
ReloadScope = Literal["", "global"]


class ReloadParams(_Data):
    """Mounts by API path (`auth/` prefixed), or a database plugin by name."""

    mounts: list[str] | None = None
    plugin: str | None = None
    # "global": every node of a cluster; "": this node.
    scope: ReloadScope = ""
    # The namespace it is sent in, as a path from the root, with mount paths relative to it
    # (the server reloads nothing for a path that crosses namespaces); None: the client's.
    namespace: str | None = None
    # A node's API address: the reload is sent to that node only (its drift), else "".
    node: str = ""

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.mounts is None) == (self.plugin is None):
            raise ValueError("a reload names either mounts or a plugin")
        return self


class ConnectionPinParams(_Data):
    """repin: write `plugin_version` alone to `<mount>/config/<name>` (the details stay)."""

    mount: str
    name: str
    plugin: str
    version: str
    # What the connection was pinned to: the version a rollback re-pins.
    previous_version: str
    # The namespace it is sent in, as a path from the root; None: the client's namespace.
    namespace: str | None = None


class ConnectionParams(_Data):
    """reset: restart connection `name` of `mount` on the binary the catalog names now."""

    mount: str
    name: str
    plugin: str
    # The namespace it is sent in, as a path from the root; None: the client's namespace.
    namespace: str | None = None


# --- actions --------------------------------------------------------------------------


class _Action(_Readable):
    kind: ActionKind
    target: str
    stage: Stage = Stage.CONVERGE
    reason: str
    reason_code: ReasonCode
    changes: list[FieldChange] = []
    # Where the changed object lives, as a path from the root ("" is the root), whichever
    # file form made the plan: a catalog entry at the root, a mount or a connection in its
    # namespace, a namespace in its parent (format 2.3).
    namespace: str = ""

    @model_validator(mode="before")
    @classmethod
    def _default_stage(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stage" not in data:
            kind = data.get("kind", cls.model_fields["kind"].default)
            if kind in KIND_RULES:
                return {**data, "stage": KIND_RULES[ActionKind(kind)].stages[0]}
        return data

    @model_validator(mode="after")
    def _stage_of_kind(self) -> Self:
        if self.stage not in KIND_RULES[self.kind].stages:
            raise ValueError(f"a {self.kind} action cannot run in the {self.stage} stage")
        return self

    def ref(self) -> dict[str, str]:
        """Kind and target: how a result document names the action."""
        return {"kind": self.kind.value, "target": self.target}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def safety(self) -> Safety:
        """Follows from the kind: a saved plan cannot relabel it."""
        return KIND_RULES[self.kind].safety

    @property
    def symbol(self) -> str:
        return KIND_RULES[self.kind].symbol


class CreateNamespaceAction(_Action):
    kind: Literal[ActionKind.CREATE_NAMESPACE] = ActionKind.CREATE_NAMESPACE
    params: NamespaceParams


class RegisterAction(_Action):
    kind: Literal[ActionKind.REGISTER] = ActionKind.REGISTER
    params: RegistrationParams


class UpdateAction(_Action):
    kind: Literal[ActionKind.UPDATE] = ActionKind.UPDATE
    params: RegistrationParams


class DeregisterAction(_Action):
    kind: Literal[ActionKind.DEREGISTER] = ActionKind.DEREGISTER
    params: DeregistrationParams


class EnableAction(_Action):
    kind: Literal[ActionKind.ENABLE] = ActionKind.ENABLE
    params: EnableParams


class ReplaceAction(_Action):
    kind: Literal[ActionKind.REPLACE] = ActionKind.REPLACE
    params: EnableParams


class MoveAction(_Action):
    kind: Literal[ActionKind.MOVE] = ActionKind.MOVE
    params: MoveParams


class TuneAction(_Action):
    kind: Literal[ActionKind.TUNE] = ActionKind.TUNE
    params: TuneParams


class DisableAction(_Action):
    kind: Literal[ActionKind.DISABLE] = ActionKind.DISABLE
    params: MountParams


class ReloadAction(_Action):
    kind: Literal[ActionKind.RELOAD] = ActionKind.RELOAD
    params: ReloadParams
    # The first mount moved onto a new binary that other mounts of this plan move onto
    # too: the executor verifies it (running sha256 and a probe) before going on, so a
    # broken binary takes down one mount, not all of them.
    canary: bool = False


class RepinAction(_Action):
    kind: Literal[ActionKind.REPIN] = ActionKind.REPIN
    params: ConnectionPinParams


class ResetAction(_Action):
    kind: Literal[ActionKind.RESET] = ActionKind.RESET
    params: ConnectionParams


Action = Annotated[
    CreateNamespaceAction
    | RegisterAction
    | UpdateAction
    | DeregisterAction
    | EnableAction
    | ReplaceAction
    | MoveAction
    | TuneAction
    | DisableAction
    | ReloadAction
    | RepinAction
    | ResetAction,
    Field(discriminator="kind"),
]
"""One step of the plan: its kind decides the shape of `params`, its safety and stages."""


@functools.cache
def _action_adapter() -> TypeAdapter[Action]:
    # Built on first use: a plan that parses no action (every `plan`) never pays for it.
    return TypeAdapter[Action](Action)


def parse_action(data: Any) -> Action:
    """An action from its JSON form (a mapping); ValidationError when params do not fit the kind."""
    return _action_adapter().validate_python(data)


class Problem(_Data):
    """A plan error (never applicable) or a warning (information)."""

    target: str
    message: str


class PlanNode(_Readable):
    """A node the plan's live state was read from (a cluster lists each; a single server none)."""

    address: str
    active: bool = False


class NotAnswering(_Data):
    """A live mount whose backend does not answer, why, and what brings it back."""

    # As the plan names mounts ("auth/ldap/"), with the namespace when not the client's.
    target: str
    kind: MountKind
    path: str
    namespace: str = ""
    plugin: str
    cause: str
    fix: str


class PreflightStatus(StrEnum):
    """Where a mount stands before an upgrade to a release without its built-in."""

    UNREPLACED = "unreplaced"  # it runs the built-in and the plan leaves it there
    MOVED_BY_THIS_PLAN = "moved-by-this-plan"  # the plan moves it onto a declared replacement
    RUNS_REPLACEMENT = "runs-replacement"  # it already runs an external plugin of that name


class PreflightMount(_Data):
    """A mount whose plugin is a built-in the `server_version` release does not ship."""

    target: str
    kind: MountKind
    path: str
    namespace: str = ""
    plugin: str
    status: PreflightStatus
    # The external version it runs, or is moved onto ("" unversioned or none).
    replacement: str = ""


class DesiredSource(_Data):
    path: str = ""
    sha256: str = ""


class Plan(_Readable):
    """The result of `planner.plan`: pure data, serialisable, applied by the executor."""

    format_version: str = PLAN_FORMAT_VERSION
    reconciler_version: str = __version__
    desired: DesiredSource = DesiredSource()
    server: ServerIdentity = ServerIdentity()
    # The namespaces the plan manages, as paths from the root ("" is the root): the
    # server's own first, then those the file declares below it.
    namespaces: list[str] = []
    # The nodes of a cluster, the active one first (empty on a single server): how far a
    # global reload reaches. Not part of the fingerprint: a failover changes no action.
    nodes: list[PlanNode] = []
    fingerprint: str = ""
    max_destroy: int = MAX_DESTROY
    # `--replace TYPE/NAME/VERSION` the plan was made with, so it can be made again.
    replace: list[str] = []
    actions: list[Action] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    # Every mount of every namespace read whose backend does not answer (format 2.3).
    not_answering: list[NotAnswering] = []
    # The OpenBao release `--server-version` checked the mounts against ("" when none):
    # each mount relying on a built-in that release does not ship is an error or a warning.
    server_version: str = ""
    # With `server_version`: every mount named after a built-in that release does not
    # ship, and where it stands (only `unreplaced` and `moved-by-this-plan` are problems).
    preflight: list[PreflightMount] = []

    @property
    def destructive(self) -> list[Action]:
        return [a for a in self.actions if a.safety is Safety.DESTRUCTIVE]

    def refusals(self, allow_destroy: bool) -> dict[int, str]:
        """Index of each refused action → why, for the given `--allow-destroy`."""
        destructive = [i for i, a in enumerate(self.actions) if a.safety is Safety.DESTRUCTIVE]
        if not destructive:
            return {}
        if len(destructive) > self.max_destroy:
            why = (
                f"{len(destructive)} destructive actions exceed max_destroy={self.max_destroy}; "
                "refused even with --allow-destroy"
            )
            return dict.fromkeys(destructive, why)
        if not allow_destroy:
            return dict.fromkeys(destructive, "destructive: needs --allow-destroy")
        return {}

    def to_json(self) -> str:
        """The stable JSON document (`plan --json` and `plan --out`)."""
        return self.model_dump_json(indent=2, by_alias=True, exclude_none=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Load a saved plan; another major format version is refused."""
        raw = json.loads(text)
        found = raw.get("format_version") if isinstance(raw, dict) else None
        if not isinstance(found, str) or found.split(".")[0] != _PLAN_FORMAT_MAJOR:
            if found is None:
                raise ValueError(
                    f"not a reconciler plan (no format_version; expected {PLAN_FORMAT_VERSION})"
                )
            raise ValueError(
                f"a plan of format version {found}, which this reconciler "
                f"({__version__}, format {PLAN_FORMAT_VERSION}) cannot apply: make the plan "
                "again with `reconciler plan --out`"
            )
        return cls.model_validate(raw)


def fingerprint(live: LiveState) -> str:
    """Hash of the normalised live state and the server identity (order-independent)."""
    document: dict[str, Any] = {
        "server": live.server.model_dump(),
        "catalog": sorted(
            # A missing file is what a plan warns about, not a state to pin (like a dead
            # backend): a plan made while it was missing still applies once it is back.
            (e.model_dump(exclude={"file_error"}) for e in live.catalog),
            key=lambda e: (e["type"], e["name"], e["version"]),
        ),
        "mounts": sorted(
            # Whether a backend answers is what a plan reacts to, not a state to pin: a
            # plan made while a mount was dead still applies once it answers again. The
            # server identity names the mounts' namespace.
            (
                m.model_dump(exclude={"accessor", "backend_answers", "namespace"})
                for m in live.mounts
            ),
            key=lambda m: (m["kind"], m["path"]),
        ),
    }
    if live.namespaces or live.elsewhere:
        # Every namespace's mounts decide what the catalog may lose; a server without
        # namespaces keeps the fingerprint it always had.
        document["namespaces"] = sorted(live.namespaces)
        document["elsewhere"] = sorted(
            (m.model_dump(exclude={"accessor", "backend_answers"}) for m in live.elsewhere),
            key=lambda m: (m["namespace"], m["kind"], m["path"]),
        )
    if live.connections:
        # Only when there are any: a server without database connections keeps its fingerprint.
        document["connections"] = sorted(
            (c.model_dump() for c in live.connections),
            key=lambda c: (c["namespace"], c["mount"], c["name"]),
        )
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


PLAN_SCHEMA_ID = f"urn:reconciler:plan:{_PLAN_FORMAT_MAJOR}"


def plan_schema_text() -> str:
    """JSON Schema of the plan document, as committed in `schemas/plan.schema.json`."""
    return schema_text(
        schema_document(
            Plan,
            PLAN_SCHEMA_ID,
            "reconciler plan",
            "The output of `reconciler plan --json` and `plan --out` (format version "
            f"{PLAN_FORMAT_VERSION}).",
            mode="serialization",
        )
    )
