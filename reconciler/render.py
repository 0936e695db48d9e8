"""Plan and progress → human text. Pure: returns strings; the front ends decide where they go."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from reconciler.durations import duration_text
from reconciler.model import DURATION_CONFIG_KEYS
from reconciler.plan import Action, ActionKind, Plan, PreflightStatus, Problem, Safety, Stage
from reconciler.resolver import namespace_path

if TYPE_CHECKING:
    from reconciler.documents import StatusDocument
    from reconciler.executor import ProgressEvent

_COLOURS: dict[str, str] = {
    "+": "green",
    "~": "yellow",
    "±": "red",
    "→": "cyan",
    "↻": "magenta",
    "⇢": "yellow",
    "-": "red",
    "!": "red",
}
_CATALOG_KINDS = {ActionKind.REGISTER, ActionKind.UPDATE, ActionKind.DEREGISTER}
_CONNECTION_KINDS = {ActionKind.REPIN, ActionKind.RESET}
_SUMMARY_ORDER = [
    (ActionKind.CREATE_NAMESPACE, "namespaces to create"),
    (ActionKind.REGISTER, "to register"),
    (ActionKind.UPDATE, "to update"),
    (ActionKind.REPLACE, "to replace"),
    (ActionKind.MOVE, "to move"),
    (ActionKind.ENABLE, "to enable"),
    (ActionKind.TUNE, "to tune"),
    (ActionKind.RELOAD, "to reload"),
    (ActionKind.REPIN, "to re-pin"),
    (ActionKind.RESET, "to reset"),
    (ActionKind.DISABLE, "to disable"),
    (ActionKind.DEREGISTER, "to deregister"),
]
_SENSITIVE_FIELDS = {"env"}


def summary(plan: Plan, allow_destroy: bool = False) -> str:
    """One line: "3 to register, 2 to tune, 2 to reload, 1 refused".

    A refused action is counted as refused only: it will not be carried out.
    """
    refusals = plan.refusals(allow_destroy)
    counts = Counter(a.kind for i, a in enumerate(plan.actions) if i not in refusals)
    parts = [f"{counts[kind]} {label}" for kind, label in _SUMMARY_ORDER if counts[kind]]
    refused = len(refusals)
    if refused:
        parts.append(f"{refused} refused")
    if plan.errors:
        parts.append(f"{len(plan.errors)} error{'s' if len(plan.errors) > 1 else ''}")
    return ", ".join(parts) if parts else "no changes: the server matches the file"


def _namespaces_text(plan: Plan) -> str:
    """Which namespaces the plan writes: "namespace team1/", "namespaces: root, team1/"."""
    names = [printable(n) or "root" for n in plan.namespaces] or [printable(plan.server.namespace)]
    if len(names) == 1:
        return f"namespace {names[0]}"
    return "namespaces: " + ", ".join(names)


def render_plan(
    plan: Plan, *, allow_destroy: bool = False, colour: bool = False, verbose: bool = False
) -> str:
    """The plan as a readable diff with symbols, grouped by catalog and mounts.

    Warnings of one kind (23 unmanaged mounts, say) fold into one line with a count;
    `verbose` lists each.
    """
    style = _Styler(colour)
    refusals = plan.refusals(allow_destroy)
    lines: list[str] = []
    header = f"Plan for {printable(plan.server.address) or 'the server'}"
    if plan.server.namespace or len(plan.namespaces) > 1:
        header += " (" + _namespaces_text(plan) + ")"
    if plan.desired.path:
        header += f" from {printable(plan.desired.path)}"
    lines.append(style.bold(header))
    indexed = list(enumerate(plan.actions))
    home = namespace_path(plan.server.namespace)
    for title, group in (
        ("Catalog", [(i, a) for i, a in indexed if a.kind in _CATALOG_KINDS]),
        (
            "Mounts",
            [(i, a) for i, a in indexed if a.kind not in _CATALOG_KINDS | _CONNECTION_KINDS],
        ),
        ("Database connections", [(i, a) for i, a in indexed if a.kind in _CONNECTION_KINDS]),
    ):
        if not group:
            continue
        lines.append("")
        lines.append(style.bold(f"{title}:"))
        for index, action in group:
            lines.extend(_action_lines(action, refusals.get(index), style, home))
    if plan.errors:
        lines.append("")
        lines.append(style.paint("Errors (this plan cannot be applied):", "red", bold=True))
        lines.extend(
            f"  {style.paint('✗', 'red')} {p.target}: {p.message}"
            for p in map(_safe_problem, plan.errors)
        )
    if plan.warnings:
        lines.append("")
        lines.append(style.bold("Warnings:"))
        mark = style.paint("⚠", "yellow")
        for kind, problems in fold_warnings([_safe_problem(p) for p in plan.warnings]):
            if verbose or len(problems) == 1:
                lines.extend(f"  {mark} {p.target}: {p.message}" for p in problems)
                continue
            shown = [p.target for p in problems[:_FOLDED_TARGETS_SHOWN]]
            more = len(problems) - len(shown)
            lines.append(
                f"  {mark} {len(problems)} × {kind}: {', '.join(shown)}"
                + (f" and {more} more" if more else "")
                + style.dim(" (--verbose lists each)")
            )
    if plan.server_version:
        lines.append("")
        lines.extend(_preflight_lines(plan, style))
    lines.append("")
    lines.append(style.bold("Plan: " + summary(plan, allow_destroy) + "."))
    return "\n".join(lines) + "\n"


_FOLDED_TARGETS_SHOWN = 3
# What differs between two warnings of one kind: the parenthesised details (which plugin,
# which sha256).
_DETAIL = re.compile(r"\s*\([^()]*\)")


def warning_kind(message: str) -> str:
    """What a warning says without its parenthesised details: warnings that say the same
    about different targets fold into one line."""
    return " ".join(_DETAIL.sub("", message).split())


def fold_warnings(warnings: Sequence[Problem]) -> list[tuple[str, list[Problem]]]:
    """Warnings grouped by kind, in the order each kind first appears."""
    groups: dict[str, list[Problem]] = {}
    for warning in warnings:
        groups.setdefault(warning_kind(warning.message), []).append(warning)
    return list(groups.items())


_PREFLIGHT_WORDS = {
    PreflightStatus.UNREPLACED: "runs the built-in, no replacement: it dies at the upgrade",
    PreflightStatus.MOVED_BY_THIS_PLAN: "moved onto the declared replacement by this plan",
    PreflightStatus.RUNS_REPLACEMENT: "already runs its replacement",
}


def _preflight_lines(plan: Plan, style: _Styler) -> list[str]:
    """`--server-version`: every mount named after a built-in that release lacks."""
    title = f"Preflight for OpenBao {plan.server_version}:"
    if not plan.preflight:
        return [style.bold(title) + " no mount relies on a built-in it does not ship."]
    lines = [style.bold(title)]
    for mount in plan.preflight:
        version = f" {mount.replacement}" if mount.replacement else ""
        lines.append(
            f"  {mount.target} ({mount.plugin}{version}): {_PREFLIGHT_WORDS[mount.status]}"
        )
    return lines


def _action_lines(action: Action, refusal: str | None, style: _Styler, home: str) -> list[str]:
    symbol = action.symbol
    marker = style.paint("!", "red", bold=True) if refusal else " "
    painted = style.paint(symbol, _COLOURS[symbol])
    head = f"{marker} {painted} {action.kind.value} {printable(action.target)}"
    if action.namespace and action.namespace == home:
        # Every action names its namespace, whichever file form made the plan: those of
        # other namespaces carry it in their target already, the client's own do not.
        head += f" in namespace {printable(action.namespace)}"
    notes = [printable(action.reason)]
    if action.safety is not Safety.SAFE:
        notes.append(action.safety.value)
    if action.stage is Stage.CLEANUP:
        notes.append("after verification")
    lines = [f"{head}  {style.dim('(' + '; '.join(notes) + ')')}"]
    if refusal:
        lines.append(f"      {style.paint('refused: ' + printable(refusal), 'red')}")
    for change in action.changes:
        if change.before is None and change.after in (None, [], {}):
            continue
        if change.before is None:
            lines.append(f"      {printable(change.field)}: {_show(change.field, change.after)}")
            continue
        if change.after is None:
            lines.append(f"      {printable(change.field)}: {_show(change.field, change.before)}")
            continue
        lines.append(
            f"      {printable(change.field)}: {_show(change.field, change.before)} → "
            f"{_show(change.field, change.after)}"
        )
    return lines


def _show(name: str, value: Any) -> str:
    if value is None:
        return "(none)"
    if name in _SENSITIVE_FIELDS:
        return "(sensitive)"
    if name.rsplit(".", 1)[-1] in DURATION_CONFIG_KEYS and type(value) is int:
        return duration_text(value)  # `1h → 30m`, as the file says it
    if isinstance(value, str):
        return printable(value) if value else '""'
    return json.dumps(value, sort_keys=True)


def printable(text: str) -> str:
    """Escape control and format characters: values come from files and servers, and an
    escape sequence in one could rewrite or hide lines of the plan on a terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _safe_problem(problem: Problem) -> Problem:
    return Problem(target=printable(problem.target), message=printable(problem.message))


class _Styler:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, colour: str, bold: bool = False) -> str:
        return click.style(text, fg=colour, bold=bold) if self.enabled else text

    def bold(self, text: str) -> str:
        return click.style(text, bold=True) if self.enabled else text

    def dim(self, text: str) -> str:
        return click.style(text, dim=True) if self.enabled else text


def progress_line(event: ProgressEvent) -> str | None:
    """One line for an executor progress event; None for an action's start (its end tells)."""
    if event.action is None:
        return " ".join(filter(None, ["verifying", event.message]))
    if event.status == "start":
        return None
    prefix = f"[{event.index}/{event.total}] {event.action.kind.value} {event.action.target}"
    if event.status == "done":
        return f"{prefix}: done ({event.seconds:.2f}s)"
    if event.status == "failed":
        # The error itself is quoted once, in the result's problems.
        return f"{prefix}: failed ({event.seconds:.2f}s)"
    return f"{prefix}: {event.status}: {event.message}"


def status_text(status: StatusDocument) -> str:
    """`status` as text: per mount its nodes, then the connections, then what is unread."""
    where = f" (namespace {status.namespace})" if status.namespace else ""
    shown = ", ".join(n or "root" for n in status.namespaces)
    lines = [f"{status.server}{where}: {len(status.nodes)} node(s); namespaces: {shown}"]
    if not status.mounts:
        lines.append("no mount runs an external plugin, and every mount answers")
    for mount in status.mounts:
        pinned = mount.version or "(unpinned)"
        builtin = " (built-in)" if mount.builtin else ""
        in_namespace = f" in namespace {mount.namespace}" if mount.namespace else ""
        lines.append(f"{mount.kind} {mount.path}{in_namespace} {mount.plugin}{builtin} {pinned}")
        for seen in mount.nodes:
            role = "active " if seen.active else "standby"
            if mount.builtin:
                catalog = "built-in"
            elif seen.catalog.sha256:
                catalog = seen.catalog.sha256[:12]
            else:
                catalog = "missing: " + seen.catalog.error
            running = f"{seen.running.version or '(unversioned)'} {seen.running.sha256[:12]}"
            answers = "answers" if seen.answers else "DOES NOT ANSWER: " + seen.error
            lines.append(f"  {role} {seen.node}  catalog {catalog}  runs {running}  {answers}")
            lines.extend(f"    FLAGGED: {problem}" for problem in seen.problems)
    for connection in status.connections:
        in_namespace = f" in namespace {connection.namespace}" if connection.namespace else ""
        pinned = connection.version or "(unpinned)"
        runs = connection.runs or "nothing"
        sha = f" {connection.sha256[:12]}" if connection.sha256 else ""
        lines.append(
            f"connection {connection.mount}{connection.name}{in_namespace} "
            f"{connection.plugin} {pinned}  runs {runs}{sha}"
        )
        lines.extend(f"    FLAGGED: {problem}" for problem in connection.problems)
    lines.extend(f"not readable with this token: {what}" for what in status.unreadable)
    return "\n".join(lines) + "\n"
