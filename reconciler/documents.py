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
from reconciler.plan import Action, Plan

APPLY_SCHEMA_ID = "urn:reconciler:apply:1"
ERROR_SCHEMA_ID = "urn:reconciler:error:1"


class _Document(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_serialization_defaults_required=True,
        defer_build=True,
    )


class ActionRef(_Document):
    kind: str
    target: str

    @classmethod
    def of(cls, action: Action) -> ActionRef:
        return cls(**action.ref())


class Running(_Document):
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

    verdict: str
    converged: bool
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
