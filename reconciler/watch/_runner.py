"""The pass runner: one watch pass around `reconcile.run_pass`, and what passes remember.

A pass reads the file (keeping the last good content when an edit is invalid), builds
a client (the token is read afresh and renewed), runs the one reconcile pass under the
per-server lock, and accounts for the outcome in the log and the metrics. Between
passes it remembers only the last good desired state, the upgrades set aside after a
failed verification, and what it last reported, so as not to repeat itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import defaults, reconcile
from reconciler.errors import ApiError, LockBusy, PermissionDenied, ReconcilerError
from reconciler.executor import ApplyOptions, ProgressEvent
from reconciler.loader import LoadedDesired, load_desired
from reconciler.lock import server_lock
from reconciler.planner import HeldUpgrade
from reconciler.reconcile import PassHooks, PassInput, Verdict
from reconciler.render import progress_line
from reconciler.watch._metrics import Metrics

if TYPE_CHECKING:
    from reconciler.client import Client
    from reconciler.model import ServerIdentity

log = logging.getLogger("reconciler.watch")

ClientFactory = Callable[[], "Client"]


@dataclass(frozen=True)
class WatchOptions:
    """How the watcher runs; every duration is in seconds."""

    interval: float = defaults.WATCH_INTERVAL
    allow_destroy: bool = False
    debounce: float = defaults.WATCH_DEBOUNCE
    max_file_size: int = defaults.MAX_FILE_SIZE
    backoff_initial: float = defaults.WATCH_BACKOFF_INITIAL
    backoff_max: float = defaults.WATCH_BACKOFF_MAX
    lock_timeout: float = defaults.WATCH_LOCK_TIMEOUT
    check_plugin_files: bool = True
    # Watched too: a replaced token (an expired one renewed by an agent) wakes the watcher.
    token_file: Path | None = None


@dataclass
class PassOutcome:
    """What one watch pass did. `ok` is what health and scheduling look at; a failed
    pass is `retryable` when trying again later may succeed without anyone acting."""

    number: int
    reason: str
    ok: bool = False
    retryable: bool = True
    stopped: bool = False
    generation: int = 0
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    held: list[HeldUpgrade] = field(default_factory=list)
    drift: bool = False
    desired_error: str = ""
    duration: float = 0.0


@dataclass(frozen=True)
class _Hold:
    """What a held upgrade's next attempt waits for a change of."""

    file: str  # the desired file's content hash when it failed
    binary: str  # the sha256 the file's entry names (the binary's, when computed)
    catalog: tuple[str, str] | None  # the catalog entry's sha256 and command (None: absent)
    since: int  # the pass that failed


def held_name(upgrade: HeldUpgrade) -> str:
    """How logs, metrics and /healthz name a held upgrade."""
    kind, name, version, sha256 = upgrade
    return f"{kind}/{name} {version or '(unversioned)'} (sha256 {sha256[:12]}…)"


class Stopping(Exception):
    """Raised between two actions when a stop was asked for."""


class _PassFailed(Exception):
    """A pass cannot go on, and trying again without an edit will not help."""


class DesiredFile:
    """The desired-state file as the passes see it: the last good content stays in force."""

    def __init__(self, path: Path, options: WatchOptions, metrics: Metrics) -> None:
        self.path = Path(path)
        self._options = options
        self._metrics = metrics
        self.current: LoadedDesired | None = None
        self.generation = 0
        self.seen_hash: str | None = None
        self._reported_invalid: str | None = None

    def content_changed(self) -> bool:
        """Whether the file reads differently from what the last pass read."""
        return self._hash() != self.seen_hash

    def refresh(self, outcome: PassOutcome) -> LoadedDesired:
        """Load the file; an invalid one is reported once and the last good one stays."""
        self.seen_hash = self._hash()
        try:
            loaded = load_desired(
                self.path,
                max_file_size=self._options.max_file_size,
                check_plugin_files=self._options.check_plugin_files,
            )
        except (OSError, ReconcilerError) as error:
            return self._keep_last_good(outcome, _describe_load_error(self.path, error))
        self._reported_invalid = None
        if self.current is None or loaded.sha256 != self.current.sha256:
            self.generation += 1
            log.info(
                "desired state generation %d loaded from %s (sha256 %s)",
                self.generation,
                self.path,
                loaded.sha256.removeprefix("sha256:")[:12],
                extra={"fields": {"pass": outcome.number, "generation": self.generation}},
            )
        self.current = loaded
        self._metrics.desired_loaded(self.generation, valid=True)
        return loaded

    def _keep_last_good(self, outcome: PassOutcome, message: str) -> LoadedDesired:
        outcome.desired_error = message
        self._metrics.desired_loaded(self.generation, valid=False)
        if self._reported_invalid != self.seen_hash:
            self._reported_invalid = self.seen_hash
            keeping = (
                f"; keeping generation {self.generation} in force"
                if self.current is not None
                else "; nothing is applied until it is fixed"
            )
            log.error(
                "%s is invalid%s:\n%s",
                self.path,
                keeping,
                message,
                extra={"fields": {"pass": outcome.number, "problems": message.splitlines()}},
            )
        if self.current is None:
            raise _PassFailed(f"{self.path}: no valid desired state yet")
        return self.current

    def _hash(self) -> str | None:
        try:
            with self.path.open("rb") as handle:
                data = handle.read(self._options.max_file_size + 1)
        except OSError:
            return None
        return hashlib.sha256(data).hexdigest()


class PassRunner:
    """Runs watch passes one at a time; `stopping` is asked between two actions."""

    def __init__(
        self,
        path: Path,
        client_factory: ClientFactory,
        options: WatchOptions,
        metrics: Metrics,
        stopping: Callable[[], bool],
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.desired = DesiredFile(path, options, metrics)
        self._client_factory = client_factory
        self._stopping = stopping
        self._pass_lock = threading.Lock()
        self._passes = 0
        self._failures_in_row = 0
        self._converged_hash: str | None = None
        self._held: dict[HeldUpgrade, _Hold] = {}
        self._last_skipped: list[str] = []
        self._warned_lookup = False

    def run_pass(self, reason: str = "manual") -> PassOutcome:
        """Read the file, the token and the server, plan, apply; never raises for a failure."""
        with self._pass_lock:
            self._passes += 1
            outcome = PassOutcome(number=self._passes, reason=reason)
            started = time.monotonic()
            fields: dict[str, Any] = {"pass": outcome.number, "reason": reason}
            log.debug("pass %d started (%s)", outcome.number, reason, extra={"fields": fields})
            try:
                self._pass(outcome)
                outcome.ok = not outcome.failures
            except Stopping:
                outcome.stopped = True
            except _PassFailed as error:
                outcome.failures.append(str(error))
                outcome.retryable = False
            except ReconcilerError as error:
                outcome.failures.append(str(error))
                outcome.retryable = error.retryable
            except Exception as error:
                # A daemon must outlive surprises; the next pass starts from scratch.
                log.exception("pass %d: unexpected error", outcome.number)
                outcome.failures.append(f"unexpected error: {type(error).__name__}")
            outcome.duration = time.monotonic() - started
            self._finish(outcome)
            return outcome

    def _pass(self, outcome: PassOutcome) -> None:
        loaded = self.desired.refresh(outcome)
        outcome.generation = self.desired.generation
        client = self._client_factory()
        try:
            self._renew_token(client)
            self._release_changed(client, loaded)
            self._reconcile(client, loaded, outcome)
        finally:
            close = getattr(client, "close", None)
            if callable(close):
                close()

    def _reconcile(self, client: Client, loaded: LoadedDesired, outcome: PassOutcome) -> None:
        options = ApplyOptions(
            allow_destroy=self.options.allow_destroy,
            skip_refused=True,
            rollback_on_failure=True,
            held=tuple(sorted(self._held)),
        )
        hooks = PassHooks(progress=self._progress(outcome), lock=self._locked)
        result = reconcile.run_pass(client, PassInput(loaded), options, hooks)
        outcome.skipped = [str(refusal) for refusal in result.refused]
        outcome.drift = bool(result.runnable) and self._converged_hash == loaded.sha256
        if outcome.drift:
            log.warning(
                "drift: %s needed although the file did not change",
                _count(len(result.runnable), "action"),
                extra={"fields": {"pass": outcome.number, "actions": len(result.runnable)}},
            )
        if result.verdict is Verdict.PLAN_ERRORS:
            raise _PassFailed(
                "the plan has errors, nothing was applied:\n"
                + "\n".join(f"  {line}" for line in result.problems())
            )
        outcome.failures.extend(result.problems())
        outcome.rolled_back.extend(result.rolled_back)
        new_held = [h for h in result.failed_upgrades if h not in self._held]
        for upgrade in new_held:
            self._held[upgrade] = _Hold(
                file=loaded.sha256,
                binary=_file_sha256(loaded, upgrade),
                catalog=_catalog_entry(client, upgrade),
                since=outcome.number,
            )
        outcome.held = new_held

    def _release_changed(self, client: Client, loaded: LoadedDesired) -> None:
        """Try a held upgrade again, once, when its file, binary or catalog entry changed."""
        for upgrade, hold in list(self._held.items()):
            if loaded.sha256 != hold.file:
                why = "the desired file changed"
            elif _file_sha256(loaded, upgrade) != hold.binary:
                why = "its binary's sha256 changed"
            elif _catalog_entry(client, upgrade) != hold.catalog:
                why = "its catalog entry changed"
            else:
                continue
            del self._held[upgrade]
            log.info("upgrade to %s is tried again: %s", held_name(upgrade), why)

    @property
    def held(self) -> list[str]:
        """The upgrades held after a failure, by name."""
        return [held_name(upgrade) for upgrade in sorted(self._held)]

    def _progress(self, outcome: PassOutcome) -> Callable[[ProgressEvent], None]:
        def report(event: ProgressEvent) -> None:
            action = event.action
            if event.status == "start" and self._stopping():
                # The only safe place to stop: between two actions, never inside one.
                raise Stopping
            line = progress_line(event)
            if line is None:
                return
            if action is None:
                log.debug("pass %d: %s", outcome.number, line)
                return
            fields = {
                "pass": outcome.number,
                "action": action.kind.value,
                "target": action.target,
                "duration": round(event.seconds, 3),
            }
            if event.status == "done":
                outcome.applied.append(f"{action.kind.value} {action.target}")
            level = logging.INFO if event.status == "done" else logging.WARNING
            log.log(level, "%s %s", action.symbol, line, extra={"fields": fields})

        return report

    # --- the token and the lock --------------------------------------------------------

    def _renew_token(self, client: Client) -> None:
        """Renew the token when it is renewable; warn when it will expire for good."""
        try:
            info = client.lookup_self()
        except PermissionDenied as error:
            if not self._warned_lookup:
                self._warned_lookup = True
                log.warning("cannot look the token up, so it is not renewed: %s", error)
            return
        ttl = int(info.get("ttl") or 0)
        if info.get("renewable") and ttl > 0:
            try:
                client.renew_self()
            except ApiError as error:
                if error.retryable:
                    raise
                log.warning("the token could not be renewed: %s", error)
                return
            log.debug("token renewed")
        elif 0 < ttl < 3 * self.options.interval:
            log.warning("the token expires in %ds and is not renewable: provide a new one", ttl)

    @contextlib.contextmanager
    def _locked(self, identity: ServerIdentity) -> Iterator[None]:
        """The executor's per-server lock, waited for without blocking a stop request."""
        deadline = time.monotonic() + self.options.lock_timeout
        with contextlib.ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(server_lock(identity, 0.0))
                    break
                except LockBusy:
                    if self._stopping():
                        raise Stopping from None
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.2)
            yield

    # --- bookkeeping ---------------------------------------------------------------

    def _finish(self, outcome: PassOutcome) -> None:
        fields: dict[str, Any] = {
            "pass": outcome.number,
            "reason": outcome.reason,
            "generation": outcome.generation,
            "actions": len(outcome.applied),
            "skipped": len(outcome.skipped),
            "duration": round(outcome.duration, 3),
        }
        if outcome.stopped:
            log.info(
                "pass %d stopped after %s: a stop was requested",
                outcome.number,
                _count(len(outcome.applied), "action"),
                extra={"fields": {**fields, "outcome": "stopped"}},
            )
            return
        self._report_skipped(outcome)
        if outcome.ok and self._held:
            self._failures_in_row = 0
            # Not converged: the held upgrade's mounts stay where they are, off the file.
            self._converged_hash = None
            log.warning(
                "pass %d held: %s; %s (%.2fs)",
                outcome.number,
                "; ".join(
                    f"upgrade to {held_name(u)} failed in pass {h.since}"
                    for u, h in sorted(self._held.items())
                ),
                (_count(len(outcome.applied), "action") + " applied")
                if outcome.applied
                else "its reload is not sent again until the file, the catalog entry or "
                "the binary's sha256 changes",
                outcome.duration,
                extra={"fields": {**fields, "outcome": "held", "held": self.held}},
            )
        elif outcome.ok:
            self._failures_in_row = 0
            current = self.desired.current
            self._converged_hash = current.sha256 if current is not None else None
            log.info(
                "pass %d converged: %s (%.2fs)",
                outcome.number,
                _count(len(outcome.applied), "action") + " applied"
                if outcome.applied
                else "no changes",
                outcome.duration,
                extra={"fields": {**fields, "outcome": "converged"}},
            )
        else:
            self._report_failure(outcome, fields)
        self.metrics.pass_finished(
            ok=outcome.ok,
            applied_kinds=[name.split(" ", 1)[0] for name in outcome.applied],
            destructive_skipped=len(outcome.skipped),
            drift=outcome.drift,
            rollbacks=len(outcome.rolled_back),
            duration=outcome.duration,
            held=len(self._held),
            held_names=self.held,
        )

    def _report_failure(self, outcome: PassOutcome, fields: dict[str, Any]) -> None:
        self._failures_in_row += 1
        # Work found right after a failure is the failure's leftover, not drift.
        self._converged_hash = None
        for line in outcome.rolled_back:
            log.warning("rolled back: %s", line, extra={"fields": {"pass": outcome.number}})
        for held in outcome.held:
            log.warning(
                "upgrade to %s held: its reload is not sent again until the file, the "
                "catalog entry or the binary's sha256 changes",
                held_name(held),
                extra={"fields": {"pass": outcome.number}},
            )
        log.error(
            "pass %d failed (%d in a row):\n%s",
            outcome.number,
            self._failures_in_row,
            "\n".join(f"  {failure}" for failure in outcome.failures),
            extra={
                "fields": {
                    **fields,
                    "outcome": "failed",
                    "failures": outcome.failures,
                    "consecutive_failures": self._failures_in_row,
                    "retryable": outcome.retryable,
                }
            },
        )

    def _report_skipped(self, outcome: PassOutcome) -> None:
        # Refused actions come back every resync: say it loudly only when the set changes.
        level = logging.WARNING if outcome.skipped != self._last_skipped else logging.DEBUG
        self._last_skipped = list(outcome.skipped)
        for line in outcome.skipped:
            log.log(level, "skipped: %s", line, extra={"fields": {"pass": outcome.number}})


def _file_sha256(loaded: LoadedDesired, upgrade: HeldUpgrade) -> str:
    """The sha256 the file's entry of `upgrade` names ("" when it names none)."""
    kind, name, version, _sha = upgrade
    for entry in loaded.state.plugins:
        if entry.present and entry.key == (kind, name, version):
            return entry.sha256 or ""
    return ""


def _catalog_entry(client: Client, upgrade: HeldUpgrade) -> tuple[str, str] | None:
    """The catalog's sha256 and command of `upgrade`'s entry; None when it is absent."""
    kind, name, version, _sha = upgrade
    try:
        entry = client.read_plugin(kind, name, version)
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    return (str(entry.get("sha256") or "").lower(), str(entry.get("command") or ""))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _describe_load_error(path: Path, error: Exception) -> str:
    if isinstance(error, OSError):
        return f"{path}: cannot read: {error.strerror or error}"
    return str(error)
