"""`plan --format markdown`: a review document, risks first, under a comment's size limit.

The renderer is pure: most plans here are built as data. The documents are parsed by a
real CommonMark parser (markdown-it-py, tables on) and checked by structure (headings,
tables, `<details>` sections), never by eye.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from reconciler.model import ServerIdentity
from reconciler.plan import (
    Action,
    DeregisterAction,
    DeregistrationParams,
    DesiredSource,
    DisableAction,
    EnableAction,
    EnableParams,
    FieldChange,
    MountParams,
    MoveAction,
    MoveParams,
    Plan,
    PlanNode,
    Problem,
    ReasonCode,
    RegisterAction,
    RegistrationParams,
    ReloadAction,
    ReloadParams,
    TuneAction,
    TuneParams,
)
from reconciler.review import COMMENT_LIMIT, render_markdown
from tests.cluster import Cluster
from tests.helpers import CliRun, api, run_cli, write_desired

SHA = "ab" * 32
NODES = ["https://bao-1:8200", "https://bao-2:8200", "https://bao-3:8200"]


# --- building plans as data --------------------------------------------------------------


def register(name: str, version: str) -> RegisterAction:
    return RegisterAction(
        target=f"secret/{name}/{version}",
        reason="not registered",
        reason_code=ReasonCode.NOT_REGISTERED,
        params=RegistrationParams(
            type="secret",
            name=name,
            version=version,
            command=name,
            sha256=SHA,
            args=[],
            has_env=False,
        ),
    )


def tune(path: str, namespace: str | None = None) -> TuneAction:
    return TuneAction(
        target=f"secrets/{path}",
        reason="tuned values differ: plugin_version",
        reason_code=ReasonCode.TUNED_VALUES_DIFFER,
        changes=[FieldChange(field="plugin_version", before="v1.0.0", after="v2.0.0")],
        params=TuneParams(
            kind="secret", path=path, body={"plugin_version": "v2.0.0"}, namespace=namespace
        ),
        namespace=namespace or "",
    )


def reload(paths: list[str], *, canary: bool = False, namespace: str | None = None) -> ReloadAction:
    return ReloadAction(
        target="mounts " + ", ".join(paths),
        reason="canary for kv-plus v2.0.0" if canary else "plugin_version is tuned",
        reason_code=ReasonCode.CANARY if canary else ReasonCode.PLUGIN_VERSION_PINNED,
        canary=canary,
        params=ReloadParams(mounts=paths, scope="global", namespace=namespace),
        namespace=namespace or "",
    )


def prune(path: str, namespace: str | None = None) -> DisableAction:
    return DisableAction(
        target=f"secrets/{path}",
        reason="not declared and prune_mounts is on: disabling destroys its data",
        reason_code=ReasonCode.UNMANAGED_MOUNT_PRUNED,
        changes=[FieldChange(field="plugin", before="kv", after=None)],
        params=MountParams(kind="secret", path=path, namespace=namespace),
        namespace=namespace or "",
    )


def enable(path: str, namespace: str | None = None) -> EnableAction:
    return EnableAction(
        target=f"secrets/{path}",
        reason="not mounted",
        reason_code=ReasonCode.NOT_MOUNTED,
        params=EnableParams(kind="secret", path=path, plugin="kv", namespace=namespace),
        namespace=namespace or "",
    )


def move(old: str, new: str) -> MoveAction:
    return MoveAction(
        target=f"secrets/{new}",
        reason=f"moved_from {old}",
        reason_code=ReasonCode.MOVED_FROM,
        params=MoveParams(kind="secret", from_path=old, to=new),
    )


def deregister(name: str, version: str) -> DeregisterAction:
    return DeregisterAction(
        target=f"secret/{name}/{version}",
        reason="not declared and prune_plugins is on",
        reason_code=ReasonCode.UNMANAGED_PLUGIN_PRUNED,
        params=DeregistrationParams(type="secret", name=name, version=version),
    )


def cluster_plan(
    actions: list[Action], errors: list[Problem], namespaces: list[str] | None = None
) -> Plan:
    return Plan(
        server=ServerIdentity(address=NODES[0], cluster_id="cluster-7"),
        nodes=[PlanNode(address=a, active=i == 0) for i, a in enumerate(NODES)],
        namespaces=namespaces or [""],
        desired=DesiredSource(path="desired.yaml", sha256=SHA),
        actions=actions,
        errors=errors,
    )


def acceptance_plan() -> Plan:
    """A prune, a move, an upgrade of 3 mounts (canary first) on 3 nodes, and an error."""
    return cluster_plan(
        [
            register("kv-plus", "v2.0.0"),
            move("old/", "new/"),
            tune("a/"),
            tune("b/"),
            tune("c/"),
            reload(["a/"], canary=True),
            reload(["b/", "c/"]),
            prune("legacy/"),
        ],
        [Problem(target="secrets/odd/", message="ambiguous: pin a version")],
    )


# --- reading the document back ------------------------------------------------------------


@dataclass
class Parsed:
    text: str
    tokens: list[Token]

    def headings(self) -> list[tuple[str, str]]:
        """(tag, text) of every heading, in order."""
        found = []
        for index, token in enumerate(self.tokens):
            if token.type == "heading_open":
                found.append((token.tag, plain(self.tokens[index + 1])))
        return found

    def tables(self) -> list[list[list[str]]]:
        """Every table: rows of cell texts (the header row first)."""
        tables: list[list[list[str]]] = []
        row: list[str] = []
        for index, token in enumerate(self.tokens):
            if token.type == "table_open":
                tables.append([])
            elif token.type == "tr_open":
                row = []
            elif token.type in ("th_open", "td_open"):
                row.append(plain(self.tokens[index + 1]))
            elif token.type == "tr_close":
                tables[-1].append(row)
        return tables

    def position(self, predicate: str) -> int:
        """The index of the first token whose content holds `predicate`."""
        return next(i for i, t in enumerate(self.tokens) if predicate in t.content)

    def details(self) -> list[tuple[int, int]]:
        """(open, close) token indexes of every `<details>` section; asserts they nest flat."""
        sections = []
        opened: int | None = None
        for index, token in enumerate(self.tokens):
            if token.type != "html_block":
                continue
            if token.content.startswith("<details>"):
                assert opened is None, "a <details> inside another"
                assert "<summary>" in token.content
                opened = index
            elif token.content.strip() == "</details>":
                assert opened is not None, "a </details> without its <details>"
                sections.append((opened, index))
                opened = None
        assert opened is None, "a <details> never closed"
        return sections


def plain(inline: Token) -> str:
    """What an inline token shows: its text and code, without the Markdown around them."""
    return "".join(
        child.content for child in inline.children or [] if child.type in ("text", "code_inline")
    )


def parse(text: str) -> Parsed:
    return Parsed(text, MarkdownIt("commonmark").enable("table").parse(text))


def risk_section(parsed: Parsed) -> str:
    """The text of the document from "Risks" up to the details."""
    return parsed.text.split("### Risks", 1)[1].split("### Details", 1)[0]


# --- tests ----------------------------------------------------------------------------------


def test_the_risk_section_comes_first_with_data_loss_and_blast_radius() -> None:
    parsed = parse(render_markdown(acceptance_plan()))
    headings = parsed.headings()
    titles = [text for _, text in headings]
    assert headings[0] == ("h2", "Reconciler plan")
    assert titles.index("Risks") < titles.index("Details")
    risk_titles = titles[titles.index("Risks") + 1 : titles.index("Details")]
    assert any(t.startswith("❌ Errors (1)") for t in risk_titles), risk_titles
    assert any(t.startswith("🗑️ Data loss (1)") for t in risk_titles), risk_titles
    assert any("blast radius 3 mounts × 3 nodes" in t for t in risk_titles), risk_titles
    # Every risk is listed before any detail.
    first_detail = parsed.details()[0][0]
    for risk in ("secrets/legacy/", "3 mounts × 3 nodes", "ambiguous: pin a version"):
        assert parsed.position(risk) < first_detail, risk

    tables = {table[0][0]: table for table in parsed.tables() if table[0][0]}
    loss = tables["action"]
    assert loss[0] == ["action", "target", "namespace", "what is lost", "status"]
    assert [row[:3] for row in loss[1:]] == [["disable", "secrets/legacy/", "root"]]
    assert "every secret stored in the mount" in loss[1][3] and "pruned" in loss[1][3]
    assert "refused" in loss[1][4]  # plan has no --allow-destroy
    restarts = tables["reload"]
    assert [row[:3] for row in restarts[1:]] == [
        ["canary reload", "a/", "3: every node (global)"],
        ["reload", "2: b/, c/", "3: every node (global)"],
    ]
    assert tables["target"][1] == ["secrets/odd/", "ambiguous: pin a version"]
    radius = risk_section(parsed)
    assert "9 plugin process restarts" in radius and "0.32 s per mount" in radius


def test_the_header_names_server_namespace_cluster_and_nodes() -> None:
    parsed = parse(render_markdown(acceptance_plan()))
    header = dict((row[0], row[1]) for row in parsed.tables()[0][1:])
    assert header["Server"] == NODES[0]
    assert header["Namespace"] == "root"
    assert header["Cluster"] == "cluster-7"
    assert header["Nodes"].startswith("3: ") and "(active)" in header["Nodes"]
    assert all(node in header["Nodes"] for node in NODES)
    verdict = next(line for line in parsed.text.splitlines() if line.startswith("**Verdict"))
    assert "cannot be applied" in verdict and "1 error" in verdict


def test_details_are_grouped_by_namespace_in_collapsible_sections() -> None:
    the_plan = cluster_plan(
        [register("kv-plus", "v2.0.0"), enable("x/"), enable("y/", "team1/"), tune("z/", "team1/")],
        [],
        namespaces=["", "team1/"],
    )
    parsed = parse(render_markdown(the_plan))
    sections = parsed.details()
    summaries = [parsed.tokens[start].content for start, _ in sections]
    assert [re.sub(r"<summary>(.*?):.*", r"\1", s.splitlines()[1]) for s in summaries] == [
        "catalog (server-wide)",
        "namespace root",
        "namespace team1/",
    ]
    # Each section holds one table, parsed as a table (blank lines in the right places).
    for start, end in sections:
        kinds = [t.type for t in parsed.tokens[start:end]]
        assert kinds.count("table_open") == 1
    team = parsed.tables()[-1]
    assert [row[2] for row in team[1:]] == ["secrets/y/", "secrets/z/"]
    assert "✅ safe to apply" in parsed.text


def test_values_cannot_break_the_document() -> None:
    hostile = Problem(
        target="secrets/a|b/", message="x | y <script>alert(1)</script> **bold** `tick`\n# h"
    )
    parsed = parse(render_markdown(cluster_plan([enable("x/")], [hostile])))
    assert not [t for t in parsed.tokens if t.type == "html_inline"]
    errors = next(table for table in parsed.tables() if table[0] == ["target", "error"])
    assert len(errors) == 2 and len(errors[1]) == 2  # one row, two cells
    # Shown as written, nothing of it taking effect.
    assert errors[1][1].startswith("x | y <script>alert(1)</script> **bold** `tick`")
    assert errors[1][0] == "secrets/a|b/"
    assert [text for _, text in parsed.headings()].count("h") == 0


def test_held_upgrades_and_dead_mounts_are_risks() -> None:
    the_plan = cluster_plan([], []).model_copy(
        update={
            "warnings": [
                Problem(
                    target="secrets/apps/",
                    message="upgrade to kv-plus v1.5.0 failed before and is held until the "
                    "file changes",
                ),
                Problem(
                    target="secrets/loose/",
                    message="unmanaged mount (kv-plus): left alone, and its backend does not "
                    "answer (its plugin failed to start)",
                ),
            ]
        }
    )
    parsed = parse(render_markdown(the_plan))
    titles = [text for _, text in parsed.headings()]
    risks = titles[titles.index("Risks") + 1 :]
    assert any(t.startswith("⏸️ Held (1)") for t in risks), risks
    assert any(t.startswith("💀 Not answering (1)") for t in risks), risks
    assert "secrets/apps/" in risk_section(parsed) and "secrets/loose/" in risk_section(parsed)


def test_a_plan_without_changes_says_so() -> None:
    parsed = parse(render_markdown(Plan(server=ServerIdentity(address="http://127.0.0.1:8200"))))
    assert "✅ no changes" in parsed.text
    assert "No data loss, no plugin restart, nothing refused or held." in parsed.text
    assert parsed.details() == []


def test_2000_actions_stay_under_the_comment_limit_with_every_risk() -> None:
    namespaces = ["", *(f"team{n}/" for n in range(1, 10))]
    actions: list[Action] = [register(f"plugin-{n}", "v1.0.0") for n in range(50)]
    actions += [deregister(f"old-{n}", "v0.1.0") for n in range(20)]
    actions += [enable(f"app-{n}/", namespaces[n % 10] or None) for n in range(1400)]
    upgraded = [f"up-{n}/" for n in range(500)]
    actions += [tune(path) for path in upgraded]
    actions += [reload(upgraded[:1], canary=True), reload(upgraded[1:])]
    pruned = [f"legacy-{n}/" for n in range(5)]
    actions += [prune(path, "team3/") for path in pruned]
    errors = [
        Problem(target=f"secrets/bad-{n}/", message="ambiguous: pin a version") for n in range(3)
    ]
    the_plan = cluster_plan(actions, errors, namespaces)
    assert len(the_plan.actions) >= 1975 + 2

    text = render_markdown(the_plan)
    assert len(text) < COMMENT_LIMIT
    parsed = parse(text)
    risks = risk_section(parsed)
    for path in pruned:
        assert f"secrets/{path}" in risks
    for n in range(20):
        assert f"secret/old-{n}/v0.1.0" in risks  # pruned catalog entries
    for error in errors:
        assert error.target in risks
    for path in upgraded:
        assert f"`{path}`" in risks
    assert "500 mounts × 3 nodes" in risks
    assert "not shown" in text and "every risk above is complete" in text
    parsed.details()  # still well-formed after folding
    assert all(len(table) > 1 for table in parsed.tables()), "a table without rows"
    assert "folded away to keep this comment under its size limit" in text


def test_a_limit_below_the_risks_keeps_every_data_loss_row() -> None:
    # Far too small for the risks: they are all kept; only details and long mount lists fold.
    the_plan = acceptance_plan()
    text = render_markdown(the_plan, limit=500)
    assert "secrets/legacy/" in risk_section(parse(text))
    assert "ambiguous: pin a version" in text


# --- end to end --------------------------------------------------------------------------


def test_plan_format_markdown_on_the_dev_server(server, tmp_path: Path) -> None:
    api(server).post("/v1/sys/mounts/legacy", json={"type": "kv"}).raise_for_status()
    desired = write_desired(
        tmp_path,
        "version: 1\nsettings: {prune_mounts: true}\nsecrets:\n  - {path: app/, plugin: kv}\n",
    )
    result = run_cli(server, "plan", "--format", "markdown", str(desired))
    assert result.exit_code == 0, result.output
    parsed = parse(result.stdout)
    assert parsed.headings()[0] == ("h2", "Reconciler plan")
    loss = next(t for t in parsed.tables() if t[0][:2] == ["action", "target"])
    assert loss[1][:2] == ["disable", "secrets/legacy/"]
    assert "Nodes" in parsed.text and "1 (a single server)" in parsed.text
    assert str(desired) in parsed.text  # the path as given


def test_plan_json_and_format_are_one_choice(tmp_path: Path) -> None:
    desired = write_desired(tmp_path, "version: 1\n")
    result = CliRun.invoke(["plan", "--json", "--format", "markdown", str(desired)])
    assert result.exit_code == 1
    assert "--json is --format json" in result.stderr


def test_plan_format_markdown_on_the_cluster_names_every_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, "version: 1\nsecrets:\n  - {path: app/, plugin: kv}\n")
    result = CliRun.invoke(
        ["plan", "--format", "markdown", str(desired)],
        env={"BAO_ADDR": cluster.active().address, "BAO_TOKEN": cluster.root_token},
    )
    assert result.exit_code == 0, result.output
    header = dict((row[0], row[1]) for row in parse(result.stdout).tables()[0][1:])
    assert header["Nodes"].startswith("3: ") and header["Nodes"].count("(active)") == 1
    assert header["Cluster"]
