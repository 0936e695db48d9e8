"""A plan is data: actions with before/after and a reason, errors, warnings, a fingerprint.

The same versioned JSON document is printed by `plan --json` and saved by
`plan --out`; `apply PLAN.json` loads it back. It never holds `env` values:
those are read again from the desired file the plan names.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from reconciler import __version__
from reconciler.model import LiveState, ServerIdentity, schema_document, schema_text

PLAN_FORMAT_VERSION = 1


class ActionKind(StrEnum):
    REGISTER = "register"
    UPDATE = "update"
    REPLACE = "replace"
    MOVE = "move"
    ENABLE = "enable"
    TUNE = "tune"
    RELOAD = "reload"
    DISABLE = "disable"
    DEREGISTER = "deregister"


class Safety(StrEnum):
    SAFE = "safe"
    DISRUPTIVE = "disruptive"
    DESTRUCTIVE = "destructive"


class Stage(StrEnum):
    """Converge first, verify, then clean up (old versions go only after the new ones work)."""

    CONVERGE = "converge"
    CLEANUP = "cleanup"


SYMBOLS: dict[ActionKind, str] = {
    ActionKind.REGISTER: "+",
    ActionKind.ENABLE: "+",
    ActionKind.UPDATE: "~",
    ActionKind.TUNE: "~",
    ActionKind.REPLACE: "±",
    ActionKind.MOVE: "→",
    ActionKind.RELOAD: "↻",
    ActionKind.DISABLE: "-",
    ActionKind.DEREGISTER: "-",
}

# Position of each kind inside its stage; the executor runs actions in plan order.
KIND_ORDER: dict[ActionKind, int] = {
    ActionKind.REGISTER: 0,
    ActionKind.UPDATE: 0,
    ActionKind.REPLACE: 1,
    ActionKind.MOVE: 2,
    ActionKind.ENABLE: 3,
    ActionKind.TUNE: 4,
    ActionKind.DISABLE: 5,
    ActionKind.DEREGISTER: 6,
    ActionKind.RELOAD: 7,
}


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldChange(_Data):
    """One changed field of an entry; sensitive values are never stored."""

    field: str
    before: Any = None
    after: Any = None


class Action(_Data):
    """One step of the plan.

    `params` holds what the executor sends, per kind:
    - register/update: type, name, version, command, sha256, args, has_env
    - deregister: type, name, version
    - enable: kind, path, plugin, plugin_version (absent = let the built-in run),
      description, config, options, local, seal_wrap
    - replace: the enable params (the live mount at `path` is disabled first)
    - move: kind, from, to
    - tune: kind, path, body (only the changed keys)
    - reload: mounts (API paths, `auth/` prefixed) or plugin (database plugins), scope
    - disable: kind, path
    """

    kind: ActionKind
    target: str
    safety: Safety
    stage: Stage = Stage.CONVERGE
    reason: str
    changes: list[FieldChange] = []
    params: dict[str, Any] = {}

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.kind]


class Problem(_Data):
    """A plan error (never applicable) or a warning (information)."""

    target: str
    message: str


class DesiredSource(_Data):
    path: str = ""
    sha256: str = ""


class Plan(_Data):
    """The result of `planner.plan`: pure data, serialisable, applied by the executor."""

    format_version: int = PLAN_FORMAT_VERSION
    reconciler_version: str = __version__
    desired: DesiredSource = DesiredSource()
    server: ServerIdentity = ServerIdentity()
    fingerprint: str = ""
    max_destroy: int = 3
    # `--replace TYPE/NAME/VERSION` the plan was made with, so it can be made again.
    replace: list[str] = []
    actions: list[Action] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []

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
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Load a saved plan; a different format version is refused."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format_version") != PLAN_FORMAT_VERSION:
            raise ValueError(
                f"not a reconciler plan of format version {PLAN_FORMAT_VERSION}"
                f" (found {raw.get('format_version') if isinstance(raw, dict) else type(raw)})"
            )
        return cls.model_validate(raw)


def fingerprint(live: LiveState) -> str:
    """Hash of the normalised live state and the server identity (order-independent)."""
    document = {
        "server": live.server.model_dump(),
        "catalog": sorted(
            (e.model_dump() for e in live.catalog),
            key=lambda e: (e["type"], e["name"], e["version"]),
        ),
        "mounts": sorted(
            (m.model_dump(exclude={"accessor"}) for m in live.mounts),
            key=lambda m: (m["kind"], m["path"]),
        ),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


PLAN_SCHEMA_ID = f"urn:reconciler:plan:{PLAN_FORMAT_VERSION}"


def plan_schema_text() -> str:
    """JSON Schema of the plan document, as committed in `schemas/plan.schema.json`."""
    return schema_text(
        schema_document(
            Plan,
            PLAN_SCHEMA_ID,
            "reconciler plan",
            "The output of `reconciler plan --json` and `plan --out` (format version "
            f"{PLAN_FORMAT_VERSION}).",
        )
    )
