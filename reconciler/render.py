"""Plan and progress → human text. Pure: returns strings; the front ends decide where they go."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import click

from reconciler.durations import duration_text
from reconciler.model import DURATION_CONFIG_KEYS
from reconciler.plan import Action, ActionKind, Plan, Problem, Safety, Stage

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
    names = [_safe(n) or "root" for n in plan.namespaces] or [_safe(plan.server.namespace)]
    if len(names) == 1:
        return f"namespace {names[0]}"
    return "namespaces: " + ", ".join(names)


def render_plan(plan: Plan, *, allow_destroy: bool = False, colour: bool = False) -> str:
    """The plan as a readable diff with symbols, grouped by catalog and mounts."""
    style = _Styler(colour)
    refusals = plan.refusals(allow_destroy)
    lines: list[str] = []
    header = f"Plan for {_safe(plan.server.address) or 'the server'}"
    if plan.server.namespace or len(plan.namespaces) > 1:
        header += " (" + _namespaces_text(plan) + ")"
    if plan.desired.path:
        header += f" from {_safe(plan.desired.path)}"
    lines.append(style.bold(header))
    indexed = list(enumerate(plan.actions))
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
            lines.extend(_action_lines(action, refusals.get(index), style))
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
        lines.extend(
            f"  {style.paint('⚠', 'yellow')} {p.target}: {p.message}"
            for p in map(_safe_problem, plan.warnings)
        )
    lines.append("")
    lines.append(style.bold("Plan: " + summary(plan, allow_destroy) + "."))
    return "\n".join(lines) + "\n"


def _action_lines(action: Action, refusal: str | None, style: _Styler) -> list[str]:
    symbol = action.symbol
    marker = style.paint("!", "red", bold=True) if refusal else " "
    painted = style.paint(symbol, _COLOURS[symbol])
    head = f"{marker} {painted} {action.kind.value} {_safe(action.target)}"
    if action.namespace and " in namespace " not in action.target:
        # Every action names its namespace, whichever file form made the plan.
        head += f" in namespace {_safe(action.namespace)}"
    notes = [_safe(action.reason)]
    if action.safety is not Safety.SAFE:
        notes.append(action.safety.value)
    if action.stage is Stage.CLEANUP:
        notes.append("after verification")
    lines = [f"{head}  {style.dim('(' + '; '.join(notes) + ')')}"]
    if refusal:
        lines.append(f"      {style.paint('refused: ' + _safe(refusal), 'red')}")
    for change in action.changes:
        if change.before is None and change.after in (None, [], {}):
            continue
        if change.before is None:
            lines.append(f"      {_safe(change.field)}: {_show(change.field, change.after)}")
            continue
        if change.after is None:
            lines.append(f"      {_safe(change.field)}: {_show(change.field, change.before)}")
            continue
        lines.append(
            f"      {_safe(change.field)}: {_show(change.field, change.before)} → "
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
        return _safe(value) if value else '""'
    return json.dumps(value, sort_keys=True)


def _safe(text: str) -> str:
    """Escape control and format characters: values come from files and servers, and an
    escape sequence in one could rewrite or hide lines of the plan on a terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _safe_problem(problem: Problem) -> Problem:
    return Problem(target=_safe(problem.target), message=_safe(problem.message))


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
