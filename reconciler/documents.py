"""The JSON documents the command line prints with `--json`, besides the plan itself.

Each has one shape whatever happens and a schema committed under `schemas/`:
`apply --json` always prints an apply document (the plan it acted on included), and
any command asked for JSON prints an error document when it stops before it has
anything else to print. A caller tells them apart by the top-level `error` key.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from reconciler.model import schema_document, schema_text
from reconciler.plan import Action, ActionKind, Plan

APPLY_SCHEMA_ID = "urn:reconciler:apply:1"
ERROR_SCHEMA_ID = "urn:reconciler:error:1"


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
