"""Watch mode: reconcile on every change of the desired file and on a timer.

One worker runs every pass, so passes never overlap: file events, the timer
and SIGHUP only mark a pass as due. Every pass is level-triggered: it reads
the file, the token and the server afresh, plans and applies, so a missed
event or a crash only delays convergence.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from reconciler import defaults, reconcile
from reconciler.backoff import backoff_delay
from reconciler.errors import ApiError, LockBusy, PermissionDenied, ReconcilerError
from reconciler.executor import ApplyOptions, ProgressEvent, server_lock
from reconciler.loader import LoadedDesired, load_desired
from reconciler.metrics import Metrics
from reconciler.planner import HeldUpgrade
from reconciler.reconcile import PassHooks, PassInput, Verdict
from reconciler.render import progress_line

if TYPE_CHECKING:
    from reconciler.client import Client
    from reconciler.model import ServerIdentity

log = logging.getLogger(__name__)

# The name Kubernetes swaps atomically when a ConfigMap volume is updated.
CONFIGMAP_DATA_LINK = "..data"
# Event types that never change content; the watcher's own reads cause them.
_READ_ONLY_EVENTS = frozenset({"opened", "closed_no_write"})

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


@dataclass
class PassOutcome:
    """What one pass did. `ok` is what health and backoff look at."""

    number: int
    reason: str
    ok: bool = False
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


class _Stopping(Exception):
    """Raised between two actions when a stop was asked for."""


class _PassFailed(Exception):
    """A pass cannot go on; the message is already fit for the log."""


class Watcher:
    """Reconciles one desired-state file against one server, pass after pass."""

    def __init__(
        self,
        path: Path,
        client_factory: ClientFactory,
        options: WatchOptions | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.path = Path(path)
        self.options = options or WatchOptions()
        self.metrics = metrics or Metrics(self.options.interval)
        self._client_factory = client_factory
        self._pass_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._external_stop: threading.Event | None = None
        # Scheduling state, guarded by _state_lock.
        self._forced: str | None = None
        self._first_event: float | None = None
        self._last_event: float | None = None
        # Reconcile state, owned by the worker.
        self._passes = 0
        self._failures_in_row = 0
        self._current: LoadedDesired | None = None
        self._generation = 0
        self._seen_hash: str | None = None
        self._reported_invalid: str | None = None
        self._converged_hash: str | None = None
        self._held: set[HeldUpgrade] = set()
        self._held_hash: str | None = None
        self._last_skipped: list[str] = []
        self._warned_lookup = False

    # --- triggers (any thread, signal handlers included) ------------------------

    def request_pass(self, reason: str = "signal") -> None:
        """Run a pass as soon as the running one (if any) ends."""
        self._forced = reason
        self._wake.set()

    def stop(self) -> None:
        """Finish the running action, then leave `run_forever`."""
        self._stop.set()
        self._wake.set()

    def file_event(self) -> None:
        """Something touched the desired file: a pass is due once the debounce expires."""
        now = time.monotonic()
        with self._state_lock:
            if self._first_event is None:
                self._first_event = now
            self._last_event = now
        self._wake.set()

    # --- the loop ----------------------------------------------------------------

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Run passes until `stop_event` (or `stop()`): at start, on change, on timer, on demand."""
        self._external_stop = stop_event
        observer = self._start_observer()
        next_due = time.monotonic()
        due_reason = "start"
        try:
            while not self._stopping():
                now = time.monotonic()
                reason, due = self._next(now, next_due, due_reason)
                if now < due:
                    self._wake.wait(timeout=min(due - now, 0.5))
                    self._wake.clear()
                    continue
                if reason == "file" and not self._content_changed():
                    log.debug("file event without a content change: no pass")
                    continue
                outcome = self.run_pass(reason)
                if outcome.stopped:
                    break
                next_due, due_reason = self._schedule(outcome)
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            log.info("watcher stopped")

    def _next(self, now: float, next_due: float, due_reason: str) -> tuple[str, float]:
        """The reason and time of the next pass, given the timer and pending triggers."""
        forced = self._forced
        if forced is not None:
            self._forced = None
            return forced, now
        with self._state_lock:
            first, last = self._first_event, self._last_event
            if first is not None and last is not None:
                # Trailing debounce, but a steady stream of events cannot postpone forever.
                debounce = self.options.debounce
                file_due = min(last + debounce, first + max(5 * debounce, 1.0))
                if file_due <= now or file_due < next_due:
                    if file_due <= now:
                        self._first_event = self._last_event = None
                    return "file", file_due
        return due_reason, next_due

    def _schedule(self, outcome: PassOutcome) -> tuple[float, str]:
        now = time.monotonic()
        if outcome.ok:
            return now + self.options.interval, "interval"
        delay = backoff_delay(
            self._failures_in_row,
            initial=self.options.backoff_initial,
            cap=min(self.options.backoff_max, self.options.interval),
        )
        log.info(
            "next attempt in %.1fs",
            delay,
            extra={"fields": {"retry_in": round(delay, 3), "failures": self._failures_in_row}},
        )
        return now + delay, "retry"

    def _stopping(self) -> bool:
        external = self._external_stop
        return self._stop.is_set() or (external is not None and external.is_set())

    def _content_changed(self) -> bool:
        return self._file_hash() != self._seen_hash

    def _file_hash(self) -> str | None:
        try:
            with self.path.open("rb") as handle:
                data = handle.read(self.options.max_file_size + 1)
        except OSError:
            return None
        return hashlib.sha256(data).hexdigest()

    def _start_observer(self) -> Any:
        directory = self.path.parent.resolve()
        observer = Observer()
        try:
            observer.schedule(_EventHandler(self), str(directory), recursive=False)
            observer.start()
        except OSError as error:
            # The timer still reconciles; only the reaction to edits is lost.
            log.warning(
                "cannot watch %s (%s): changes are picked up at the next resync only",
                directory,
                error.strerror or error,
            )
            return None
        return observer

    def concerns_file(self, event_path: str) -> bool:
        """Whether a change at `event_path` may change what the desired file reads."""
        base = os.path.basename(event_path.rstrip("/"))
        if base in (self.path.name, CONFIGMAP_DATA_LINK):
            return True
        with contextlib.suppress(OSError):
            return Path(event_path).resolve() == self.path.resolve()
        return False

    # --- one pass ----------------------------------------------------------------

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
            except _Stopping:
                outcome.stopped = True
            except (_PassFailed, ReconcilerError) as error:
                outcome.failures.append(str(error))
            except Exception as error:
                # A daemon must outlive surprises; the next pass starts from scratch.
                log.exception("pass %d: unexpected error", outcome.number)
                outcome.failures.append(f"unexpected error: {type(error).__name__}")
            outcome.duration = time.monotonic() - started
            self._finish(outcome)
            return outcome

    def _pass(self, outcome: PassOutcome) -> None:
        loaded = self._refresh_desired(outcome)
        outcome.generation = self._generation
        client = self._client_factory()
        try:
            self._renew_token(client)
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
        if new_held:
            self._held.update(new_held)
            self._held_hash = loaded.sha256
            outcome.held = new_held

    def _progress(self, outcome: PassOutcome) -> Callable[[ProgressEvent], None]:
        def report(event: ProgressEvent) -> None:
            action = event.action
            if event.status == "start" and self._stopping():
                # The only safe place to stop: between two actions, never inside one.
                raise _Stopping
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

    # --- the desired file ----------------------------------------------------------

    def _refresh_desired(self, outcome: PassOutcome) -> LoadedDesired:
        """Load the file; an invalid one is reported once and the last good one stays."""
        self._seen_hash = self._file_hash()
        try:
            loaded = load_desired(
                self.path,
                max_file_size=self.options.max_file_size,
                check_plugin_files=self.options.check_plugin_files,
            )
        except (OSError, ReconcilerError) as error:
            message = _describe_load_error(self.path, error)
            outcome.desired_error = message
            self.metrics.desired_loaded(self._generation, valid=False)
            if self._reported_invalid != self._seen_hash:
                self._reported_invalid = self._seen_hash
                keeping = (
                    f"; keeping generation {self._generation} in force"
                    if self._current is not None
                    else "; nothing is applied until it is fixed"
                )
                log.error(
                    "%s is invalid%s:\n%s",
                    self.path,
                    keeping,
                    message,
                    extra={"fields": {"pass": outcome.number, "problems": message.splitlines()}},
                )
            if self._current is None:
                raise _PassFailed(f"{self.path}: no valid desired state yet") from None
            return self._current
        self._reported_invalid = None
        if self._current is None or loaded.sha256 != self._current.sha256:
            self._generation += 1
            log.info(
                "desired state generation %d loaded from %s (sha256 %s)",
                self._generation,
                self.path,
                loaded.sha256.removeprefix("sha256:")[:12],
                extra={"fields": {"pass": outcome.number, "generation": self._generation}},
            )
        if self._held and loaded.sha256 != self._held_hash:
            log.info("the file changed: held upgrades are tried again (%d)", len(self._held))
            self._held.clear()
            self._held_hash = None
        self._current = loaded
        self.metrics.desired_loaded(self._generation, valid=True)
        return loaded

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
                    stack.enter_context(server_lock(identity.address, identity.namespace, 0.0))
                    break
                except LockBusy:
                    if self._stopping():
                        raise _Stopping from None
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
        if outcome.ok:
            self._failures_in_row = 0
            self._converged_hash = self._current.sha256 if self._current is not None else None
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
            self._failures_in_row += 1
            # Work found right after a failure is the failure's leftover, not drift.
            self._converged_hash = None
            for line in outcome.rolled_back:
                log.warning("rolled back: %s", line, extra={"fields": {"pass": outcome.number}})
            for held in outcome.held:
                log.warning(
                    "upgrade to %s/%s %s held until the file changes",
                    *held[:3],
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
                    }
                },
            )
        self.metrics.pass_finished(
            ok=outcome.ok,
            applied_kinds=[name.split(" ", 1)[0] for name in outcome.applied],
            destructive_skipped=len(outcome.skipped),
            drift=outcome.drift,
            rollbacks=len(outcome.rolled_back),
            duration=outcome.duration,
            held=len(self._held),
        )

    def _report_skipped(self, outcome: PassOutcome) -> None:
        # Refused actions come back every resync: say it loudly only when the set changes.
        level = logging.WARNING if outcome.skipped != self._last_skipped else logging.DEBUG
        self._last_skipped = list(outcome.skipped)
        for line in outcome.skipped:
            log.log(level, "skipped: %s", line, extra={"fields": {"pass": outcome.number}})


class _EventHandler(FileSystemEventHandler):
    """Turns directory events that may concern the desired file into a due pass."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__()
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _READ_ONLY_EVENTS:
            return
        paths = [os.fsdecode(event.src_path), os.fsdecode(event.dest_path or "")]
        if any(self._watcher.concerns_file(p) for p in paths if p):
            self._watcher.file_event()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _describe_load_error(path: Path, error: Exception) -> str:
    if isinstance(error, OSError):
        return f"{path}: cannot read: {error.strerror or error}"
    return str(error)


# --- logging ---------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                document.setdefault(key, value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every log line to stderr as text or JSON; keep HTTP libraries quiet."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # At DEBUG these log request headers, the token among them.
    for noisy in ("httpx", "httpcore", "watchdog"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
