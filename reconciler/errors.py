"""Error hierarchy. Every message says the cause and, where there is one, the fix.

No message may contain the token or an `env` value.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base of every error the command line reports without a traceback."""

    # Whether the same request, sent again later, may succeed without anyone acting.
    # Callers that retry (the client, the watcher) ask this and nothing else.
    retryable: bool = False


def retryable_status(status: int | None) -> bool:
    """The one rule for HTTP outcomes: no answer, 412, 429 and 5xx but 501 are worth retrying.

    412 is a node that has not caught up with a write yet (Vault's eventual consistency);
    501 (not implemented) and every other 4xx will answer the same again.
    """
    if status is None:
        return True
    return status in {412, 429} or (status >= 500 and status != 501)


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


class PlanRefused(ReconcilerError):
    """The plan has errors or refused actions: nothing was applied."""


class ApiError(ReconcilerError):
    """The server answered with an error or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        path: str = "",
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.path = path
        self.retryable = retryable_status(status) if retryable is None else retryable


class PluginFileMissing(ApiError):
    """A catalog entry's file is not in the plugin directory of the node that answered
    (500 "error while validating the command path"): the same request answers the same
    until someone copies the file back, so it is not retried."""


class ConnectionFailed(ApiError):
    """No HTTP answer: unreachable address, refused, reset, timeout, TLS failure."""


class OutcomeUnknown(ConnectionFailed):
    """A request that changes state may have reached the server, but no answer came back.

    The transport does not send it again: re-sending a reload restarts every plugin a
    second time while the first reload may still run. Whoever sent it reads the state
    back and decides (the pass as a whole can be retried: it plans from what is live).
    """


class PermissionDenied(ApiError):
    """403: the token lacks a capability on a path."""


class Sealed(ApiError):
    """503 from a sealed server: an operator has to unseal it, retrying does not help."""

    def __init__(self, message: str, *, status: int | None = 503, path: str = "") -> None:
        super().__init__(message, status=status, path=path, retryable=False)


class ClientSettingsError(ApiError):
    """The connection settings are unusable (no token, bad address, unreadable CA file)."""

    def __init__(self, message: str, *, status: int | None = None, path: str = "") -> None:
        super().__init__(message, status=status, path=path, retryable=False)


class StaleState(ReconcilerError):
    """The live state changed since the plan was made."""

    retryable = True  # a new plan from the new state is all it takes

    def __init__(self, what: str = "") -> None:
        super().__init__(
            (
                what
                or "the server's state changed since the plan was made (or the plan was "
                "made against another server)"
            )
            + ": nothing was changed; make a new plan and review it"
        )


class LockBusy(ReconcilerError):
    """Another apply holds the lock for this server."""

    retryable = True  # the holder finishes or dies; the kernel then drops the lock
