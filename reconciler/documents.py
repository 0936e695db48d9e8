"""The JSON documents the command line prints with `--json`, besides the plan itself.

Each has one shape whatever happens and a schema committed under `schemas/`:
`apply --json` always prints an apply document (the plan it acted on included), and
any command asked for JSON prints an error document when it stops before it has
anything else to print. A caller tells them apart by the top-level `error` key.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reconciler.model import schema_document, schema_text
from reconciler.plan import Action, ActionKind, Plan

APPLY_SCHEMA_ID = "urn:reconciler:apply:1"
ERROR_SCHEMA_ID = "urn:reconciler:error:1"
STATUS_SCHEMA_ID = "urn:reconciler:status:2"
STATUS_FORMAT_VERSION = 2


class _Document(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_serialization_defaults_required=True,
        defer_build=True,
    )


class Verdict(StrEnum):
    """How a pass ended."""

    CONVERGED = "converged"  # nothing to do, or every runnable action applied and verified
    PLAN_ERRORS = "plan-errors"  # nothing was changed
    REFUSED = "refused"  # destructive actions refused: nothing was changed
    DECLINED = "declined"  # the front end's confirmation said no: nothing was changed
    FORBIDDEN = "forbidden"  # the token may not make the plan's writes: nothing was changed
    NOT_CONVERGED = "not-converged"  # an action or the verification failed
    # A stop was asked for (SIGINT, SIGTERM): the running action finished, the rest did not
    # run, nothing was verified; a re-run converges from what is live.
    INTERRUPTED = "interrupted"


class ActionRef(_Document):
    kind: ActionKind
    target: str

    @classmethod
    def of(cls, action: Action) -> ActionRef:
        return cls(**action.ref())


class Running(_Document):
    """What a mount runs: a version and the sha256 of its binary ("" for a built-in)."""

    version: str
    sha256: str


class RollbackNode(_Document):
    """A mount as one node runs it, read after the rollback's last write."""

    node: str
    running: Running
    answers: bool
    error: str = ""


class RollbackMount(_Document):
    """One mount of a failed upgrade after the rollback: `rolled back` (written and
    verified on every node), `unchanged` (it ran its old binary everywhere: nothing was
    written) or `not restored` (`why` names the node and the reason)."""

    mount: str
    state: Literal["rolled back", "unchanged", "not restored"]
    target: Running | None
    nodes: list[RollbackNode]
    why: str = ""


class ApplyDocument(_Document):
    """What `apply --json` prints, whatever the verdict."""

    verdict: Verdict
    converged: bool
    # True when a stop was asked for before every action ran (verdict "interrupted").
    interrupted: bool = False
    address: str
    plan: Plan
    applied: list[ActionRef] = []
    skipped: list[ActionRef] = []
    failures: list[str] = []
    rolled_back: list[str] = []
    rollback: list[RollbackMount] = []
    writes: int = 0


class ErrorKind(StrEnum):
    USAGE = "usage"  # the command line itself: unknown flag, missing file...
    DESIRED_STATE = "desired-state"  # the desired-state file is invalid
    PLAN_FILE = "plan-file"  # a saved plan cannot be used
    SERVER = "server"  # the server refused or could not be reached
    REFUSED = "refused"  # policy: nothing was changed
    INTERRUPTED = "interrupted"  # stopped by SIGINT/SIGTERM before the document existed
    OTHER = "other"


class FileProblem(_Document):
    file: str
    line: int
    column: int
    message: str


class ErrorDocument(_Document):
    """What a `--json` command prints on stdout when it stops before its own document."""

    error: str
    kind: ErrorKind
    problems: list[FileProblem] = []
    exit_code: int = 1

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def apply_schema_text() -> str:
    """JSON Schema of `apply --json`, as committed in `schemas/apply.schema.json`."""
    return schema_text(
        schema_document(
            ApplyDocument,
            APPLY_SCHEMA_ID,
            "reconciler apply result",
            "The output of `reconciler apply --json`: the verdict, the plan acted on and "
            "what was applied.",
            mode="serialization",
        )
    )


def error_schema_text() -> str:
    """JSON Schema of the error document, as committed in `schemas/error.schema.json`."""
    return schema_text(
        schema_document(
            ErrorDocument,
            ERROR_SCHEMA_ID,
            "reconciler error",
            "What any `--json` command prints on stdout when it fails before its own "
            "document exists (exit code 1).",
            mode="serialization",
        )
    )


# --- status ---------------------------------------------------------------------------


class CatalogSeen(_Document):
    """The catalog entry a mount is pinned to, as one node reads it."""

    version: str
    # "" when the node cannot read the entry: `error` says why (its file is missing, or
    # the token may not read single entries: then `sha256` comes from the catalog list).
    sha256: str
    error: str


class NodeMountStatus(_Document):
    """One mount as one node has it."""

    node: str
    active: bool
    catalog: CatalogSeen
    running: Running
    answers: bool
    error: str  # why the mount does not answer on this node ("" when it does)
    # What is wrong on this node besides not answering: runs another version or binary
    # than its pin and the catalog say (e.g. left by `--no-rollback`).
    problems: list[str] = []


class MountStatusDocument(_Document):
    """A mount that runs an external plugin, or that does not answer on some node."""

    namespace: str  # a path from the root; "" is the root
    kind: str
    path: str
    plugin: str
    version: str  # the version the mount is pinned to ("" when unpinned)
    builtin: bool  # it runs (or should run) a built-in plugin
    nodes: list[NodeMountStatus]


class ConnectionStatusDocument(_Document):
    """A database connection: the plugin it names and the catalog entry its pin resolves to.

    A connection's plugin process lives on the active node (standbys forward its
    requests), so it is shown once, not per node.
    """

    namespace: str
    mount: str
    name: str
    plugin: str
    version: str  # the pin ("" when unpinned)
    runs: str  # the catalog entry it runs at its next reset ("" when none)
    sha256: str  # that entry's sha256 ("" for a built-in or none)
    problems: list[str] = []


class StatusNode(_Document):
    address: str
    active: bool


class StatusDocument(_Document):
    """What `status --json` prints (exit 0 when healthy, 2 when `healthy` is false)."""

    format_version: int = STATUS_FORMAT_VERSION
    server: str
    # The namespace the status was read in ("" is the root): it covers that namespace
    # and every namespace below it that the token can see.
    namespace: str
    namespaces: list[str]
    nodes: list[StatusNode]
    mounts: list[MountStatusDocument]
    connections: list[ConnectionStatusDocument]
    # Every mount answers on every node and nothing is flagged.
    healthy: bool
    # What the token could not read, one line each (the view is partial there).
    unreadable: list[str] = []


def status_schema_text() -> str:
    """JSON Schema of `status --json`, as committed in `schemas/status.schema.json`."""
    return schema_text(
        schema_document(
            StatusDocument,
            STATUS_SCHEMA_ID,
            "reconciler status",
            "The output of `reconciler status --json`: for every namespace it can see, every "
            "mount that runs an external plugin or does not answer, per node, and every "
            "database connection.",
            mode="serialization",
        )
    )
