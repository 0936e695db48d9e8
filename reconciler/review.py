"""Plan → a Markdown review document, for a pull-request comment or a CI job summary.

Pure: returns a string. What a reviewer needs first comes first: the target, a
one-line verdict, then the risks (data loss, the reach of every plugin restart,
what is refused or wrong), and only then the details, per namespace, folded in
`<details>` sections. A comment holds at most `COMMENT_LIMIT` characters: the
document stays under it by leaving out detail rows (saying so), never a risk.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.plan import (
    Action,
    ActionKind,
    DeregisterAction,
    DisableAction,
    Plan,
    Problem,
    ReasonCode,
    ReloadAction,
    RepinAction,
    ReplaceAction,
    ResetAction,
    Safety,
)
from reconciler.render import fold_warnings, printable, summary

# GitHub refuses a comment body over 65,536 characters; a margin for the marker a CI
# script puts in front of the document.
COMMENT_LIMIT = 65_000

# Measured in docs/benchmarks.md ("Upgrade of one plugin used by 100 mounts" and
# "Verifying N mounts on 3 nodes"), with the example Python plugins on two cores: the
# server restarts a reload's mounts one after another, 0.32 s each, and standbys follow a
# global reload about 0.5 s per reload request. A plugin written in Go starts faster.
SECONDS_PER_MOUNT_RESTART = 0.32
STANDBY_LAG_PER_RELOAD = 0.5

_CATALOG_KINDS = {ActionKind.REGISTER, ActionKind.UPDATE, ActionKind.DEREGISTER}
_CONNECTION_KINDS = {ActionKind.REPIN, ActionKind.RESET}
_CATALOG = "catalog (server-wide)"
_SHOWN_WARNING_TARGETS = 10
# Kept free for the note that says what was left out.
_NOTE_ROOM = 600


def render_markdown(plan: Plan, *, allow_destroy: bool = False, limit: int = COMMENT_LIMIT) -> str:
    """The plan as a Markdown review document of at most `limit` characters where the
    risks allow (every risk is always listed: a plan whose risks alone exceed it comes
    out longer, its details all folded away)."""
    refusals = plan.refusals(allow_destroy)
    head = [*_target(plan), "", _verdict(plan, refusals), ""]
    risks = _risks(plan, refusals, compact=False)
    warnings = _warnings(plan)
    fixed = len("\n".join([*head, *risks, *warnings])) + _NOTE_ROOM
    if fixed > limit:
        risks = _risks(plan, refusals, compact=True)
        fixed = len("\n".join([*head, *risks, *warnings])) + _NOTE_ROOM
    budget = limit - fixed
    while True:
        details = _details(plan, refusals, budget=budget)
        text = "\n".join([*head, *risks, *warnings, *details]).rstrip() + "\n"
        over = len(text) - limit
        if over <= 0 or budget <= 0:
            return text
        # The sections' own lines and notes cost more than the rows estimated: fold more.
        budget -= over + _NOTE_ROOM


# --- header ----------------------------------------------------------------------------


def _target(plan: Plan) -> list[str]:
    server = plan.server
    rows = [("Server", _code(server.address) if server.address else "(unknown)")]
    namespaces = plan.namespaces or [server.namespace]
    rows.append(("Namespaces" if len(namespaces) > 1 else "Namespace", _namespaces(namespaces)))
    if server.cluster_id:
        rows.append(("Cluster", _code(server.cluster_id)))
    rows.append(("Nodes", _nodes(plan)))
    if plan.desired.path:
        source = _code(plan.desired.path)
        if plan.desired.sha256:
            source += f" (sha256 {_code(plan.desired.sha256[:12] + '…')})"
        rows.append(("Desired state", source))
    lines = ["## Reconciler plan", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return lines


def _namespaces(namespaces: Sequence[str]) -> str:
    return ", ".join(_code(_namespace_name(n)) for n in namespaces)


def _nodes(plan: Plan) -> str:
    if not plan.nodes:
        return "1 (a single server)"
    names = [_code(n.address) + (" (active)" if n.active else "") for n in plan.nodes]
    return f"{len(plan.nodes)}: " + ", ".join(names)


def _verdict(plan: Plan, refusals: dict[int, str]) -> str:
    counts = summary(plan)
    if plan.errors:
        count = len(plan.errors)
        return (
            f"**Verdict: ❌ cannot be applied**: {count} error{'s' if count > 1 else ''} "
            f"(below); nothing would change. Plan: {_text(counts)}."
        )
    if refusals:
        why = next(iter(refusals.values()))
        return (
            f"**Verdict: ⛔ refused as it stands**: {len(refusals)} destructive "
            f"action{'s' if len(refusals) > 1 else ''} ({_text(why)}). Plan: {_text(counts)}."
        )
    if not plan.actions:
        return "**Verdict: ✅ no changes**: the server matches the file."
    if plan.destructive:
        return f"**Verdict: ⚠️ destroys data** (below). Plan: {_text(counts)}."
    if any(a.safety is Safety.DISRUPTIVE for a in plan.actions):
        return f"**Verdict: ⚠️ restarts plugins** (below). Plan: {_text(counts)}."
    return f"**Verdict: ✅ safe to apply**. Plan: {_text(counts)}."


# --- risks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Restart:
    """One reload (or connection restart): what restarts, where, how far it reaches."""

    action: Action
    namespace: str
    mounts: tuple[str, ...]
    nodes: int
    where: str


def _risks(plan: Plan, refusals: dict[int, str], *, compact: bool) -> list[str]:
    lines = ["### Risks", ""]
    found = False
    for part in (
        _errors(plan.errors),
        _data_loss(plan, refusals),
        _restarts(plan, compact=compact),
        _refused(plan, refusals),
        _flagged(
            plan.warnings, _HELD, "⏸️ Held", "failed upgrades set aside until the file changes"
        ),
        _flagged(plan.warnings, _DEAD, "💀 Not answering", "left alone by this plan"),
    ):
        if part:
            found = True
            lines += [*part, ""]
    if not found:
        lines += ["No data loss, no plugin restart, nothing refused or held.", ""]
    return lines


def _errors(errors: Sequence[Problem]) -> list[str]:
    if not errors:
        return []
    lines = [
        f"#### ❌ Errors ({len(errors)}): the plan cannot be applied",
        "",
        "| target | error |",
        "|---|---|",
    ]
    lines += [f"| {_code(p.target)} | {_text(p.message)} |" for p in errors]
    return lines


def _data_loss(plan: Plan, refusals: dict[int, str]) -> list[str]:
    rows: list[str] = []
    for index, action in enumerate(plan.actions):
        lost = _what_is_lost(action)
        if lost is None:
            continue
        status = f"refused: {_text(refusals[index])}" if index in refusals else "runs"
        rows.append(
            f"| {action.kind.value} | {_code(action.target)} | "
            f"{_code(_namespace_name(action.namespace))} | {lost} | {status} |"
        )
    if not rows:
        return []
    return [
        f"#### 🗑️ Data loss ({len(rows)})",
        "",
        "| action | target | namespace | what is lost | status |",
        "|---|---|---|---|---|",
        *rows,
    ]


def _what_is_lost(action: Action) -> str | None:
    pruned = " (pruned: not in the file)" if _pruned(action) else ""
    match action:
        case DisableAction(params=p) | ReplaceAction(params=p):
            if p.kind == "auth":
                lost = "the auth method's roles and configuration; every token it issued is revoked"
            else:
                lost = "every secret stored in the mount; every lease it issued is revoked"
            if isinstance(action, ReplaceAction):
                lost += "; it is enabled again empty"
            return lost + pruned
        case DeregisterAction() if action.reason_code is ReasonCode.UNMANAGED_PLUGIN_PRUNED:
            return "the catalog entry (no mount uses it; registering it again needs its sha256)" + (
                pruned
            )
    return None


def _pruned(action: Action) -> bool:
    return action.reason_code in {
        ReasonCode.UNMANAGED_MOUNT_PRUNED,
        ReasonCode.UNMANAGED_PLUGIN_PRUNED,
    }


def _restarts_of(plan: Plan) -> list[_Restart]:
    cluster = max(1, len(plan.nodes))
    found: list[_Restart] = []
    for action in plan.actions:
        namespace = action.namespace
        match action:
            case ReloadAction(params=p) if p.node:
                mounts = tuple(p.mounts or ())
                found.append(_Restart(action, namespace, mounts, 1, f"node {_code(p.node)}"))
            case ReloadAction(params=p):
                mounts = tuple(p.mounts or (f"every mount of plugin {p.plugin}",))
                nodes, where = (
                    (cluster, "every node (global)")
                    if p.scope == "global"
                    else (1, "the node that answers")
                )
                found.append(_Restart(action, namespace, mounts, nodes, where))
            case RepinAction(params=p) | ResetAction(params=p):
                connection = f"connection {p.mount.rstrip('/')}/{p.name}"
                found.append(_Restart(action, namespace, (connection,), 1, "its database mount"))
    return found


def _restarts(plan: Plan, *, compact: bool) -> list[str]:
    restarts = _restarts_of(plan)
    if not restarts:
        return []
    mounts = {(r.namespace, m) for r in restarts for m in r.mounts}
    nodes = max(r.nodes for r in restarts)
    total = sum(len(r.mounts) * r.nodes for r in restarts)
    namespaces = sorted({r.namespace for r in restarts})
    seconds = sum(len(r.mounts) for r in restarts) * SECONDS_PER_MOUNT_RESTART
    lines = [
        f"#### 🔄 Plugin restarts: blast radius {len(mounts)} mount"
        f"{'s' if len(mounts) > 1 else ''} × {nodes} node{'s' if nodes > 1 else ''}",
        "",
        f"**{len(mounts)} mount{'s' if len(mounts) > 1 else ''} × {nodes} "
        f"node{'s' if nodes > 1 else ''}**: {total} plugin process restart"
        f"{'s' if total > 1 else ''} in {len(restarts)} reload"
        f"{'s' if len(restarts) > 1 else ''}, in namespace"
        f"{'s' if len(namespaces) > 1 else ''} {_namespaces(namespaces)}. "
        "A mount does not answer while its plugin restarts. Measured cost "
        f"(docs/benchmarks.md, example Python plugins): {SECONDS_PER_MOUNT_RESTART:.2f} s "
        f"per mount, about {seconds:.1f} s in all on the node that answers"
        + (
            f"; standbys follow a global reload, about {STANDBY_LAG_PER_RELOAD:.1f} s later "
            "per reload request."
            if nodes > 1
            else "."
        ),
        "",
        "| reload | mounts that restart | nodes | namespace | why |",
        "|---|---|---|---|---|",
    ]
    for restart in restarts:
        label = restart.action.kind.value
        if isinstance(restart.action, ReloadAction) and restart.action.canary:
            label = "canary reload"
        lines.append(
            f"| {label} | {_mount_list(restart.mounts, compact=compact)} | "
            f"{restart.nodes}: {restart.where} | {_code(_namespace_name(restart.namespace))} "
            f"| {_text(restart.action.reason)} |"
        )
    return lines


def _mount_list(mounts: Sequence[str], *, compact: bool) -> str:
    shown = mounts[:20] if compact else mounts
    text = ", ".join(_code(m) for m in shown)
    if len(shown) < len(mounts):
        text += f" and {len(mounts) - len(shown)} more (all {len(mounts)} restart)"
    return f"{len(mounts)}: {text}" if len(mounts) > 1 else text


def _refused(plan: Plan, refusals: dict[int, str]) -> list[str]:
    if not refusals:
        return []
    lines = [f"#### ⛔ Refused ({len(refusals)}): nothing is applied while these stand", ""]
    for index, why in sorted(refusals.items()):
        action = plan.actions[index]
        lines.append(f"- {action.kind.value} {_code(action.target)}: {_text(why)}")
    return lines


# Warnings that are risks too: a failed upgrade held back (watch mode), a backend that
# does not answer and that the plan does not repair.
_HELD = re.compile(r"\bheld\b")
_DEAD = re.compile(r"does not answer")


def _flagged(
    warnings: Sequence[Problem], pattern: re.Pattern[str], title: str, what: str
) -> list[str]:
    found = [w for w in warnings if pattern.search(w.message)]
    if not found:
        return []
    lines = [f"#### {title} ({len(found)}): {what}", ""]
    return lines + [f"- {_code(w.target)}: {_text(w.message)}" for w in found]


# --- warnings ----------------------------------------------------------------------------


def _warnings(plan: Plan) -> list[str]:
    if not plan.warnings:
        return []
    lines = [f"### Warnings ({len(plan.warnings)})", ""]
    for kind, problems in fold_warnings(plan.warnings):
        if len(problems) == 1:
            lines.append(f"- {_code(problems[0].target)}: {_text(problems[0].message)}")
            continue
        targets = [_code(p.target) for p in problems[:_SHOWN_WARNING_TARGETS]]
        more = len(problems) - len(targets)
        lines.append(
            f"- **{len(problems)} ×** {_text(kind)}: {', '.join(targets)}"
            + (f" and {more} more" if more else "")
        )
    return [*lines, ""]


# --- details ----------------------------------------------------------------------------


def _details(plan: Plan, refusals: dict[int, str], *, budget: int) -> list[str]:
    if not plan.actions:
        return []
    groups: dict[str, list[tuple[int, Action]]] = {}
    for index, action in enumerate(plan.actions):
        groups.setdefault(_group(action), []).append((index, action))
    lines = ["### Details", ""]
    used = len("\n".join(lines))
    left_out = 0
    for group, indexed in sorted(groups.items(), key=lambda item: _group_order(item[0])):
        counts = Counter(a.kind.value for _, a in indexed)
        what = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        section = [
            "<details>",
            f"<summary>{_html(group)}: {len(indexed)} action"
            f"{'s' if len(indexed) > 1 else ''} ({_html(what)})</summary>",
            "",
            "| | action | target | reason | changes |",
            "|---|---|---|---|---|",
        ]
        used += len("\n".join(section)) + 40
        shown = 0
        for index, action in indexed:
            row = _detail_row(action, refusals.get(index))
            if used + len(row) + 1 > budget:
                break
            section.append(row)
            used += len(row) + 1
            shown += 1
        if shown < len(indexed):
            left_out += len(indexed) - shown
            if shown:
                section.append("")
                note = (
                    f"{len(indexed) - shown} more action{'s' if len(indexed) - shown > 1 else ''}"
                )
            else:
                del section[-2:]  # no row: no table (the blank line after <summary> stays)
                note = f"All {len(indexed)} action{'s' if len(indexed) > 1 else ''}"
            section.append(f"*{note} folded away to keep this comment under its size limit.*")
        lines += [*section, "", "</details>", ""]
    if left_out:
        lines.append(
            f"> **{left_out} action{'s' if left_out > 1 else ''} not shown** in the details "
            f"to stay under {COMMENT_LIMIT:,} characters; every risk above is complete. "
            "The full plan: `reconciler plan FILE` (text) or the saved JSON plan."
        )
    return lines


def _detail_row(action: Action, refusal: str | None) -> str:
    symbol = "! " + action.symbol if refusal else action.symbol
    changes = "<br>".join(
        f"{_text(c.field)}: {_value(c.field, c.before)} → {_value(c.field, c.after)}"
        if c.before is not None and c.after is not None
        else f"{_text(c.field)}: {_value(c.field, c.after if c.before is None else c.before)}"
        for c in action.changes
        if not (c.before is None and c.after in (None, [], {}))
    )
    reason = _text(action.reason)
    if refusal:
        reason += f" — **refused**: {_text(refusal)}"
    return (
        f"| {_code(symbol)} | {action.kind.value} | {_code(action.target)} | {reason} | {changes} |"
    )


def _value(field: str, value: object) -> str:
    if field == "env":
        return "(sensitive)"
    if value is None:
        return "(none)"
    if value == "":
        return '""'
    return _code(str(value))


def _group(action: Action) -> str:
    if action.kind in _CATALOG_KINDS:
        return _CATALOG
    name = f"namespace {_namespace_name(action.namespace)}"
    if action.kind in _CONNECTION_KINDS:
        return f"{name}: database connections"
    return name


def _group_order(group: str) -> tuple[int, str]:
    return (0 if group == _CATALOG else 1, group)


# --- names and escaping -----------------------------------------------------------------


def _namespace_name(namespace: str) -> str:
    return namespace or "root"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~&])")


def _text(text: str) -> str:
    """Text from a file or a server, shown as itself: no Markdown or HTML it holds takes
    effect, and nothing breaks out of a table cell."""
    flat = " ".join(printable(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def _code(text: str) -> str:
    """A name (path, address, hash) in a code span; escaped text where a span cannot hold
    it (a backtick, or a `|`, which ends a table cell even inside a span)."""
    flat = " ".join(printable(text).split())
    if not flat or any(ch in flat for ch in "`|"):
        return _text(flat) or '""'
    return f"`{flat}`"


def _html(text: str) -> str:
    """Text inside an HTML element (a `<summary>`)."""
    flat = " ".join(printable(text).split())
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
