"""Error hierarchy. Every message says the cause and, where there is one, the fix.

No message may contain the token or an `env` value.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base of every error the command line reports without a traceback."""


@dataclass(frozen=True)
class Located:
    """One problem in the desired-state file, at FILE:LINE:COL (1-based)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class DesiredStateError(ReconcilerError):
    """The desired-state file is invalid; holds every problem found, in file order."""

    def __init__(self, problems: list[Located]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class PlanFileError(ReconcilerError):
    """A saved plan cannot be used (unreadable, other format, desired file changed)."""


class ApiError(ReconcilerError):
    """The server answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.path = path

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer, 5xx or 429 (4xx are the caller's mistake)."""
        return self.status is None or self.status == 429 or self.status >= 500


class ConnectionFailed(ApiError):
    """No HTTP answer: unreachable address, refused, reset, timeout, TLS failure."""


class PermissionDenied(ApiError):
    """403: the token lacks a capability on a path."""


class Sealed(ApiError):
    """503 from a sealed server."""


class ClientSettingsError(ApiError):
    """The connection settings are unusable (no token, bad address, unreadable CA file)."""

    @property
    def transient(self) -> bool:
        return False


class StaleState(ReconcilerError):
    """The live state changed since the plan was made."""

    def __init__(self) -> None:
        super().__init__(
            "the server's state changed since the plan was made (or the plan was made against "
            "another server): nothing was changed; make a new plan"
        )


class LockBusy(ReconcilerError):
    """Another apply holds the lock for this server."""
