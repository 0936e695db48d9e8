"""Apply a Plan: dumb and careful.

It runs the plan's actions in order and nothing else, then proves the result:
re-read, re-plan, check what every touched mount runs and that it answers.
Every decision was taken by the planner; a re-run after a crash converges
because the next plan is computed from what the crash left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reconciler import defaults
from reconciler.errors import ApiError, OutcomeUnknown, StaleState
from reconciler.model import (
    DesiredState,
    LiveMount,
    LiveState,
    MountKind,
    Namespace,
    PluginEntry,
)
from reconciler.nodes import Node, discover_nodes
from reconciler.nodestate import (
    LAGGING,
    MountKey,
    NodeMount,
    mount_key,
    node_has_entry,
    probe_error,
    runs_expected,
    wait_on_node,
)
from reconciler.plan import (
    Action,
    CreateNamespaceAction,
    DeregisterAction,
    DisableAction,
    EnableAction,
    EnableParams,
    MoveAction,
    Plan,
    RegisterAction,
    ReloadAction,
    ReloadScope,
    RepinAction,
    ReplaceAction,
    ResetAction,
    Stage,
    TuneAction,
    UpdateAction,
    fingerprint,
)
from reconciler.planner import HeldUpgrade, bound_to_live_catalog, mount_target_name
from reconciler.planner import plan as make_plan
from reconciler.resolver import api_path, namespace_path, runs_builtin, split_api_path
from reconciler.rollback import NOT_RESTORED, RESTORED, MountOutcome, repair_on_node, roll_back
from reconciler.usage import mount_named_from

if TYPE_CHECKING:
    from reconciler.client import Client

log = logging.getLogger(__name__)

# Test-only: SIGKILL the process right after its k-th write, to prove re-runs converge.
KILL_AFTER_WRITES_ENV = "RECONCILER_TEST_KILL_AFTER_WRITES"

# How often a node that lags the active node is asked again.
_NODE_POLL = 0.1


ReadState = Callable[[], LiveState]


@dataclass(frozen=True)
class ApplyOptions:
    # The apply policy's inputs (reconcile.py decides with them; the executor runs what
    # it is given): destructive actions allowed, and watch mode's skipping of refused
    # destructive actions so that the safe rest is applied.
    allow_destroy: bool = False
    skip_refused: bool = False
    rollback_on_failure: bool = False
    replace: tuple[tuple[str, str, str], ...] = ()
    held: tuple[HeldUpgrade, ...] = ()
    # The nodes to preflight and verify (API addresses); empty: ask sys/ha-status.
    nodes: tuple[str, ...] = ()
    # Asked before each action: True stops the run there (SIGINT/SIGTERM). The running
    # action always finishes; what did not run is left to the next run, which converges.
    stop_requested: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class ProgressEvent:
    index: int
    total: int
    action: Action | None
    status: str  # "start", "done", "failed", "skipped", or a verification step
    message: str = ""
    seconds: float = 0.0


Progress = Callable[[ProgressEvent], None]


@dataclass
class ApplyResult:
    """What happened; `converged` is the only thing that decides the exit code."""

    converged: bool = True
    applied: list[Action] = field(default_factory=list)
    skipped: list[Action] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    failed_upgrades: list[HeldUpgrade] = field(default_factory=list)
    # Each mount of a failed upgrade after the rollback, with what every node runs.
    rollback: list[MountOutcome] = field(default_factory=list)
    # Write requests sent, whatever their answer (lost or refused ones count too).
    writes: int = 0
    # A stop was asked for before every action ran: the rest was neither run nor verified.
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "converged": self.converged,
            "applied": [a.ref() for a in self.applied],
            "skipped": [a.ref() for a in self.skipped],
            "failures": list(self.failures),
            "rolled_back": list(self.rolled_back),
            "rollback": [outcome.to_dict() for outcome in self.rollback],
            "writes": self.writes,
            "interrupted": self.interrupted,
        }


def apply_plan(
    api: Client,
    read_state: ReadState,
    plan: Plan,
    desired: DesiredState,
    options: ApplyOptions = ApplyOptions(),
    progress: Progress | None = None,
    skipped: Sequence[Action] = (),
    nodes: Sequence[Node] | None = None,
) -> ApplyResult:
    """Run the plan's actions but `skipped` against the server, then verify.

    Which actions may run is the caller's decision (reconcile.py's policy); this only
    refuses to write when the server is no longer in the state the plan was made from.
    Verification does not count the skipped actions as missing.
    """
    live = read_state()
    if fingerprint(live) != plan.fingerprint:
        raise StaleState()
    run = _Run(api, read_state, desired, options, progress or (lambda _e: None))
    run.known_nodes = None if nodes is None else list(nodes)
    run.result.skipped = list(skipped)
    run.execute([a for a in plan.actions if a not in skipped], live)
    return run.result


@dataclass
class _Run:
    api: Client
    read_state: ReadState
    desired: DesiredState
    options: ApplyOptions
    progress: Progress
    result: ApplyResult = field(default_factory=ApplyResult)
    known_nodes: list[Node] | None = None
    # The last verification failed only on moves a node's table did not follow.
    only_moves_not_followed: bool = False

    def nodes(self) -> list[Node]:
        """The cluster's nodes, asked once per apply (one node for a single server)."""
        if self.known_nodes is None:
            self.known_nodes = discover_nodes(self.api, self.options.nodes)
        return self.known_nodes

    def execute(self, actions: list[Action], before: LiveState) -> None:
        converge = [a for a in actions if a.stage is Stage.CONVERGE]
        cleanup = [a for a in actions if a.stage is Stage.CLEANUP]
        total = len(actions)
        if not self._run_actions(converge, 0, total):
            if self.result.interrupted:
                return
            self._fail_and_maybe_roll_back(converge, before)
            return
        # Without cleanup, the first verification is the last one: verified once, shown once.
        if converge and not self._verify(converge, allow_pending_cleanup=bool(cleanup)):
            if self.only_moves_not_followed:
                # Every mount runs its target; standbys still route a moved mount's old
                # path, which no rollback changes: not converged, nothing undone.
                self.result.converged = False
            else:
                self._fail_and_maybe_roll_back(converge, before)
            return
        if not cleanup:
            return
        if not self._run_actions(cleanup, len(converge), total):
            self.result.converged = False
            return
        if not self._verify(actions, allow_pending_cleanup=False, after_cleanup=True):
            self.result.converged = False

    # --- running --------------------------------------------------------------

    def _run_actions(self, actions: list[Action], offset: int, total: int) -> bool:
        for number, action in enumerate(actions, start=offset + 1):
            if self.options.stop_requested():
                # Between two actions, the only place a stop leaves nothing half-done.
                self.result.interrupted = True
                self.result.converged = False
                return False
            self.progress(ProgressEvent(number, total, action, "start"))
            started = time.monotonic()
            try:
                self._run(action)
            except ApiError as error:
                failure = f"{action.kind.value} {action.target}: {error}"
                if isinstance(action, ReloadAction) and action.canary:
                    failure += (
                        f"; the other mounts were neither tuned nor reloaded ({action.reason})"
                    )
                self.result.failures.append(failure)
                self.progress(
                    ProgressEvent(number, total, action, "failed", str(error), _since(started))
                )
                return False
            self.result.applied.append(action)
            self.progress(ProgressEvent(number, total, action, "done", "", _since(started)))
            if isinstance(action, ReloadAction) and action.canary:
                failed = self._canary_fails(action)
                if failed is not None:
                    self.result.failures.append(failed)
                    self.progress(ProgressEvent(number, total, action, "failed", failed))
                    return False
        return True

    def _canary_fails(self, action: ReloadAction) -> str | None:
        """Why the canary mount does not run its new plugin, or None when it does."""
        self.progress(ProgressEvent(0, 0, None, "verify canary"))
        live = self.read_state()
        again = make_plan(self.desired, live, replace=(), held=self.options.held)
        pending = _pending_reloads(again, Stage.CONVERGE)
        mounts = {_mount_key(live, m): m for m in _all_mounts(live)}
        namespace = action.params.namespace
        for path in action.params.mounts or []:
            mount = mounts.get((namespace, path))
            if mount is None:
                problem = "is gone"
            elif mount.backend_answers is False:
                problem = "does not answer (its plugin did not start)"
            elif mount.backend_answers is None and (why := self._no_answer(mount)):
                # The read had no verdict (a 500 from a plugin that cannot start again, a
                # lost answer): the canary needs one before anything else moves.
                problem = f"does not answer: {why}"
            elif (namespace, path) in pending:
                problem = f"runs {_running(mount)}"
            else:
                continue
            home = namespace_path(live.server.namespace)
            name = mount_named_from(home, namespace or home, *split_api_path(path))
            return (
                f"canary {name} {problem}: the other mounts were neither tuned nor reloaded "
                f"({action.reason})"
            )
        # A node that did not follow a move of the canary cannot run it at its new path
        # (the apply's verification reports that); the other nodes prove the binary.
        behind = {mount_key(mount) for mount, _node, _old in live.moves_not_followed()}
        canary = [key for key in _keys_of(touched_mounts([action]), live) if key not in behind]
        on_nodes = self._verify_nodes(live, canary, repair=True)
        if on_nodes:
            return f"canary {'; '.join(on_nodes)}: the other mounts were neither tuned nor reloaded"
        return None

    def _no_answer(self, mount: LiveMount) -> str:
        """Why a request through `mount` reaches no working backend ("" when it does)."""
        return probe_error(self.api, mount.namespace, mount.kind, mount.path)

    def _run(self, action: Action) -> None:
        match action:
            case RegisterAction(params=p) | UpdateAction(params=p):
                self._write(
                    self.api.register_plugin,
                    p.type,
                    p.name,
                    p.version,
                    p.command,
                    p.sha256,
                    list(p.args),
                    self._env(p.type, p.name, p.version),
                )
                self._preflight(action, p.type, p.name, p.version, p.command)
            case DeregisterAction(params=p):
                self._write(self.api.deregister_plugin, p.type, p.name, p.version)
            case CreateNamespaceAction(params=p):
                self._write(self.api.create_namespace, p.parent, p.name)
            case ReplaceAction(params=p):
                self._write(self.api.disable_mount, p.kind, p.path, p.namespace)
                self._write(self.api.enable_mount, p.kind, p.path, enable_body(p), p.namespace)
            case EnableAction(params=p):
                self._write(self.api.enable_mount, p.kind, p.path, enable_body(p), p.namespace)
            case MoveAction(params=p):
                self._write(self.api.remount, p.kind, p.from_path, p.to, p.namespace)
            case TuneAction(params=p):
                self._write(self.api.tune_mount, p.kind, p.path, dict(p.body), p.namespace)
            case DisableAction(params=p):
                self._write(self.api.disable_mount, p.kind, p.path, p.namespace)
            case ReloadAction(params=p) if p.node:
                with self.api.on_node(p.node) as node:
                    self._write(
                        node.reload_backend, mounts=p.mounts, plugin=p.plugin, namespace=p.namespace
                    )
            case ReloadAction(params=p):
                try:
                    self._write(
                        self.api.reload_backend,
                        mounts=p.mounts,
                        plugin=p.plugin,
                        scope=p.scope,
                        namespace=p.namespace,
                    )
                except OutcomeUnknown as error:
                    if p.mounts is None:
                        raise
                    self._reload_the_rest(action, error)
            case RepinAction(params=p):
                # The server starts the new version and verifies the connection before it
                # answers: a refusal (400) leaves the old version running.
                self._write(self.api.repin_connection, p.mount, p.name, p.version, p.namespace)
            case ResetAction(params=p):
                self._write(self.api.reset_connection, p.mount, p.name, p.namespace)
            case _:  # pragma: no cover - every kind is handled above
                raise AssertionError(action.kind)

    def _preflight(
        self, action: Action, plugin_type: str, name: str, version: str, command: str
    ) -> None:
        """Stop before any tune or reload when a node lacks the entry's file.

        A register checks only the active node's file; each standby's own catalog read
        checks its file. A node that lacks it would serve no backend after the reload,
        so the new entry is deregistered again and nothing else is done.
        """
        nodes = self.nodes()
        if len(nodes) < 2:
            return
        deadline = time.monotonic() + defaults.NODE_LAG_WAIT
        missing: list[str] = []
        for node in nodes:
            why = node_has_entry(self.api, node, plugin_type, name, version)
            while why == LAGGING and time.monotonic() < deadline:
                time.sleep(_NODE_POLL)
                why = node_has_entry(self.api, node, plugin_type, name, version)
            if why:
                missing.append(f"{node.address} ({why})")
        if not missing:
            return
        undone = ""
        if isinstance(action, RegisterAction):
            self._write(self.api.deregister_plugin, plugin_type, name, version)
            undone = "; the new entry was deregistered again"
        raise ApiError(
            f"preflight: {command or name} is missing or unreadable in the plugin directory of "
            f"node {', '.join(missing)}{undone}; nothing else was changed: copy the file to "
            "every node's plugin directory and apply again"
        )

    def _reload_the_rest(self, action: ReloadAction, unknown: OutcomeUnknown) -> None:
        """After a reload that may have run: reload, once, only the mounts still needing it.

        Each reload restarts the plugin processes it names, and the first one may have
        done its work: the mounts are read back and planned again, and a mount whose
        plan no longer reloads it took its new plugin.
        """
        log.warning("%s; reading the mounts back", unknown)
        again = make_plan(self.desired, self.read_state(), replace=(), held=self.options.held)
        pending = _pending_reloads(again, action.stage)
        namespace = action.params.namespace
        rest = [path for path in action.params.mounts or [] if (namespace, path) in pending]
        if not rest:
            log.warning("reload %s: every mount runs its new plugin", action.target)
            return
        log.warning("reload %s: reloading %s again", action.target, ", ".join(rest))
        self._write(
            self.api.reload_backend, mounts=rest, scope=action.params.scope, namespace=namespace
        )

    def _write(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except ApiError as error:
            # A request the server answered, or whose answer was lost after sending, may
            # have changed the server: it counts. Only a connection never made does not.
            if error.status is not None or isinstance(error, OutcomeUnknown):
                self.result.writes += 1
            raise
        self.result.writes += 1
        kill_after = os.environ.get(KILL_AFTER_WRITES_ENV)
        if kill_after and self.result.writes >= int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)

    def _env(self, plugin_type: str, name: str, version: str) -> dict[str, str]:
        for entry in self.desired.plugins:
            if entry.key == (plugin_type, name, version):
                return {k: v.get_secret_value() for k, v in (entry.env or {}).items()}
        return {}

    # --- verification -----------------------------------------------------------

    def _verify(
        self, actions: list[Action], allow_pending_cleanup: bool, after_cleanup: bool = False
    ) -> bool:
        """Re-read and re-plan; check every touched mount runs its target and answers.

        Database connections: the re-plan reads every declared connection back, so one
        that does not report its pin (or is gone) is a problem here. That a re-pinned or
        reset connection answers was proven by the write itself: the server initializes
        the plugin with `verify_connection` (it connects to the database and creates
        nothing) before it answers 204. No other check reaches the plugin without a side
        effect: issuing credentials creates a user, a reset restarts the process.
        """
        self.progress(ProgressEvent(0, 0, None, "verify", "after cleanup" if after_cleanup else ""))
        live = self.read_state()
        again = make_plan(
            self.desired,
            live,
            replace=(),
            held=self.options.held,
        )
        behind = {mount_key(mount) for mount, _node, _old in live.moves_not_followed()}
        home = namespace_path(live.server.namespace)
        behind_names = {mount_named_from(home, *key) for key in behind}
        not_followed = [
            f"{p.target}: {p.message}" for p in again.errors if p.target in behind_names
        ]
        problems: list[str] = [
            f"{p.target}: {p.message}" for p in again.errors if p.target not in behind_names
        ]
        skipped = {(a.kind, a.target) for a in self.result.skipped}
        for action in again.actions:
            if allow_pending_cleanup and action.stage is Stage.CLEANUP:
                continue
            if (action.kind, action.target) in skipped:
                continue
            if isinstance(action, ReloadAction) and action.params.node:
                continue  # a lagging standby: the per-node check below waits for it
            problems.append(self._not_converged(action, live))
        probed = {_mount_key(live, m): m.backend_answers for m in _all_mounts(live)}
        for kind, path, namespace in touched_mounts(actions):
            if probed.get((namespace, api_path(kind, path))) is True:
                continue  # the read just probed it
            try:
                self.api.probe_mount(kind, path, namespace)
            except ApiError as error:
                where = f" in namespace {namespace}" if namespace else ""
                problems.append(f"{mount_target_name(kind, path)}{where} does not answer: {error}")
        if not problems:
            # A node that did not follow a move answers 400 to a reload of the new path:
            # those mounts are reported above, not repaired.
            touched = [key for key in _keys_of(touched_mounts(actions), live) if key not in behind]
            problems.extend(self._verify_nodes(live, touched, repair=True))
        self.result.failures.extend(not_followed + problems)
        self.only_moves_not_followed = bool(not_followed) and not problems
        return not (not_followed or problems)

    def _verify_nodes(
        self, live: LiveState, touched: Collection[MountKey], *, repair: bool
    ) -> list[str]:
        """Check every node runs the catalog's binary for every touched external mount,
        whatever namespace it lives in.

        Standbys follow a global reload one request after another, so each node gets
        a bounded wait. A node that still does not run it gets a local reload of its
        own (`repair`); what remains is a problem naming the node.
        """
        nodes = self.nodes()
        if len(nodes) < 2:
            return []
        sha = live.external_sha256()
        by_key = {mount_key(m): m for m in _all_mounts(live)}
        expected: dict[MountKey, tuple[LiveMount, str]] = {}
        for key in touched:
            mount = by_key.get(key)
            if mount is None:
                continue
            entry_sha = sha.get((mount.kind, mount.plugin, mount.plugin_version), "")
            if entry_sha:
                expected[key] = (mount, entry_sha)
        if not expected:
            return []
        home = namespace_path(live.server.namespace)
        problems: list[str] = []
        repaired = False
        for node in nodes:
            wrong = self._wait_node(node, expected, defaults.NODE_LAG_WAIT)
            if wrong and repair:
                repaired = True
                paths = [expected[key][0].api_path for key in sorted(wrong)]
                self.progress(ProgressEvent(0, 0, None, "repair", f"{node.address}: {paths}"))
                repair_on_node(self.api, node, wrong, self._write)
                wrong = self._wait_node(node, expected, 0.0)
            for key, why in sorted(wrong.items()):
                tried = " (a local reload sent to it did not repair it)" if repair else ""
                name = mount_named_from(home, *key)
                problems.append(f"{name} on node {node.address}: {why}{tried}")
        if repaired and not problems:
            # What is claimed comes from reads made after the last write: every node again.
            return self._verify_nodes(live, touched, repair=False)
        return problems

    def _wait_node(
        self,
        node: Node,
        expected: dict[MountKey, tuple[LiveMount, str]],
        wait: float,
    ) -> dict[MountKey, str]:
        """The expected mounts `node` does not run right (after waiting up to `wait` s)."""

        def wrong_in(seen: Mapping[MountKey, NodeMount]) -> dict[MountKey, str]:
            return {
                key: why
                for key, (mount, entry_sha) in expected.items()
                if (why := runs_expected(seen[key], mount.plugin_version, entry_sha))
            }

        mounts = [mount for mount, _sha in expected.values()]
        return wait_on_node(self.api, node, mounts, wrong_in, wait)[1]

    def _not_converged(self, action: Action, live: LiveState) -> str:
        if isinstance(action, ReloadAction) and action.params.mounts is not None:
            mounts = {m.api_path: m for m in live.mounts}
            described = [
                f"{path} runs {_running(mounts[path])}"
                for path in action.params.mounts
                if path in mounts
            ]
            return "did not converge: " + "; ".join(described)
        return f"did not converge: {action.kind.value} {action.target} is still needed"

    # --- rollback ---------------------------------------------------------------

    def _fail_and_maybe_roll_back(self, converge: list[Action], before: LiveState) -> None:
        """Mark the apply failed; with rollback on, restore what each mount ran before it.

        The rollback (reconciler/rollback.py) works from what the server runs, not from
        what this run wrote: mounts pinned ahead by a killed run or by hand are tuned back
        too, and a value already in place is never written again.
        """
        self.result.converged = False
        entries = self._entries(before)
        failed = self._failed_upgrades(converge, before, entries)
        self.result.failed_upgrades = sorted({*failed, *_failed_repins(converge, entries)})
        if not self.options.rollback_on_failure:
            return
        self._roll_back_connections()
        if not failed:
            return
        nodes = self.nodes()
        scope = _scope(converge) or ("global" if len(nodes) > 1 else "")
        outcomes = roll_back(
            self.api,
            nodes,
            before,
            failed,
            self.read_state(),
            self._write,
            scope,
            self._managed_namespaces(before),
        )
        self.result.rollback = outcomes
        for outcome in outcomes:
            if outcome.state == RESTORED:
                self.result.rolled_back.append(outcome.line(len(nodes) > 1))
            elif outcome.state == NOT_RESTORED:
                self.result.failures.append(f"rollback: {outcome.line(len(nodes) > 1)}")

    def _roll_back_connections(self) -> None:
        """Re-pin each connection this run re-pinned to the version it had before."""
        for action in reversed(self.result.applied):
            if not isinstance(action, RepinAction):
                continue
            p = action.params
            log.warning("rolling back %s to %s", action.target, p.previous_version or '""')
            try:
                self._write(
                    self.api.repin_connection, p.mount, p.name, p.previous_version, p.namespace
                )
                found = self.api.read_connection(p.mount, p.name, p.namespace)
            except ApiError as error:
                self.result.failures.append(f"rollback of {action.target} failed: {error}")
                continue
            reported = None if found is None else found["plugin_version"]
            if reported == p.previous_version:
                self.result.rolled_back.append(
                    f"{action.target} runs {p.previous_version or '(unpinned)'} again"
                )
            else:
                self.result.failures.append(
                    f"rollback of {action.target}: reports {reported!r}, "
                    f"expected {p.previous_version!r}"
                )

    def _entries(self, before: LiveState) -> list[PluginEntry]:
        """The catalog entries the plan resolved mounts against: the file's own, or for a
        file bound to a namespace (which declares none) the live catalog's."""
        if self.desired.namespace is None:
            return list(self.desired.plugins)
        return list(bound_to_live_catalog(self.desired, before).plugins)

    def _namespaces_declared(self) -> list[tuple[str, DesiredState | Namespace]]:
        """The file's own namespace ("") and each it declares, relative to the client's."""
        tree = self.desired.namespace_tree()
        return [("", self.desired), *((relative, found) for relative, found, _ in tree)]

    def _managed_namespaces(self, live: LiveState) -> set[str]:
        """The namespaces the file manages, as paths from the root."""
        home = namespace_path(live.server.namespace)
        return {home + relative for relative, _file in self._namespaces_declared()}

    def _failed_upgrades(
        self, converge: list[Action], before: LiveState, entries: list[PluginEntry]
    ) -> list[HeldUpgrade]:
        """(type, name, version, sha256) of the entries the failed run moved mounts onto.

        Every mount the run tuned or reloaded, in any namespace the file declares,
        whatever moved its pin (this run, a killed one, a hand): its declared entries
        other than the binary it ran before the apply.
        """
        ran = {
            mount_key(m): (m.running_plugin_version, m.running_sha256) for m in _all_mounts(before)
        }
        home = namespace_path(before.server.namespace)
        declared = {
            (home + relative, kind, m.path): m
            for relative, file in self._namespaces_declared()
            for kind, m in file.mounts()
        }
        # An entry the server's configuration owns has its sha256 in the catalog only.
        catalog = before.external_sha256()
        held: set[HeldUpgrade] = set()
        for key in _keys_of(touched_mounts(converge), before):
            mount = declared.get(key)
            if mount is None:
                continue
            kind = key[1]
            for entry in entries:
                sha = entry.sha256 or catalog.get(entry.key, "")
                if (
                    entry.present
                    and (entry.type, entry.name) == (kind, mount.plugin)
                    and mount.version in (None, entry.version)
                    and ran.get(key) != (entry.version, sha)
                ):
                    held.add((entry.type, entry.name, entry.version, sha))
        return sorted(held)


def _failed_repins(converge: list[Action], entries: list[PluginEntry]) -> list[HeldUpgrade]:
    """(type, name, version, sha256) of the entries the failed run re-pinned connections to."""
    held: list[HeldUpgrade] = []
    for action in converge:
        if isinstance(action, RepinAction):
            p = action.params
            for entry in entries:
                if entry.present and entry.key == ("database", p.plugin, p.version):
                    held.append((entry.type, entry.name, entry.version, entry.sha256 or ""))
    return held


def enable_body(params: EnableParams) -> dict[str, Any]:
    """The sys/mounts (or sys/auth) enable request for an enable/replace action."""
    body: dict[str, Any] = {"type": params.plugin}
    body.update(
        params.model_dump(
            include={"description", "options", "local", "seal_wrap"}, exclude_none=True
        )
    )
    config = dict(params.config or {})
    if params.plugin_version is not None:
        # OpenBao 2.7 ignores a top-level plugin_version on enable (the mount is pinned to the
        # newest registered version); inside config it is honoured.
        config["plugin_version"] = params.plugin_version
    if config:
        body["config"] = config
    return body


def touched_mounts(actions: list[Action]) -> list[tuple[MountKind, str, str | None]]:
    """Mounts an action wrote to or reloaded (disabled ones are gone, not touched), with the
    namespace they live in (None: the client's)."""
    touched: set[tuple[MountKind, str, str | None]] = set()
    for action in actions:
        match action:
            case EnableAction(params=p) | ReplaceAction(params=p):
                touched.add((p.kind, p.path, p.namespace))
            case TuneAction(params=tune):
                touched.add((tune.kind, tune.path, tune.namespace))
            case MoveAction(params=move):
                touched.add((move.kind, move.to, move.namespace))
            case ReloadAction(params=reload):
                touched.update(
                    (*split_api_path(path), reload.namespace) for path in reload.mounts or []
                )
    return sorted(touched, key=lambda t: (t[2] or "", t[0], t[1]))


def _scope(actions: list[Action]) -> ReloadScope:
    return next((a.params.scope for a in actions if isinstance(a, ReloadAction)), "")


def _running(mount: LiveMount) -> str:
    if runs_builtin(mount):
        return f"the built-in ({mount.running_plugin_version})"
    return f"{mount.running_plugin_version or '(unversioned)'} sha256 {mount.running_sha256[:12]}…"


def _all_mounts(live: LiveState) -> list[LiveMount]:
    return [*live.mounts, *live.elsewhere]


def _mount_key(live: LiveState, mount: LiveMount) -> tuple[str | None, str]:
    """(namespace, API path) as actions name mounts: None is the client's namespace."""
    home = mount.namespace == namespace_path(live.server.namespace)
    return (None if home else mount.namespace, mount.api_path)


def _pending_reloads(plan: Plan, stage: Stage) -> set[tuple[str | None, str]]:
    """The (namespace, API path) of every mount `plan` still reloads in `stage`."""
    return {
        (planned.params.namespace, path)
        for planned in plan.actions
        if isinstance(planned, ReloadAction)
        and planned.stage is stage
        # A node's own reload (a lagging standby) is checked per node, not here.
        and not planned.params.node
        for path in planned.params.mounts or []
    }


def _keys_of(touched: list[tuple[MountKind, str, str | None]], live: LiveState) -> list[MountKey]:
    """The touched mounts as (namespace, kind, path), the namespace a path from the root."""
    home = namespace_path(live.server.namespace)
    return [
        (home if namespace is None else namespace, kind, path) for kind, path, namespace in touched
    ]


def _since(started: float) -> float:
    return time.monotonic() - started
